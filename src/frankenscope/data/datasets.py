"""Loaders for the paper's public benchmarks, from local files, as frankenscope Items.

Every loader takes the dataset's folder (or one data file) and reads, in this order of preference,
the files listed in its `DatasetSpec.patterns`: JSON (a list of records, or an object whose values
are records keyed by id), JSON Lines, or Parquet shards (the Hugging Face dataset layout,
`data/<split>-*.parquet`). A dataset that is not there raises a FrankenscopeError that names the
folder, the files it looked for and how to fetch them. With `from_hub=True` a missing dataset is
loaded through the `datasets` package instead (needs the network).

Images are taken from a path field (relative to the data file's folder, then to the dataset folder)
or, in the Parquet/hub layouts, from embedded bytes or PIL images, which are written once to
`image_dir` (default `$FRANKENSCOPE_IMAGE_CACHE` or `~/.cache/frankenscope/images`) under their
content hash, because an Item names its image by path.

Item ids are "<dataset>:<id in the dataset>"; meta["source_id"] keeps the dataset's own id, meta["dataset"]
the dataset key. Field assumptions (checked against the public releases where possible):

- MathVista (AI4Math/MathVista, split testmini; the GitHub release's data/testmini.json is an object keyed by
  pid without `query`, the Hugging Face parquet data/testmini-*.parquet has `query` and `decoded_image`): pid,
  question, image, decoded_image, choices, unit, precision, answer, question_type (multi_choice | free_form),
  answer_type (integer | float | text | list), query, metadata{category: general-vqa | math-targeted-vqa,
  context, task, ...}. Prompt mode `prompt` (MATHVISTA_PROMPTS): "query" (default) = MathVista's hint query,
  the `query` field or, when a record has none, the same text rebuilt with MathVista's hint template
  (`mathvista_query`), so both layouts give one prompt; "question" = question + " (Unit: u)" + a "Choices:"
  block as in the reference code. category: general-vqa -> "perception" (M_vis), math-targeted-vqa -> "v2r"
  (M_v2r). Multiple choice -> answer_type "choice" with meta["choices"] (a list; gold = option text, its letter
  in meta["answer_letter"]);
  integer/float -> "number" with meta["precision"] and meta["unit"] (None without one); text/list -> "text".
- MATH-500 (HuggingFaceH4/MATH-500, test.jsonl): problem, solution, answer, subject, level, unique_id.
  Text only, category "text"; answer_type "number" when the answer is a plain number, else "text".
- GSM8K (openai/gsm8k, config main: main/test-*.parquet; or the GitHub test.jsonl): question, answer ending in
  "#### N". id = row index; gold = N without thousands commas; the worked solution goes to Item.solution.
- MathVerse (AI4Math/MathVerse, testmini: root testmini.parquet or testmini.json + images; also
  testmini_text_only): sample_index, problem_index, problem_version (Text Dominant | Text Lite | Vision
  Intensive | Vision Dominant | Vision Only | Text Only), question (choices inside the text; "" for Vision
  Only), image, answer (a letter for multi-choice), question_type (multi-choice | free-form), metadata,
  query_wo, query_cot, question_for_eval. Prompt mode `prompt` (MATHVERSE_PROMPTS): "query_cot" (default,
  the official CoT input), "query_wo" or "question", never empty (see `load_mathverse`). Multi-choice ->
  "choice" with meta["choices"] = {letter: option text} parsed from the text (`parse_choices`); a free-form
  "<number> <unit>" gold -> "number" with the number as gold and meta["unit"] (`split_unit`).
- MathVision (MathLLMs/MathVision, testmini or test; data/<split>.jsonl with images/ paths, or parquet): id,
  question (may contain "<image1>" placeholders, removed), options (list, empty for free-form), image,
  decoded_image, answer (a letter when there are options), solution, level, subject. Options are appended as
  a "Choices:" block and kept as the list meta["choices"].
- LogicVista (github.com/Yijia-Xiao/LogicVista, data/dataset.json, an object keyed by id; or a list / jsonl /
  parquet export): imagename (or image / image_path), question, answer (option letter(s), "C, A"; a few are
  numbers), reasoning, skill, broad_capability, specific_capability, imagesource, sourcelink (all kept in
  meta); images are looked up next to the data file and in an images/ folder. A letter answer is a "choice"
  item with the letters sorted ("A, C"); several letters set meta["multi_letter"] and meta["answer_letters"].

Every loader skips (never loads, never grades) an item whose prompt or gold answer is empty and warns once per
load with the dataset, the count and the first ids. A gold answer wholly wrapped in `$...$` loses the dollar
signs (the original goes to meta["raw_answer"]); nothing else is rewritten (the grader normalises gold and
prediction alike).

`subsample` draws n items with `numpy.random.RandomState(seed).choice(len, n, replace=False)`, sorted
(the reference code's rule), and saves the chosen ids to a split file that later runs re-read.
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.io import write_json_atomic

SPLIT_SCHEMA_VERSION = 1
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_IMAGE_PLACEHOLDER = re.compile(r"<image\d*>\s*", re.IGNORECASE)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    title: str
    hub: tuple[str, str | None]  # (repo id, config)
    folders: tuple[str, ...]  # accepted folder names under a data root (matched case-insensitively)
    patterns: dict[str, tuple[str, ...]]  # split -> glob patterns relative to the dataset folder
    default_split: str


DATASETS: dict[str, DatasetSpec] = {
    "mathvista": DatasetSpec(
        "mathvista", "MathVista", ("AI4Math/MathVista", None), ("MathVista", "mathvista"),
        {s: (f"{s}.json", f"{s}.jsonl", f"data/{s}.json", f"data/{s}-*.parquet", f"{s}-*.parquet")
         for s in ("testmini", "test")}, "testmini"),
    "math500": DatasetSpec(
        "math500", "MATH-500", ("HuggingFaceH4/MATH-500", None), ("MATH-500", "math500", "MATH500", "math-500"),
        {"test": ("test.jsonl", "test.json", "data/test-*.parquet", "test-*.parquet")}, "test"),
    "gsm8k": DatasetSpec(
        "gsm8k", "GSM8K", ("openai/gsm8k", "main"), ("gsm8k", "GSM8K"),
        {s: (f"{s}.jsonl", f"main/{s}.jsonl", f"main/{s}-*.parquet", f"{s}-*.parquet", f"data/{s}-*.parquet")
         for s in ("test", "train")}, "test"),
    "mathverse": DatasetSpec(
        "mathverse", "MathVerse", ("AI4Math/MathVerse", "testmini"), ("MathVerse", "mathverse"),
        {s: (f"{s}.parquet", f"{s}-*.parquet", f"{s}/{s}-*.parquet", f"data/{s}-*.parquet", f"{s}.json",
             f"{s}.jsonl") for s in ("testmini", "testmini_text_only")}, "testmini"),
    "mathvision": DatasetSpec(
        "mathvision", "MathVision", ("MathLLMs/MathVision", None), ("MathVision", "mathvision", "MATH-V", "math-v"),
        {s: (f"{s}.jsonl", f"data/{s}.jsonl", f"{s}.json", f"data/{s}-*.parquet", f"{s}-*.parquet")
         for s in ("testmini", "test")}, "testmini"),
    "logicvista": DatasetSpec(
        "logicvista", "LogicVista", ("lscpku/LogicVista", None), ("LogicVista", "logicvista"),
        {"test": ("dataset.json", "data/dataset.json", "test.jsonl", "dataset.jsonl", "data/test-*.parquet",
                  "test-*.parquet")}, "test"),
}
#: The four benchmarks whose mean is the paper's "average benchmark accuracy".
PAPER_BENCHMARKS = ("mathvista", "mathverse", "mathvision", "logicvista")


# --------------------------------------------------------------------------- locating and reading files


def _hub_hint(spec: DatasetSpec, folder: Path) -> str:
    repo, config = spec.hub
    cfg = f" (config {config})" if config else ""
    return (f"On a machine with network: `hf download {repo} --repo-type dataset --local-dir {folder}`"
            f"{cfg}, then copy the folder here; or call the loader with from_hub=True where the Hugging Face "
            "hub is reachable.")


def missing_dataset_error(spec: DatasetSpec, folder: Path, split: str) -> FrankenscopeError:
    pats = spec.patterns.get(split, ())
    where = ", ".join(str(folder / p) for p in pats)
    return FrankenscopeError(
        f"{spec.title} ({split}) not found: looked for {where}. Provide the dataset as a local folder with one "
        f"of those files (images next to it, under the relative paths the records name). {_hub_hint(spec, folder)}")


def dataset_folder(root: str | Path, key: str) -> Path:
    """The folder of dataset `key` under a data root (its accepted names, case-insensitive), or the root itself
    when it already holds the dataset's files. Raises the helpful missing-dataset error otherwise."""
    spec = _spec(key)
    root = Path(root)
    if root.is_dir():
        names = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
        for name in spec.folders:
            if name.lower() in names:
                return names[name.lower()]
        if _find_files(root, spec, spec.default_split):
            return root
    raise FrankenscopeError(
        f"{spec.title} not found under {root}: expected a folder named {' or '.join(spec.folders)} holding one of "
        f"{', '.join(spec.patterns[spec.default_split])}. {_hub_hint(spec, root / spec.folders[0])}")


def _spec(key: str) -> DatasetSpec:
    k = key.lower().replace("-", "").replace("_", "")
    for spec in DATASETS.values():
        if k == spec.key:
            return spec
    raise FrankenscopeError(f"unknown dataset {key!r}; known: {', '.join(DATASETS)}")


def _find_files(folder: Path, spec: DatasetSpec, split: str) -> list[Path]:
    if split not in spec.patterns:
        raise FrankenscopeError(f"{spec.title}: unknown split {split!r}; known: {', '.join(spec.patterns)}")
    for pat in spec.patterns[split]:
        files = sorted(Path(p) for p in glob.glob(str(folder / pat)))
        if files:
            return files
    return []


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of one .json / .jsonl / .parquet file. A JSON object of records gets each key as "_key"."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return [dict(r) for r in pq.read_table(path).to_pylist()]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ImportError) as e:
        raise FrankenscopeError(f"cannot read {path}: {e}") from e
    except Exception as e:  # pyarrow raises its own error types on corrupt files
        raise FrankenscopeError(f"cannot read {path}: {e}") from e
    if suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FrankenscopeError(f"{path} line {lineno}: malformed JSON ({e.msg})") from e
        return rows
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise FrankenscopeError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from e
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if isinstance(doc.get("data"), list):
            return doc["data"]
        if doc and all(isinstance(v, dict) for v in doc.values()):
            return [{"_key": k, **v} for k, v in doc.items()]
    raise FrankenscopeError(f"{path}: expected a list of records or an object of records keyed by id")


def _records(path: str | Path, key: str, split: str | None, from_hub: bool) -> tuple[list[dict[str, Any]], Path]:
    """(records, folder that relative image paths are resolved against)."""
    spec = _spec(key)
    split = split or spec.default_split
    path = Path(path)
    if path.is_file():
        return read_records(path), path.parent
    files = _find_files(path, spec, split) if path.is_dir() else []
    if files:
        rows: list[dict[str, Any]] = []
        for f in files:
            rows.extend(read_records(f))
        return rows, files[0].parent
    if from_hub:
        return _hub_records(spec, split, path), path
    raise missing_dataset_error(spec, path, split)


def _hub_records(spec: DatasetSpec, split: str, folder: Path) -> list[dict[str, Any]]:
    repo, config = spec.hub
    try:
        import datasets
    except ImportError as e:
        raise FrankenscopeError(f"{spec.title}: from_hub needs the `datasets` package "
                                f"(pip install datasets), or provide the files locally. "
                                f"{missing_dataset_error(spec, folder, split)}") from e
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:
        raise FrankenscopeError(f"{spec.title}: could not load {repo} split {split} from the hub ({e}). "
                                f"{missing_dataset_error(spec, folder, split)}") from e
    return [dict(r) for r in ds]


def default_image_dir() -> Path:
    env = os.environ.get("FRANKENSCOPE_IMAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "frankenscope" / "images"


def _write_image_bytes(data: bytes, image_dir: Path) -> str:
    digest = hashlib.sha256(data).hexdigest()[:24]
    try:
        with Image.open(io.BytesIO(data)) as im:
            ext = (im.format or "png").lower()
    except Exception as e:
        raise FrankenscopeError(f"embedded image data is not a readable image ({e})") from e
    out = image_dir / f"{digest}.{'jpg' if ext == 'jpeg' else ext}"
    if not out.is_file():
        image_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return str(out.resolve())


def _image_path(value: Any, bases: Iterable[Path], image_dir: Path, where: str) -> str | None:
    """An absolute image path from a path string, HF image dict {bytes, path}, raw bytes or PIL image."""
    if value is None or value == "":
        return None
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.convert("RGB").save(buf, format="PNG")
        return _write_image_bytes(buf.getvalue(), image_dir)
    if isinstance(value, (bytes, bytearray)):
        return _write_image_bytes(bytes(value), image_dir)
    if isinstance(value, dict):
        if value.get("bytes"):
            return _write_image_bytes(bytes(value["bytes"]), image_dir)
        value = value.get("path")
        if not value:
            return None
    if not isinstance(value, str):
        raise FrankenscopeError(f"{where}: cannot use image field value of type {type(value).__name__}")
    p = Path(value)
    tried = [p] if p.is_absolute() else []
    if not p.is_absolute():
        for base in bases:
            tried += [c for c in (base / p, base / "images" / p, base / "images" / p.name) if c not in tried]
    for cand in tried:
        if cand.is_file():
            return str(cand.resolve())
    raise FrankenscopeError(f"{where}: image {value!r} not found (looked at {', '.join(map(str, tried))})")


def _first(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    return None


def _choices_block(question: str, options: list[str]) -> str:
    lines = "\n".join(f"{_LETTERS[i]}. {opt}" for i, opt in enumerate(options))
    return f"{question}\n\nChoices:\n{lines}"


def _number_or_text(answer: str) -> str:
    return "number" if _PLAIN_NUMBER.fullmatch(answer.strip()) else "text"


def _required(row: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    """A field the dataset's schema always has must be there (an empty or null value is an empty item, which the
    loaders skip and count; a missing field means the file is not that dataset's layout)."""
    for n in names:
        if n not in row:
            raise FrankenscopeError(f"{where}: missing field {n!r} (fields present: {', '.join(sorted(row))})")


# --------------------------------------------------------------------------- shared helpers for the loaders

#: MathVista prompt modes: the benchmark's hint `query`, or the bare question + choices (+ unit).
MATHVISTA_PROMPTS = ("query", "question")
MATHVISTA_DEFAULT_PROMPT = "query"
#: MathVerse prompt modes: the official chain-of-thought input, the official direct-answer input, the question.
MATHVERSE_PROMPTS = ("query_cot", "query_wo", "question")
MATHVERSE_DEFAULT_PROMPT = "query_cot"
#: Prompt settings per dataset: (accepted values, default). `load_dataset_items(prompts={...})` takes these keys.
PROMPT_MODES: dict[str, tuple[tuple[str, ...], str]] = {
    "mathvista": (MATHVISTA_PROMPTS, MATHVISTA_DEFAULT_PROMPT),
    "mathverse": (MATHVERSE_PROMPTS, MATHVERSE_DEFAULT_PROMPT),
}

# MathVista's answer-format hints (its evaluation/build_query.py, zero-shot "solution" prompts), by answer type.
_MATHVISTA_HINT_CHOICE = ("Hint: Please answer the question and provide the correct option letter, "
                          "e.g., A, B, C, D, at the end.")
_MATHVISTA_HINT_INTEGER = ("Hint: Please answer the question requiring an integer answer and provide the final "
                           "value, e.g., 1, 2, 3, at the end.")
_MATHVISTA_HINT_FLOAT = {
    1: ("Hint: Please answer the question requiring a floating-point number with one decimal place and provide "
        "the final value, e.g., 1.2, 1.3, 1.4, at the end."),
    2: ("Hint: Please answer the question requiring a floating-point number with two decimal places and provide "
        "the final value, e.g., 1.23, 1.34, 1.45, at the end."),
}
_MATHVISTA_HINT_LIST = ("Hint: Please answer the question requiring a Python list as an answer and provide the "
                        "final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.")

_DOLLAR_WRAPPED = re.compile(r"^\$+([^$]+?)\$+$", re.DOTALL)
_LATEX_UNIT_WRAP = re.compile(r"\\(?:text|mathrm|textrm|rm)\s*\{\s*~?\s*([^{}]*?)\s*\}")
_UNIT_BASES = ("cm|mm|dm|km|m|in|inch|inches|ft|feet|foot|yd|yards?|mi|miles?|g|kg|mg|lb|lbs|oz|s|sec|seconds?|"
               "min|mins|minutes?|h|hr|hrs|hours?|days?|weeks?|years?|ml|mL|l|L|N|J|W|V|Pa|kPa|units?|"
               "square units|sq units|degrees?|radians?|rad")
# A unit after a number: a known base with an optional power (^2, ^{2}, ², ³) and an optional "/base", or
# a degree sign (°, ^\circ, ^{\circ}), or a percent sign.
_UNIT = re.compile(
    rf"(?:(?:{_UNIT_BASES})(?:\s*(?:\^\s*\{{?[23]\}}?|[²³]))?(?:\s*/\s*(?:{_UNIT_BASES})(?:\^\{{?2\}}?|²)?)?"
    r"|°|\^\s*\{?\\circ\}?|\\circ|\\?%)")
_NUMBER_WITH_UNIT = re.compile(
    rf"^([-+]?(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?|[-+]?\.\d+)\s*(?:\\[,;:!]|~|\\ )*\s*({_UNIT.pattern})\s*\.?$")
# One option label: "A:", "A.", "A)", "A：" or "(A)", preceded by the start of the text or white space.
_LABEL = r"(?<![^\s]){L}\s*[:.)\uff1a]|(?<![^\s])\({L}\)"


def _clean_gold(answer: Any) -> str:
    """The gold answer as a string, stripped; an answer wholly wrapped in `$...$` (math delimiters around the
    entire answer, formatting only) loses them. A trailing period is NOT removed here: in MathVista it is part of
    the option text (pids 50, 692, 915); the grader cleans gold and prediction alike."""
    text = "" if answer is None else str(answer).strip()
    m = _DOLLAR_WRAPPED.match(text)
    return m.group(1).strip() if m else text


def split_unit(answer: str) -> tuple[str, str] | None:
    """(number, unit) when `answer` is a plain number followed by a unit ("14 cm", "60°", "2.5 m^2",
    "12\\text{ cm}", "45\\%"); None otherwise."""
    text = _LATEX_UNIT_WRAP.sub(r" \1", answer.strip())
    m = _NUMBER_WITH_UNIT.match(text)
    if not m:
        return None
    unit = m.group(2).strip()
    return m.group(1).replace(",", ""), ("°" if "circ" in unit else unit)


def parse_choices(text: str | None) -> dict[str, str]:
    """Options written inside a question: letter -> option text, e.g. "Choices:\\nA:40°\\nB:60°",
    "(A) 1 (B) 2", "A. x\\nB. y" or inline "A) 10 B) 12 C) 14". Labels must run A, B, C, ... in order (at
    least two) and follow white space; the "A" label must also open a line or follow ":", "?", "." or ")";
    the last such run in the text wins, and the last option ends at its line's end. {} when there is none."""
    if not text:
        return {}
    best: dict[str, str] = {}
    for start in re.finditer(_LABEL.format(L="A"), text):
        before = text[:start.start()].rstrip(" \t")
        if before and before[-1] not in "\n:?.)\uff1a\uff1f":  # "A" must open a line or follow "Choices:", "?"
            continue
        found = [("A", start.start(), start.end())]
        pos = start.end()
        for letter in _LETTERS[1:8]:
            m = re.compile(_LABEL.format(L=letter)).search(text, pos)
            if not m:
                break
            found.append((letter, m.start(), m.end()))
            pos = m.end()
        if len(found) < 2:
            continue
        options: dict[str, str] = {}
        for i, (letter, _, end) in enumerate(found):
            body = text[end:found[i + 1][1]] if i + 1 < len(found) else text[end:].split("\n", 1)[0]
            options[letter] = body.strip().rstrip(",;").strip()
        if all(options.values()):
            best = options
    return best


def _warn_skipped(title: str, skipped: list[str], why: str = "an empty question or answer") -> None:
    if skipped:
        warnings.warn(f"{title}: skipped {len(skipped)} item(s) with {why} (first: {', '.join(skipped[:5])}); "
                      "they are not loaded and never graded", stacklevel=3)


def _check_mode(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise FrankenscopeError(f"{name}: unknown prompt mode {value!r}; choose one of {', '.join(allowed)}")
    return value


def _with_unit(question: str, unit: Any) -> str:
    return f"{question} (Unit: {unit})" if unit not in (None, "") else question


def mathvista_hint(row: dict[str, Any]) -> str:
    """MathVista's answer-format hint for one record (multi-choice letter, integer, float by precision, list)."""
    if row.get("question_type") == "multi_choice":
        return _MATHVISTA_HINT_CHOICE
    kind = row.get("answer_type")
    if kind == "integer":
        return _MATHVISTA_HINT_INTEGER
    if kind == "float":
        try:
            places = int(float(row.get("precision")))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            places = 2
        if places in _MATHVISTA_HINT_FLOAT:
            return _MATHVISTA_HINT_FLOAT[places]
        # not in testmini (MathVista's own builder has no hint for it): the same sentence with the count
        return _MATHVISTA_HINT_FLOAT[2].replace("two decimal places", f"{places} decimal places")
    if kind == "list":
        return _MATHVISTA_HINT_LIST
    return ""


def mathvista_query(row: dict[str, Any]) -> str:
    """MathVista's zero-shot hint query rebuilt from a record's fields, as the `query` field of the Hugging Face
    release has it: hint, "Question: <question>" (+ " (Unit: u)"), then "Choices:" and "(A) option" lines."""
    choices = [str(c) for c in (row.get("choices") or [])]
    parts = [mathvista_hint(row), "Question: " + _with_unit(str(row.get("question") or ""), row.get("unit"))]
    if choices:
        parts.append("\n".join(["Choices:"] + [f"({_LETTERS[i]}) {c}" for i, c in enumerate(choices)]))
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------- per-dataset converters


def load_mathvista(path: str | Path, *, split: str = "testmini", prompt: str = MATHVISTA_DEFAULT_PROMPT,
                   use_query: bool | None = None, image_dir: str | Path | None = None,
                   from_hub: bool = False) -> list[Item]:
    """MathVista items (see the module docstring for fields and mapping).

    prompt: "query" (default) -> MathVista's hint query: the record's `query` field when it has one (the
    Hugging Face parquet), else the same text rebuilt from the fields with MathVista's hint template (the
    GitHub JSON, which has no `query`), so both layouts give the same prompt. "question" -> the question,
    " (Unit: u)" when the record has a unit, then a blank line, "Choices:" and "A. option" lines for multiple
    choice (the reference code's prompt, plus the unit). use_query: deprecated alias (True -> "query",
    False -> "question"); it wins when given.
    """
    if use_query is not None:
        prompt = "query" if use_query else "question"
    _check_mode("MathVista", prompt, MATHVISTA_PROMPTS)
    rows, base = _records(path, "mathvista", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "mathvista"
    items, skipped = [], []
    for i, row in enumerate(rows):
        pid = str(_first(row, "pid", "_key") or i)
        where = f"MathVista {split} pid {pid}"
        _required(row, ("question", "answer"), where)
        meta_in = row.get("metadata") or {}
        category = meta_in.get("category")
        choices = [str(c) for c in (row.get("choices") or [])]
        mc = row.get("question_type") == "multi_choice" and bool(choices)
        question = str(row.get("question") or "").strip()
        answer = _clean_gold(row.get("answer"))
        if not question or not answer:
            skipped.append(pid)
            continue
        if prompt == "query":
            text = str(row.get("query") or "").strip() or mathvista_query(row)
        else:
            text = _with_unit(str(row["question"]), row.get("unit"))
            text = _choices_block(text, choices) if mc else text
        if mc:
            answer_type = "choice"
        elif row.get("answer_type") in ("integer", "float"):
            answer_type = "number"
        else:
            answer_type = "text"
        meta = {"dataset": "mathvista", "source_id": pid, "question_type": row.get("question_type"),
                "mathvista_answer_type": row.get("answer_type"), "unit": row.get("unit") or None,
                "metadata": meta_in, "question": str(row["question"]), "prompt_mode": prompt}
        if choices:
            meta["choices"] = choices
            if answer in choices:  # gold is the option text; its letter, for graders and reports
                meta["answer_letter"] = _LETTERS[choices.index(answer)]
        if row.get("precision") is not None and answer_type == "number":
            meta["precision"] = row["precision"]
        if answer != str(row["answer"]):
            meta["raw_answer"] = str(row["answer"])
        image = _image_path(_first(row, "decoded_image", "image"), [base, Path(path)], img_dir, where)
        items.append(Item(id=f"mathvista:{pid}", task="mathvista", prompt=text, answer=answer,
                          answer_type=answer_type,
                          category={"general-vqa": "perception", "math-targeted-vqa": "v2r"}.get(category, "v2r"),
                          image=image, meta=meta))
    _warn_skipped(f"MathVista {split}", skipped)
    return items


def load_math500(path: str | Path, *, split: str = "test", from_hub: bool = False) -> list[Item]:
    rows, _ = _records(path, "math500", split, from_hub)
    items, skipped = [], []
    for i, row in enumerate(rows):
        uid = str(_first(row, "unique_id", "id", "_key") or i)
        _required(row, ("problem", "answer"), f"MATH-500 {uid}")
        answer = _clean_gold(row["answer"])
        problem = str(row.get("problem") or "")
        if not problem.strip() or not answer:
            skipped.append(uid)
            continue
        meta = {"dataset": "math500", "source_id": uid, "subject": row.get("subject"), "level": row.get("level")}
        if answer != str(row["answer"]):
            meta["raw_answer"] = str(row["answer"])
        items.append(Item(id=f"math500:{uid}", task="math500", prompt=problem, answer=answer,
                          answer_type=_number_or_text(answer), category="text", image=None,
                          solution=row.get("solution"), meta=meta))
    _warn_skipped(f"MATH-500 {split}", skipped)
    return items


def load_gsm8k(path: str | Path, *, split: str = "test", from_hub: bool = False) -> list[Item]:
    rows, _ = _records(path, "gsm8k", split, from_hub)
    items, skipped = [], []
    for i, row in enumerate(rows):
        where = f"GSM8K {split} row {i}"
        _required(row, ("question", "answer"), where)
        if not str(row.get("question") or "").strip() or not str(row.get("answer") or "").strip():
            skipped.append(str(i))
            continue
        solution, sep, final = str(row["answer"]).rpartition("####")
        if not sep:
            raise FrankenscopeError(f"{where}: answer has no '#### N' final line")
        gold = final.strip().replace(",", "")
        if not gold:
            skipped.append(str(i))
            continue
        items.append(Item(id=f"gsm8k:{i}", task="gsm8k", prompt=str(row["question"]), answer=gold,
                          answer_type=_number_or_text(gold), category="text", solution=solution.strip(),
                          meta={"dataset": "gsm8k", "source_id": str(i)}))
    _warn_skipped(f"GSM8K {split}", skipped)
    return items


def _mathverse_prompt(row: dict[str, Any], mode: str) -> tuple[str, str]:
    """(prompt, field it came from): the chosen field, else the next in a fixed order, never an empty text.
    query_cot -> query_wo -> question; query_wo -> query_cot -> question; question -> query_wo -> query_cot
    (a Vision Only record has `question: ""`: its question is in the image, and the official inputs say so)."""
    order = {"query_cot": ("query_cot", "query_wo", "question"),
             "query_wo": ("query_wo", "query_cot", "question"),
             "question": ("question", "query_wo", "query_cot")}[mode]
    for name in order:
        text = str(row.get(name) or "").strip()
        if text:
            return text, name
    return "", mode


def load_mathverse(path: str | Path, *, split: str = "testmini", prompt: str = MATHVERSE_DEFAULT_PROMPT,
                   image_dir: str | Path | None = None, from_hub: bool = False) -> list[Item]:
    """MathVerse items. prompt: "query_cot" (default: the benchmark's official chain-of-thought input, the one
    its paper reports), "query_wo" (the official direct-answer input) or "question" (the bare question); a
    record whose chosen field is empty falls back as `_mathverse_prompt` says and records the field used in
    meta["prompt_field"]. Multi-choice answers are letters ("choice", meta["choices"] letter -> option text
    parsed from `question_for_eval`, else the question or queries, so an option's value grades like its
    letter); a free-form answer "<number> <unit>" becomes a "number" item with the number as gold and
    meta["unit"]; other free-form answers are "number" when plain numbers, else "text"."""
    _check_mode("MathVerse", prompt, MATHVERSE_PROMPTS)
    rows, base = _records(path, "mathverse", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "mathverse"
    items, skipped = [], []
    for i, row in enumerate(rows):
        sid = str(_first(row, "sample_index", "id", "_key") or i)
        where = f"MathVerse {split} sample {sid}"
        _required(row, ("answer",), where)
        text, field = _mathverse_prompt(row, prompt)
        raw = "" if row.get("answer") is None else str(row["answer"])
        answer = _clean_gold(raw)
        if not text or not answer:
            skipped.append(sid)
            continue
        mc = str(row.get("question_type", "")).replace("_", "-") == "multi-choice"
        meta: dict[str, Any] = {
            "dataset": "mathverse", "source_id": sid, "problem_index": row.get("problem_index"),
            "problem_version": row.get("problem_version"), "question_type": row.get("question_type"),
            "metadata": row.get("metadata") or {}, "prompt_mode": prompt, "prompt_field": field,
            "question": str(row.get("question") or ""), "question_for_eval": row.get("question_for_eval")}
        unit = None
        if mc:
            letter = re.fullmatch(r"\(?([A-Za-z])\)?[.:]?", answer)
            answer = letter.group(1).upper() if letter else answer
            answer_type = "choice"
            for source in (row.get("question_for_eval"), row.get("question"), row.get("query_wo"),
                           row.get("query_cot")):
                choices = parse_choices(str(source or ""))
                if choices:
                    meta["choices"] = choices
                    break
        else:
            unit = split_unit(answer)
            if unit:
                answer, meta["unit"] = unit
            answer_type = _number_or_text(answer)
        if answer != raw:
            meta["raw_answer"] = raw
        image = _image_path(_first(row, "decoded_image", "image"), [base, Path(path)], img_dir, where)
        items.append(Item(id=f"mathverse:{sid}", task="mathverse", prompt=text, answer=answer,
                          answer_type=answer_type, category="v2r" if image else "text", image=image, meta=meta))
    _warn_skipped(f"MathVerse {split}", skipped)
    return items


def load_mathvision(path: str | Path, *, split: str = "testmini", image_dir: str | Path | None = None,
                    from_hub: bool = False) -> list[Item]:
    rows, base = _records(path, "mathvision", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "mathvision"
    items, skipped = [], []
    for i, row in enumerate(rows):
        mid = str(_first(row, "id", "_key") or i)
        where = f"MathVision {split} id {mid}"
        _required(row, ("question", "answer"), where)
        options = [str(o) for o in (row.get("options") or [])]
        question = _IMAGE_PLACEHOLDER.sub("", str(row.get("question") or "")).strip()
        raw = "" if row.get("answer") is None else str(row["answer"])
        answer = _clean_gold(raw)
        if not question or not answer:
            skipped.append(mid)
            continue
        meta: dict[str, Any] = {"dataset": "mathvision", "source_id": mid, "level": row.get("level"),
                                "subject": row.get("subject")}
        if options:
            meta["choices"] = options
        if answer != raw:
            meta["raw_answer"] = raw
        image = _image_path(_first(row, "decoded_image", "image"), [base, Path(path)], img_dir, where)
        items.append(Item(id=f"mathvision:{mid}", task="mathvision",
                          prompt=_choices_block(question, options) if options else question, answer=answer,
                          answer_type="choice" if options else _number_or_text(answer),
                          category="v2r" if image else "text", image=image, solution=row.get("solution"),
                          meta=meta))
    _warn_skipped(f"MathVision {split}", skipped)
    return items


_LOGICVISTA_FIELDS = ("broad_capability", "specific_capability", "reasoning", "skill", "imagesource", "sourcelink",
                      "capability", "reasoning_type", "reasoningtype")


def load_logicvista(path: str | Path, *, split: str = "test", image_dir: str | Path | None = None,
                    from_hub: bool = False) -> list[Item]:
    """LogicVista items. An answer made of option letters ("C", "C, A", "A and C") is a "choice" item whose gold
    is the letters sorted and joined by ", " ("A, C"); several letters also set meta["multi_letter"] = True and
    meta["answer_letters"] = ["A", "C"] (the grader compares letter sets). Other answers are "number"/"text".
    Options written in the question ("A) 10 B) 12 ...") go to meta["choices"] (letter -> text)."""
    rows, base = _records(path, "logicvista", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "logicvista"
    items, skipped = [], []
    for i, row in enumerate(rows):
        image_field = _first(row, "decoded_image", "image", "imagename", "image_path")
        lid = str(_first(row, "id", "question_id", "_key") or
                  (Path(image_field).stem if isinstance(image_field, str) else i))
        where = f"LogicVista id {lid}"
        _required(row, ("question", "answer"), where)
        question = str(row.get("question") or "")
        raw = "" if row.get("answer") is None else str(row["answer"])
        answer = _clean_gold(raw)
        if not question.strip() or not answer:
            skipped.append(lid)
            continue
        meta: dict[str, Any] = {"dataset": "logicvista", "source_id": lid,
                                **{k: row[k] for k in _LOGICVISTA_FIELDS if k in row}}
        letters = re.findall(r"[A-Z]", answer.upper())
        only_letters = re.fullmatch(r"\(?[A-Za-z]\)?(?:\s*(?:,|;|&|and|\s)\s*\(?[A-Za-z]\)?)*\.?", answer)
        if only_letters and letters:
            unique = sorted(set(letters))
            answer, answer_type = ", ".join(unique), "choice"
            if len(unique) > 1:
                meta["multi_letter"] = True
                meta["answer_letters"] = unique
        else:
            answer_type = _number_or_text(answer)
        choices = parse_choices(question)
        if choices:
            meta["choices"] = choices
        if answer != raw:
            meta["raw_answer"] = raw
        image = _image_path(image_field, [base, Path(path)], img_dir, where)
        items.append(Item(id=f"logicvista:{lid}", task="logicvista", prompt=question, answer=answer,
                          answer_type=answer_type, category="v2r" if image else "text", image=image, meta=meta))
    _warn_skipped(f"LogicVista {split}", skipped)
    return items


LOADERS: dict[str, Callable[..., list[Item]]] = {
    "mathvista": load_mathvista, "math500": load_math500, "gsm8k": load_gsm8k,
    "mathverse": load_mathverse, "mathvision": load_mathvision, "logicvista": load_logicvista,
}


def load_dataset_items(key: str, path: str | Path, *, prompts: dict[str, str] | None = None,
                       **kwargs: Any) -> list[Item]:
    """Items of dataset `key` (a DATASETS key) from a dataset folder or data file. Keyword arguments the loader
    does not take are ignored. prompts: prompt mode per dataset key ({"mathvista": "question", "mathverse":
    "query_wo"}; see PROMPT_MODES); the entry of this dataset is passed as the loader's `prompt`."""
    spec = _spec(key)
    loader = LOADERS[spec.key]
    accepted = inspect.signature(loader).parameters
    if prompts and spec.key in prompts:
        kwargs = {**kwargs, "prompt": prompts[spec.key]}
    return loader(path, **{k: v for k, v in kwargs.items() if k in accepted})


# --------------------------------------------------------------------------- deterministic subsampling


def subsample_indices(pool_size: int, n: int | None, seed: int) -> list[int]:
    """Sorted indices of n distinct pool positions: RandomState(seed).choice(pool_size, n, replace=False);
    all positions when n is None or n >= pool_size."""
    if n is None or n >= pool_size:
        return list(range(pool_size))
    if n < 0:
        raise FrankenscopeError(f"subsample size must be >= 0, got {n}")
    return sorted(int(i) for i in np.random.RandomState(seed).choice(pool_size, size=n, replace=False))


def split_file_name(name: str, n: int | None, seed: int) -> str:
    return f"{name}_seed{seed}_n{'all' if n is None else n}.json"


def subsample(items: list[Item], n: int | None, seed: int, split_file: str | Path | None = None,
              name: str = "items") -> list[Item]:
    """n items drawn deterministically (see `subsample_indices`), in pool order.

    split_file: when it exists, its ids are used (and must all be in `items`); otherwise the draw is
    written there as JSON {kind, schema_version, name, seed, n, pool_size, pool_sha256, ids}.
    """
    by_id = {it.id: it for it in items}
    if len(by_id) != len(items):
        raise FrankenscopeError(f"{name}: item ids are not unique")
    if split_file is not None and Path(split_file).is_file():
        try:
            doc = json.loads(Path(split_file).read_text(encoding="utf-8"))
            ids = [str(i) for i in doc["ids"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FrankenscopeError(f"{split_file}: not a split file ({e}); delete it to redraw") from e
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise FrankenscopeError(f"{split_file}: {len(missing)} id(s) are not in the data (first: {missing[:3]}); "
                                    "the data changed since the split was drawn; delete the file to redraw")
        return [by_id[i] for i in ids]
    chosen = [items[i] for i in subsample_indices(len(items), n, seed)]
    if split_file is not None:
        pool_hash = hashlib.sha256(json.dumps([it.id for it in items]).encode()).hexdigest()
        write_json_atomic(split_file, {"kind": "frankenscope-split", "schema_version": SPLIT_SCHEMA_VERSION,
                                       "name": name, "seed": seed, "n": n, "pool_size": len(items),
                                       "pool_sha256": pool_hash, "ids": [it.id for it in chosen]})
    return chosen
