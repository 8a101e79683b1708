"""Shared plotting plumbing: read a versioned result file, headless pyplot, atomic PNG writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frankenscope.errors import FrankenscopeError
from frankenscope.io import atomic_path


def load_result(doc_or_path: dict[str, Any] | str | Path, kind: str, name: str) -> dict[str, Any]:
    """A result document: given as a dict, a file, or a folder holding `name`; its `kind` must match."""
    if isinstance(doc_or_path, dict):
        return doc_or_path
    p = Path(doc_or_path)
    if p.is_dir():
        p = p / name
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise FrankenscopeError(f"{p}: no {kind} result here") from e
    if doc.get("kind") != kind:
        raise FrankenscopeError(f"{p}: not a {kind} result (kind={doc.get('kind')!r})")
    return doc


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> Path:
    """Write `fig` as a PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    pyplot().close(fig)
    return path
