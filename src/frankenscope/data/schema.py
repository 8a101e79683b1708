"""One schema for evaluation items and one for visual-token-swap probe pairs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: How an answer is extracted and compared (see frankenscope.evaluate.extract).
ANSWER_TYPES = ("number", "word", "yesno", "box", "choice", "text")
#: What an item measures: perception (vision only), v2r (vision-to-reasoning), text (reasoning only).
CATEGORIES = ("perception", "v2r", "text")


@dataclass
class Item:
    """One evaluation/training item.

    image: path to the image file (absolute once loaded; relative to the jsonl inside the file),
        None for text-only items. `description` is an exact textual description of the image (the
        black-image + description control); `solution` a worked solution ending in the final answer.
    """

    id: str
    task: str
    prompt: str
    answer: str
    answer_type: str
    category: str = "perception"
    image: str | None = None
    description: str | None = None
    solution: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbePair:
    """A visual-token-swap pair in the paper's format: same prompt, two same-size images, different answers."""

    id: str
    task: str
    target_image: str
    source_image: str
    prompt: str
    target_answer: str
    source_answer: str
    answer_type: str
    meta: dict[str, Any] = field(default_factory=dict)
