"""The one loader for items and probe pairs, in the suite layout (all paths inside jsonl files are
relative to that file's folder). A suite provider (e.g. the organism's `write_suite`) writes it:

    <out_dir>/
      suite.json                       seed, counts per task, sha256 of every jsonl, schema_version
      items/<task>/data.jsonl          one Item.to_dict() per line, "image": "images/<id>.png" or null
      items/<task>/images/<id>.png
      probe/<task>/data.jsonl          the paper's probe format, one pair per line:
                                       {"id", "task", "target_image", "source_image", "prompt", "meta"}
      probe/<task>/images/<id>_t.png   target image
      probe/<task>/images/<id>_s.png   source image

`load_probe_pairs` also reads the paper's own dataset (`vision_functionality_dataset/<task>/data.jsonl`),
taking the answers from `meta` (see `PAPER_ANSWER_FIELDS`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError

from frankenscope.data.schema import ANSWER_TYPES, CATEGORIES, Item, ProbePair
from frankenscope.errors import FrankenscopeError

_T = TypeVar("_T")  # anything with a `task` attribute (Item, ProbePair)

SUITE_SCHEMA_VERSION = 1
DATA_FILE = "data.jsonl"

#: Fields an item line must have, and all fields it may have.
ITEM_REQUIRED = ("id", "task", "prompt", "answer", "answer_type")
ITEM_FIELDS = (*ITEM_REQUIRED, "category", "image", "description", "solution", "meta")
#: Fields a probe-pair line must have (answers live in `meta`).
PROBE_REQUIRED = ("id", "task", "target_image", "source_image", "prompt")

#: Where the paper's probe files keep each task's answers: meta[target_field], meta[source_field].
#: Any task falls back to meta["target_answer"] / meta["source_answer"].
PAPER_ANSWER_FIELDS: dict[str, tuple[str, str]] = {
    "counting": ("target_answer", "source_answer"),
    "recognition": ("target_answer", "source_answer"),
    "ocr": ("target_text", "source_text"),
    "grounding": ("target_bbox_xyxy", "source_bbox_xyxy"),
}
PROBE_ANSWER_TYPES = {"counting": "number", "ocr": "word", "grounding": "box", "recognition": "yesno"}


# --------------------------------------------------------------------------- writing


def _jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, parsed object) for every non-blank line; malformed lines raise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FrankenscopeError(f"cannot read {path}: {e}") from e
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FrankenscopeError(f"{path} line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(row, dict):
            raise FrankenscopeError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _require(row: dict[str, Any], fields: tuple[str, ...], path: Path, lineno: int) -> None:
    for name in fields:
        if row.get(name) is None:
            raise FrankenscopeError(f"{path} line {lineno}: missing required field {name!r}")


def _resolve_image(value: Any, field: str, path: Path, lineno: int) -> str:
    """Absolute path of an image referenced by a jsonl line.

    Relative paths are relative to the jsonl's folder and must stay inside it (no climbing out with
    '..'); absolute paths are the user's choice and are taken as given.
    """
    if not isinstance(value, str) or not value:
        raise FrankenscopeError(f"{path} line {lineno}: field {field!r} must be a non-empty path string")
    image = Path(value)
    if not image.is_absolute():
        root = os.path.normpath(path.parent)
        joined = os.path.normpath(os.path.join(root, value))
        if os.path.commonpath([root, joined]) != root:
            raise FrankenscopeError(f"{path} line {lineno}: relative image path {value!r} (field {field!r}) leads "
                                    f"outside {root}; keep images inside the data folder or give an absolute path")
        image = Path(joined)
    image = image.resolve()
    if not image.is_file():
        raise FrankenscopeError(f"{path} line {lineno}: image file not found: {image} (field {field!r})")
    return str(image)


def _as_text(value: Any, field: str, path: Path, lineno: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FrankenscopeError(f"{path} line {lineno}: field {field!r} must be a string or number, got {value!r}")
    return str(value)


def _jsonl_files(path: str | Path, suite_subdir: str) -> list[Path]:
    """The data.jsonl files under `path`: the file itself, <path>/data.jsonl,
    <path>/<suite_subdir>/*/data.jsonl (a suite folder) or <path>/*/data.jsonl (a folder of task folders)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FrankenscopeError(f"no such file or folder: {path}")
    if (path / DATA_FILE).is_file():
        return [path / DATA_FILE]
    root = path / suite_subdir if (path / suite_subdir).is_dir() else path
    files = sorted(root.glob(f"*/{DATA_FILE}"))
    if not files:
        raise FrankenscopeError(f"no {DATA_FILE} found in {path}, {path}/*/ or {path}/{suite_subdir}/*/")
    return files


def load_items(path: str | Path) -> list[Item]:
    """Load items from a jsonl file, a task folder with data.jsonl, or a suite folder (items/*/data.jsonl,
    sorted by task). Image paths become absolute and must exist; errors name the file and line."""
    items: list[Item] = []
    seen: dict[str, str] = {}
    for jsonl in _jsonl_files(path, "items"):
        jsonl = jsonl.resolve()
        for lineno, row in _jsonl_lines(jsonl):
            unknown = sorted(set(row) - set(ITEM_FIELDS))
            if unknown:
                raise FrankenscopeError(f"{jsonl} line {lineno}: unknown field(s) {', '.join(map(repr, unknown))}; "
                                        f"known: {', '.join(ITEM_FIELDS)} (put extra information under 'meta')")
            _require(row, ITEM_REQUIRED, jsonl, lineno)
            answer_type = row["answer_type"]
            if answer_type not in ANSWER_TYPES:
                raise FrankenscopeError(f"{jsonl} line {lineno}: field 'answer_type' is {answer_type!r}; "
                                        f"known: {', '.join(ANSWER_TYPES)}")
            category = row.get("category") or "perception"
            if category not in CATEGORIES:
                raise FrankenscopeError(f"{jsonl} line {lineno}: field 'category' is {category!r}; "
                                        f"known: {', '.join(CATEGORIES)}")
            meta = row.get("meta") or {}
            if not isinstance(meta, dict):
                raise FrankenscopeError(f"{jsonl} line {lineno}: field 'meta' must be an object")
            item_id = _as_text(row["id"], "id", jsonl, lineno)
            where = f"{jsonl} line {lineno}"
            if item_id in seen:
                raise FrankenscopeError(f"{where}: duplicate id {item_id!r} (first at {seen[item_id]})")
            seen[item_id] = where
            image = row.get("image")
            items.append(Item(
                id=item_id,
                task=_as_text(row["task"], "task", jsonl, lineno),
                prompt=_as_text(row["prompt"], "prompt", jsonl, lineno),
                answer=_as_text(row["answer"], "answer", jsonl, lineno),
                answer_type=answer_type,
                category=category,
                image=None if image is None else _resolve_image(image, "image", jsonl, lineno),
                description=row.get("description"),
                solution=row.get("solution"),
                meta=meta,
            ))
    return items


def _probe_answer(value: Any, field: str, path: Path, lineno: int) -> str:
    """A probe answer as a string; a bounding box list becomes "x1,y1,x2,y2"."""
    if isinstance(value, (list, tuple)):
        if len(value) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise FrankenscopeError(f"{path} line {lineno}: meta field {field!r} must be 4 numbers x1,y1,x2,y2, "
                                    f"got {value!r}")
        return ",".join(str(int(v)) if float(v).is_integer() else str(v) for v in value)
    return _as_text(value, f"meta.{field}", path, lineno)


def _probe_answers(task: str, meta: dict[str, Any], path: Path, lineno: int) -> tuple[str, str]:
    candidates = [PAPER_ANSWER_FIELDS[task]] if task in PAPER_ANSWER_FIELDS else []
    candidates.append(("target_answer", "source_answer"))
    for t_field, s_field in candidates:
        if meta.get(t_field) is not None and meta.get(s_field) is not None:
            return (_probe_answer(meta[t_field], t_field, path, lineno),
                    _probe_answer(meta[s_field], s_field, path, lineno))
    wanted = " or ".join(f"{t!r}/{s!r}" for t, s in candidates)
    raise FrankenscopeError(f"{path} line {lineno}: meta lacks the answers of task {task!r}: need meta fields {wanted}")


def load_probe_pairs(path: str | Path) -> list[ProbePair]:
    """Load visual-token-swap pairs in the paper's format.

    path: a jsonl file, a folder with data.jsonl, a folder of task folders (<task>/data.jsonl, as in the
    paper's vision_functionality_dataset/), or a suite folder (reads probe/*/data.jsonl). Prompts are kept
    verbatim; answers come from meta (PAPER_ANSWER_FIELDS, falling back to target_answer/source_answer);
    image paths become absolute and must exist. Image sizes are NOT checked here (see check_pair_sizes).
    """
    pairs: list[ProbePair] = []
    seen: dict[str, str] = {}
    for jsonl in _jsonl_files(path, "probe"):
        jsonl = jsonl.resolve()
        for lineno, row in _jsonl_lines(jsonl):
            _require(row, PROBE_REQUIRED, jsonl, lineno)
            meta = row.get("meta") or {}
            if not isinstance(meta, dict):
                raise FrankenscopeError(f"{jsonl} line {lineno}: field 'meta' must be an object")
            task = _as_text(row["task"], "task", jsonl, lineno)
            pair_id = _as_text(row["id"], "id", jsonl, lineno)
            where = f"{jsonl} line {lineno}"
            if pair_id in seen:
                raise FrankenscopeError(f"{where}: duplicate id {pair_id!r} (first at {seen[pair_id]})")
            seen[pair_id] = where
            target_answer, source_answer = _probe_answers(task, meta, jsonl, lineno)
            pairs.append(ProbePair(
                id=pair_id,
                task=task,
                target_image=_resolve_image(row["target_image"], "target_image", jsonl, lineno),
                source_image=_resolve_image(row["source_image"], "source_image", jsonl, lineno),
                prompt=_as_text(row["prompt"], "prompt", jsonl, lineno),
                target_answer=target_answer,
                source_answer=source_answer,
                answer_type=PROBE_ANSWER_TYPES.get(task, "text"),
                meta=meta,
            ))
    return pairs


def load_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """An image file as RGB, fully loaded (the file is closed on return); when w*h > max_pixels it is
    downscaled (LANCZOS) to fit, keeping the aspect ratio. Errors name the file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except FileNotFoundError as e:
        raise FrankenscopeError(f"image file not found: {path}") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FrankenscopeError(f"cannot read image {path}: {e}") from e
    if max_pixels is not None and img.width * img.height > max_pixels:
        scale = (max_pixels / (img.width * img.height)) ** 0.5
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.Resampling.LANCZOS)
    return img


def _image_size(path: str | Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError as e:
        raise FrankenscopeError(f"image file not found: {path}") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FrankenscopeError(f"cannot read image {path}: {e}") from e


def check_pair_sizes(pair: ProbePair, strict: bool = True) -> tuple[tuple[int, int], tuple[int, int]]:
    """(target size, source size) as (width, height), read from the image headers.

    strict: raise FrankenscopeError naming the pair and both files when the sizes differ (a visual-token
    swap needs equal token counts, hence equal sizes after the processor's resize).
    """
    size_t, size_s = _image_size(pair.target_image), _image_size(pair.source_image)
    if strict and size_t != size_s:
        raise FrankenscopeError(f"probe pair {pair.id!r}: target {pair.target_image} is {size_t[0]}x{size_t[1]} "
                                f"but source {pair.source_image} is {size_s[0]}x{size_s[1]}; "
                                "a visual-token swap needs images of the same size")
    return size_t, size_s


def first_n_per_task(items: list[_T], n: int | None) -> list[_T]:
    """The first n items (or probe pairs: anything with a `task`) of every task, order kept (all when n is None)."""
    if n is None:
        return items
    seen: dict[str, int] = {}
    kept = []
    for it in items:
        seen[it.task] = seen.get(it.task, 0) + 1
        if seen[it.task] <= n:
            kept.append(it)
    return kept
