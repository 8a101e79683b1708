"""Named prompt styles: an explicit system prompt, user prefix and description layout per model.

A style is chosen per model in the run configuration and written into every result file. It is
never inferred from a model's name (the reference code's substring rules put the wrong prompt on
some merged checkpoints, reference-method.md §11.2).

Built-in styles (`PROMPT_STYLES`):

| name          | system prompt                                   | user prefix                        |
|---------------|-------------------------------------------------|------------------------------------|
| plain         | none (the chat template's default)              | none                               |
| boxed         | none                                            | solve step by step, answer in one `\\boxed{}` |
| think_answer  | reason in `<think>`, answer in `<answer>`       | solve step by step                 |
| think_boxed   | reason in `<think>`, answer in `\\boxed{}`       | solve step by step, answer in one `\\boxed{}` |

The wording is frankenscope's own. To reproduce another harness's exact prompts, write a JSON file
with the fields of `PromptStyle` and pass its path instead of a name.

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
    description_template: layout of the black-image + description condition, with the fields
        {description} and {question}; the user prefix goes before it.
    """

    name: str
    system: str | None = None
    user_prefix: str = ""
    description_template: str = PAPER_DESCRIPTION_TEMPLATE

    def render(self, question: str, description: str | None = None) -> str:
        """The user text: prefix + question, or prefix + the description layout when a description is given."""
        body = question if description is None else self.description_template.format(
            description=description, question=question)
        return self.user_prefix + body

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
        fields = {"name", "system", "user_prefix", "description_template"}
        if not isinstance(doc, dict) or set(doc) - fields:
            raise FrankenscopeError(f"{path}: a prompt style is a JSON object with fields {sorted(fields)}")
        doc.setdefault("name", path.stem)
        style = PromptStyle(**doc)
        if "{description}" not in style.description_template or "{question}" not in style.description_template:
            raise FrankenscopeError(f"{path}: description_template needs both {{description}} and {{question}}")
        return style
    raise FrankenscopeError(f"unknown prompt style {spec!r}; choose one of {', '.join(PROMPT_STYLES)} "
                            "or give the path of a .json file with fields name, system, user_prefix, "
                            "description_template")


def styles_for(models: list[str], spec: str | list[str]) -> list[PromptStyle]:
    """One style per model: a single name for all, or a list / comma-separated string with one per model."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if len(names) == 1:
        names = names * len(models)
    if len(names) != len(models):
        raise FrankenscopeError(f"got {len(names)} prompt styles for {len(models)} models; give one style "
                                "for all models or one per model (comma-separated, in model order)")
    return [get_prompt_style(n) for n in names]
