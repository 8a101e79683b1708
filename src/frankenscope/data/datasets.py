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

- MathVista (AI4Math/MathVista, split testmini): pid, question, image, decoded_image, choices, unit,
  precision, answer, question_type (multi_choice | free_form), answer_type (integer | float | text |
  list), query, metadata{category: general-vqa | math-targeted-vqa, context, task, ...}. The prompt is
  `query` (it carries MathVista's answer-format hint) unless use_query=False, which gives `question`
  plus a "Choices:" block as in the reference code. category: general-vqa -> "perception" (M_vis),
  math-targeted-vqa -> "v2r" (M_v2r). Multiple choice -> answer_type "choice" with meta["choices"]
  (gold = option text); integer/float -> "number" with meta["precision"]; text/list -> "text".
- MATH-500 (HuggingFaceH4/MATH-500, test.jsonl): problem, solution, answer, subject, level, unique_id.
  Text only, category "text"; answer_type "number" when the answer is a plain number, else "text".
- GSM8K (openai/gsm8k, config main): question, answer ending in "#### N". id = row index; gold = N
  without thousands commas; the worked solution goes to Item.solution.
- MathVerse (AI4Math/MathVerse, testmini): sample_index, problem_index, problem_version, question
  (choices are inside the text), image, answer (a letter for multi-choice), question_type
  (multi-choice | free-form), metadata, query_wo, query_cot, question_for_eval. Prompt = `question`.
- MathVision (MathLLMs/MathVision, testmini or test): id, question (may contain "<image1>"
  placeholders, removed), options (list, empty for free-form), image, decoded_image, answer (a letter
  when there are options), solution, level, subject. Options are appended as a "Choices:" block.
- LogicVista (github.com/Yijia-Xiao/LogicVista, data/dataset.json; or a jsonl/parquet export): an
  object keyed by id or a list of records with question, answer (option letter(s)) and the image
  file name in imagename | image | image_path; images are looked up next to the data file and in an
  images/ folder. A multi-letter answer ("A, C") becomes a "text" item with the letters sorted.

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
        {"testmini": ("testmini.json", "testmini.jsonl", "testmini/testmini-*.parquet", "testmini-*.parquet",
                      "data/testmini-*.parquet")}, "testmini"),
    "mathvision": DatasetSpec(
        "mathvision", "MathVision", ("MathLLMs/MathVision", None), ("MathVision", "mathvision", "MATH-V", "math-v"),
        {s: (f"{s}.jsonl", f"data/{s}.jsonl", f"{s}.json", f"data/{s}-*.parquet", f"{s}-*.parquet")
         for s in ("testmini", "test")}, "testmini"),
    "logicvista": DatasetSpec(
        "logicvista", "LogicVista", ("lscpku/LogicVista", None), ("LogicVista", "logicvista"),
        {"test": ("dataset.json", "data/dataset.json", "test.jsonl", "dataset.jsonl", "data/test-*.parquet",
                  "test-*.parquet")}, "test"),
}
#: The four benchmarks whose mean is the paper's "average benchmark accuracy" (paper-notes.md §2.3).
PAPER_BENCHMARKS = ("mathvista", "mathverse", "mathvision", "logicvista")


# --------------------------------------------------------------------------- locating and reading files


def _hub_hint(spec: DatasetSpec, folder: Path) -> str:
    repo, config = spec.hub
    cfg = f" (config {config})" if config else ""
    return (f"On a machine with network: `huggingface-cli download {repo} --repo-type dataset --local-dir {folder}`"
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
            tried += [base / p, base / "images" / p.name]
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
    for n in names:
        if row.get(n) is None:
            raise FrankenscopeError(f"{where}: missing field {n!r} (fields present: {', '.join(sorted(row))})")


# --------------------------------------------------------------------------- per-dataset converters


def load_mathvista(path: str | Path, *, split: str = "testmini", use_query: bool = True,
                   image_dir: str | Path | None = None, from_hub: bool = False) -> list[Item]:
    """MathVista items (see the module docstring for fields and mapping)."""
    rows, base = _records(path, "mathvista", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "mathvista"
    items = []
    for i, row in enumerate(rows):
        pid = str(_first(row, "pid", "_key") or i)
        where = f"MathVista {split} pid {pid}"
        _required(row, ("question", "answer"), where)
        meta_in = row.get("metadata") or {}
        category = meta_in.get("category")
        choices = [str(c) for c in (row.get("choices") or [])]
        mc = row.get("question_type") == "multi_choice" and bool(choices)
        if use_query and row.get("query"):
            prompt = str(row["query"])
        else:
            prompt = _choices_block(str(row["question"]), choices) if mc else str(row["question"])
        if mc:
            answer_type = "choice"
        elif row.get("answer_type") in ("integer", "float"):
            answer_type = "number"
        else:
            answer_type = "text"
        meta = {"dataset": "mathvista", "source_id": pid, "question_type": row.get("question_type"),
                "mathvista_answer_type": row.get("answer_type"), "unit": row.get("unit"),
                "metadata": meta_in, "question": str(row["question"])}
        if choices:
            meta["choices"] = choices
        if row.get("precision") is not None and answer_type == "number":
            meta["precision"] = row["precision"]
        image = _image_path(_first(row, "decoded_image", "image"), [base, Path(path)], img_dir, where)
        items.append(Item(id=f"mathvista:{pid}", task="mathvista",
                          prompt=prompt, answer=str(row["answer"]), answer_type=answer_type,
                          category={"general-vqa": "perception", "math-targeted-vqa": "v2r"}.get(category, "v2r"),
                          image=image, meta=meta))
    return items


def load_math500(path: str | Path, *, split: str = "test", from_hub: bool = False) -> list[Item]:
    rows, _ = _records(path, "math500", split, from_hub)
    items = []
    for i, row in enumerate(rows):
        uid = str(_first(row, "unique_id", "id", "_key") or i)
        _required(row, ("problem", "answer"), f"MATH-500 {uid}")
        answer = str(row["answer"])
        items.append(Item(id=f"math500:{uid}", task="math500", prompt=str(row["problem"]), answer=answer,
                          answer_type=_number_or_text(answer), category="text", image=None,
                          solution=row.get("solution"),
                          meta={"dataset": "math500", "source_id": uid, "subject": row.get("subject"),
                                "level": row.get("level")}))
    return items


def load_gsm8k(path: str | Path, *, split: str = "test", from_hub: bool = False) -> list[Item]:
    rows, _ = _records(path, "gsm8k", split, from_hub)
    items = []
    for i, row in enumerate(rows):
        where = f"GSM8K {split} row {i}"
        _required(row, ("question", "answer"), where)
        solution, sep, final = str(row["answer"]).rpartition("####")
        if not sep:
            raise FrankenscopeError(f"{where}: answer has no '#### N' final line")
        gold = final.strip().replace(",", "")
        items.append(Item(id=f"gsm8k:{i}", task="gsm8k", prompt=str(row["question"]), answer=gold,
                          answer_type=_number_or_text(gold), category="text", solution=solution.strip(),
                          meta={"dataset": "gsm8k", "source_id": str(i)}))
    return items


def load_mathverse(path: str | Path, *, split: str = "testmini", image_dir: str | Path | None = None,
                   from_hub: bool = False) -> list[Item]:
    rows, base = _records(path, "mathverse", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "mathverse"
    items = []
    for i, row in enumerate(rows):
        sid = str(_first(row, "sample_index", "id", "_key") or i)
        where = f"MathVerse {split} sample {sid}"
        _required(row, ("question", "answer"), where)
        answer = str(row["answer"]).strip()
        mc = str(row.get("question_type", "")).replace("_", "-") == "multi-choice"
        image = _image_path(_first(row, "decoded_image", "image"), [base, Path(path)], img_dir, where)
        items.append(Item(id=f"mathverse:{sid}", task="mathverse", prompt=str(row["question"]), answer=answer,
                          answer_type="choice" if mc else _number_or_text(answer),
                          category="v2r" if image else "text", image=image,
                          meta={"dataset": "mathverse", "source_id": sid,
                                "problem_index": row.get("problem_index"),
                                "problem_version": row.get("problem_version"),
                                "question_type": row.get("question_type"), "metadata": row.get("metadata") or {}}))
    return items


def load_mathvision(path: str | Path, *, split: str = "testmini", image_dir: str | Path | None = None,
                    from_hub: bool = False) -> list[Item]:
    rows, base = _records(path, "mathvision", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "mathvision"
    items = []
    for i, row in enumerate(rows):
        mid = str(_first(row, "id", "_key") or i)
        where = f"MathVision {split} id {mid}"
        _required(row, ("question", "answer"), where)
        options = [str(o) for o in (row.get("options") or [])]
        question = _IMAGE_PLACEHOLDER.sub("", str(row["question"])).strip()
        answer = str(row["answer"]).strip()
        meta: dict[str, Any] = {"dataset": "mathvision", "source_id": mid, "level": row.get("level"),
                                "subject": row.get("subject")}
        if options:
            meta["choices"] = options
        image = _image_path(_first(row, "decoded_image", "image"), [base, Path(path)], img_dir, where)
        items.append(Item(id=f"mathvision:{mid}", task="mathvision",
                          prompt=_choices_block(question, options) if options else question, answer=answer,
                          answer_type="choice" if options else _number_or_text(answer),
                          category="v2r" if image else "text", image=image, solution=row.get("solution"),
                          meta=meta))
    return items


def load_logicvista(path: str | Path, *, split: str = "test", image_dir: str | Path | None = None,
                    from_hub: bool = False) -> list[Item]:
    rows, base = _records(path, "logicvista", split, from_hub)
    img_dir = Path(image_dir) if image_dir else default_image_dir() / "logicvista"
    items = []
    for i, row in enumerate(rows):
        image_field = _first(row, "decoded_image", "image", "imagename", "image_path")
        lid = str(_first(row, "id", "question_id", "_key") or
                  (Path(image_field).stem if isinstance(image_field, str) else i))
        where = f"LogicVista id {lid}"
        _required(row, ("question", "answer"), where)
        letters = re.findall(r"\b[A-H]\b", str(row["answer"]).upper())
        single = len(letters) == 1
        answer = letters[0] if single else ", ".join(sorted(set(letters))) or str(row["answer"]).strip()
        image = _image_path(image_field, [base, Path(path)], img_dir, where)
        items.append(Item(id=f"logicvista:{lid}", task="logicvista", prompt=str(row["question"]), answer=answer,
                          answer_type="choice" if single else "text", category="v2r" if image else "text",
                          image=image,
                          meta={"dataset": "logicvista", "source_id": lid,
                                **{k: row[k] for k in ("skill", "reasoning_type", "reasoningtype", "capability")
                                   if k in row}}))
    return items


LOADERS: dict[str, Callable[..., list[Item]]] = {
    "mathvista": load_mathvista, "math500": load_math500, "gsm8k": load_gsm8k,
    "mathverse": load_mathverse, "mathvision": load_mathvision, "logicvista": load_logicvista,
}


def load_dataset_items(key: str, path: str | Path, **kwargs: Any) -> list[Item]:
    """Items of dataset `key` (a DATASETS key) from a dataset folder or data file."""
    spec = _spec(key)
    loader = LOADERS[spec.key]
    accepted = inspect.signature(loader).parameters
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
