"""Spellings shared by the families' parameter-name rules (regex fragments for `NameRule.spellings`).

A checkpoint's parameter names come in several namings: transformers 5.x in memory, the hub layout that
`save_pretrained` writes and older checkpoints use (transformers converts it on load), and RL-framework
exports that wrap the whole model once more ("module.", "base_model.model."). Each fragment below matches
one root in all of them; `llm_rules` builds the rules every family's language model shares.
"""

from __future__ import annotations

from frankenscope.adapters.spec import NameRule

#: An optional wrapper added by training frameworks (DDP's "module.", PEFT's "base_model.model.").
WRAP = r"(?:module\.|base_model\.model\.)?"
#: The language model below `model.language_model.` in memory: "model.language_model." (transformers 5.x),
#: "model." (Qwen-VL hub layout), "language_model.model." (LLaVA-style hub layout), "language_model.".
LANGUAGE_MODEL = WRAP + r"(?:model\.language_model\.|model\.|language_model\.model\.|language_model\.)"
#: The output head: "lm_head." or, in LLaVA-style hub layouts, "language_model.lm_head.".
LM_HEAD = WRAP + r"(?:language_model\.)?lm_head\."


def rule(component: str, root: str, spellings: str, tail: str = "") -> NameRule:
    """A `NameRule` (positional shorthand)."""
    return NameRule(component=component, root=root, spellings=spellings, tail=tail)


def optional_model(attr: str, inner: str | None = None) -> str:
    """The spellings of the in-memory root "model.<attr>.": with or without the leading "model." (hub
    layouts drop it), optionally followed by "<inner>." (a wrapper module the hub layout keeps, e.g. the
    SigLIP tower's "vision_model." that transformers 5.x removes on load)."""
    tail = "" if inner is None else rf"(?:{inner}\.)?"
    return WRAP + rf"(?:model\.)?{attr}\." + tail


def llm_rules(root: str = "model.language_model.", spellings: str = LANGUAGE_MODEL) -> tuple[NameRule, ...]:
    """Decoder layers, token embeddings, final norm (below `root`) and the output head."""
    return (rule("llm", root, spellings, "layers.{layer}."), rule("embed", root, spellings, "embed_tokens."),
            rule("final_norm", root, spellings, "norm."), rule("lm_head", "lm_head.", LM_HEAD))
