"""Named prompt styles: an explicit system prompt, user prefix/suffix and description layout per model.

A style is chosen per model in the run configuration and written into every result file; evaluation
and every probe render prompts through it. It is never inferred from a model's name (substring rules
put the wrong prompt on merged checkpoints, whose names say nothing about their training).

Built-in styles (`PROMPT_STYLES`):

| name          | system prompt                                   | user prefix                        |
|---------------|-------------------------------------------------|------------------------------------|
| plain         | none (the chat template's default)              | none                               |
| boxed         | none                                            | solve step by step, answer in one `\\boxed{}` |
| think_answer  | reason in `<think>`, answer in `<answer>`       | solve step by step                 |
| think_boxed   | reason in `<think>`, answer in `\\boxed{}`       | solve step by step, answer in one `\\boxed{}` |

The wording is frankenscope's own: each built-in style follows a FORMAT (no answer cue, `\\boxed{}`,
`<think>`/`<answer>` tags), not any checkpoint's exact training prompt. To reproduce a checkpoint's or
another harness's exact prompt, write a JSON file with the fields of `PromptStyle` (`user_suffix`
appends an instruction to the user turn, as some recipes train) and pass its path instead of a name.

The black-image + description condition (M_v2r) renders `description_template` with the item's
description and question; `plain` uses the evaluation runner's layout
("Image description: ...\\n" + question) so organism results match `frankenscope eval`, the other
styles a paper-like layout ("Image Description:" block, blank line, "Question:" block).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError

PAPER_DESCRIPTION_TEMPLATE = "Image Description:\n{description}\n\nQuestion:\n{question}"
PLAIN_DESCRIPTION_TEMPLATE = "Image description: {description}\n{question}"

_STEP_BY_STEP = "Solve the problem step by step."
_BOXED = "Solve the problem step by step and write the final answer inside a single \\boxed{}."


@dataclass(frozen=True)
class PromptStyle:
    """How a question becomes the text a model sees.

    system: the system prompt (None: no system turn, i.e. the chat template's default).
    user_prefix: text placed before the question (include its own trailing blank line).
    user_suffix: text placed after the question (include its own leading blank line).
    description_template: layout of the black-image + description condition, with the fields
        {description} and {question}; the user prefix goes before it.
    """

    name: str
    system: str | None = None
    user_prefix: str = ""
    description_template: str = PAPER_DESCRIPTION_TEMPLATE
    user_suffix: str = ""

    def render(self, question: str, description: str | None = None) -> str:
        """The user text: prefix + question + suffix; with a description, the description layout replaces
        the bare question."""
        body = question if description is None else self.description_template.format(
            description=description, question=question)
        return self.user_prefix + body + self.user_suffix

    def apply(self, item: Item, with_description: bool = False) -> Item:
        """A copy of `item` whose prompt is the rendered user text (meta["question"] keeps the original)."""
        if with_description and not item.description:
            raise FrankenscopeError(f"item {item.id!r}: the description condition needs a description, it has none")
        text = self.render(item.prompt, item.description if with_description else None)
        return replace(item, prompt=text, meta={**item.meta, "question": item.prompt})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROMPT_STYLES: dict[str, PromptStyle] = {
    "plain": PromptStyle("plain", None, "", PLAIN_DESCRIPTION_TEMPLATE),
    "boxed": PromptStyle("boxed", None, _BOXED + "\n\n"),
    "think_answer": PromptStyle(
        "think_answer",
        "You are a careful assistant. First think through the problem inside <think> </think> tags. "
        "Then give only the final answer inside <answer> </answer> tags.",
        _STEP_BY_STEP + "\n\n"),
    "think_boxed": PromptStyle(
        "think_boxed",
        "First think through the problem inside <think> </think> tags, as an inner monologue. "
        "Then state the final answer inside \\boxed{}.",
        _BOXED + "\n\n"),
}


def get_prompt_style(spec: str | PromptStyle) -> PromptStyle:
    """A built-in style by name, or a custom one from a JSON file with the fields of PromptStyle."""
    if isinstance(spec, PromptStyle):
        return spec
    if spec in PROMPT_STYLES:
        return PROMPT_STYLES[spec]
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise FrankenscopeError(f"{path}: cannot read prompt style ({e})") from e
        fields = {"name", "system", "user_prefix", "user_suffix", "description_template"}
        if not isinstance(doc, dict) or set(doc) - fields:
            raise FrankenscopeError(f"{path}: a prompt style is a JSON object with fields {sorted(fields)}")
        doc.setdefault("name", path.stem)
        bad = [k for k, v in doc.items() if not (isinstance(v, str) or (k == "system" and v is None))]
        if bad:
            raise FrankenscopeError(f"{path}: field(s) {bad} must be strings (system may be null)")
        style = PromptStyle(**doc)
        if "{description}" not in style.description_template or "{question}" not in style.description_template:
            raise FrankenscopeError(f"{path}: description_template needs both {{description}} and {{question}}")
        return style
    raise FrankenscopeError(f"unknown prompt style {spec!r}; choose one of {', '.join(PROMPT_STYLES)} "
                            "or give the path of a .json file with fields name, system, user_prefix, "
                            "user_suffix, description_template")


def styles_for(models: list[str], spec: str | list[str]) -> list[PromptStyle]:
    """One style per model: a single name for all, or a list / comma-separated string with one per model."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if len(names) == 1:
        names = names * len(models)
    if len(names) != len(models):
        raise FrankenscopeError(f"got {len(names)} prompt styles for {len(models)} models; give one style "
                                "for all models or one per model (comma-separated, in model order)")
    return [get_prompt_style(n) for n in names]
