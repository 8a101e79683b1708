"""Small fixture folders in the published layouts of the paper's benchmarks (3-8 items each).

Every writer takes a root folder, writes the dataset under its usual folder name there (MathVista/,
MathVerse/, MathVision/, LogicVista/, MATH-500/, gsm8k/) and returns that dataset folder; `write_data_root`
writes all six in one layout variant. The records are invented, but their fields, file names, prompt
templates (MathVista's hint `query`, MathVerse's `query_wo` / `query_cot`) and quirks follow the releases:

- MathVista testmini: "json" = GitHub data/testmini.json (object keyed by pid, no `query`, `images/<pid>.jpg`),
  "parquet" = Hugging Face data/testmini-00000-of-00001.parquet (`decoded_image` bytes, `query` field);
- MathVerse testmini: "json" = testmini.json (a list) + images/, "parquet" = the root testmini.parquet (`image`
  bytes); five problem versions of one multi-choice problem (Vision Only has `question: ""`, its choices only
  in `question_for_eval`), free-form answers with a unit, in `$...$`, and a Vision Only free-form item;
- MathVision: "jsonl" = data/testmini.jsonl (and data/test.jsonl) with `<image1>` placeholders and images/
  paths, "parquet" = data/testmini-*.parquet with `decoded_image`;
- LogicVista: data/dataset.json keyed by id, `imagename`, current fields (broad_capability,
  specific_capability, reasoning, skill), multi-letter answers ("C, A"), a number answer, inline options, and
  one record with an empty question and answer (the loader skips it: SKIPPED);
- MATH-500: test.jsonl; GSM8K: "jsonl" = test.jsonl, "parquet" = main/test-00000-of-00001.parquet, answers
  ending in "#### N" with thousands commas.

GOLD[key][item id] is each loadable item's answer as a solver would write it (an option letter where the
prompt asks for one, the number with its unit where the data has one); ACCEPTED[key][item id] lists further
forms that must also grade right (the option's value, the number without its unit, letters in another
order); WRONG[key][item id] is an answer that must grade wrong (another option, another number).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

FOLDERS = {"mathvista": "MathVista", "mathverse": "MathVerse", "mathvision": "MathVision",
           "logicvista": "LogicVista", "math500": "MATH-500", "gsm8k": "gsm8k"}
#: Layout variants each writer accepts (the first is the default).
LAYOUTS = {"mathvista": ("json", "parquet"), "mathverse": ("json", "parquet"), "mathvision": ("jsonl", "parquet"),
           "logicvista": ("json",), "math500": ("jsonl",), "gsm8k": ("jsonl", "parquet")}


def _image_bytes(seed: int, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (8 + seed % 5, 6 + seed % 3), ((37 * seed) % 256, (91 * seed) % 256, 120))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_image_bytes(seed, "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"))


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _struct(seed: int, name: str, fmt: str = "PNG") -> dict[str, Any]:
    """An image as the Hugging Face `Image` feature stores it in parquet."""
    return {"bytes": _image_bytes(seed, fmt), "path": name}


# --------------------------------------------------------------------------- MathVista

_MV_HINT_INT = ("Hint: Please answer the question requiring an integer answer and provide the final value, "
                "e.g., 1, 2, 3, at the end.")
_MV_HINT_F1 = ("Hint: Please answer the question requiring a floating-point number with one decimal place and "
               "provide the final value, e.g., 1.2, 1.3, 1.4, at the end.")
_MV_HINT_F2 = ("Hint: Please answer the question requiring a floating-point number with two decimal places and "
               "provide the final value, e.g., 1.23, 1.34, 1.45, at the end.")
_MV_HINT_MC = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
_MV_HINT_LIST = ("Hint: Please answer the question requiring a Python list as an answer and provide the final "
                 "list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.")


def _mv_meta(category: str, context: str, task: str, source: str) -> dict[str, Any]:
    return {"split": "testmini", "language": "english", "img_width": 12, "img_height": 8, "source": source,
            "category": category, "task": task, "context": context, "grade": "high school",
            "skills": ["arithmetic reasoning"]}


# (record without `query`, the `query` text of the Hugging Face release, written out literally)
MATHVISTA_RECORDS: list[tuple[dict[str, Any], str]] = [
    ({"question": "A block slides 3.0 m in 2.5 s.\r\n\r\nWhat is its mean speed in m/s?", "image": "images/1.jpg",
      "choices": None, "unit": None, "precision": 1, "answer": "1.2", "question_type": "free_form",
      "answer_type": "float", "pid": "1",
      "metadata": _mv_meta("math-targeted-vqa", "scientific figure", "textbook question answering", "SciBench")},
     _MV_HINT_F1 + "\nQuestion: A block slides 3.0 m in 2.5 s.\r\n\r\nWhat is its mean speed in m/s?"),
    ({"question": "what is the total volume of the jug?", "image": "images/2.jpg", "choices": None, "unit": "g",
      "precision": None, "answer": "1000", "question_type": "free_form", "answer_type": "integer", "pid": "2",
      "metadata": _mv_meta("general-vqa", "natural image", "visual question answering", "TextVQA")},
     _MV_HINT_INT + "\nQuestion: what is the total volume of the jug? (Unit: g)"),
    ({"question": "As shown in the figure, angle A = 110°, then angle BOC = ()", "image": "images/3.jpg",
      "choices": ["135°", "140°", "145°", "150°"], "unit": None, "precision": None, "answer": "145°",
      "question_type": "multi_choice", "answer_type": "text", "pid": "3",
      "metadata": _mv_meta("math-targeted-vqa", "geometry diagram", "geometry problem solving", "GeoQA+")},
     _MV_HINT_MC + "\nQuestion: As shown in the figure, angle A = 110°, then angle BOC = ()\n"
                   "Choices:\n(A) 135°\n(B) 140°\n(C) 145°\n(D) 150°"),
    ({"question": "Are there fewer metal planes than rubber objects?", "image": "images/4.jpg",
      "choices": ["Yes", "No"], "unit": None, "precision": None, "answer": "Yes", "question_type": "multi_choice",
      "answer_type": "text", "pid": "4",
      "metadata": _mv_meta("general-vqa", "synthetic scene", "visual question answering", "Super-CLEVR")},
     _MV_HINT_MC + "\nQuestion: Are there fewer metal planes than rubber objects?\nChoices:\n(A) Yes\n(B) No"),
    ({"question": "Between which two years does the line graph reach its peak?", "image": "images/5.jpg",
      "choices": None, "unit": None, "precision": None, "answer": "[2007, 2008]", "question_type": "free_form",
      "answer_type": "list", "pid": "5",
      "metadata": _mv_meta("general-vqa", "line plot", "figure question answering", "ChartQA")},
     _MV_HINT_LIST + "\nQuestion: Between which two years does the line graph reach its peak?"),
    ({"question": "How much money does Ruth need to buy a dish and a scoop?", "image": "images/6.jpg",
      "choices": None, "unit": "$", "precision": 2, "answer": "1.45", "question_type": "free_form",
      "answer_type": "float", "pid": "6",
      "metadata": _mv_meta("math-targeted-vqa", "table", "math word problem", "TabMWP")},
     _MV_HINT_F2 + "\nQuestion: How much money does Ruth need to buy a dish and a scoop? (Unit: $)"),
    ({"question": "Based on the food web, what would happen if the number of roach decreased?",
      "image": "images/50.jpg",
      "choices": ["The population of steelheads would increase.", "The population of insects would decrease."],
      "unit": None, "precision": None, "answer": "The population of insects would decrease.",
      "question_type": "multi_choice", "answer_type": "text", "pid": "50",
      "metadata": _mv_meta("general-vqa", "scientific figure", "textbook question answering", "AI2D")},
     _MV_HINT_MC + "\nQuestion: Based on the food web, what would happen if the number of roach decreased?\n"
                   "Choices:\n(A) The population of steelheads would increase.\n"
                   "(B) The population of insects would decrease."),
]


def write_mathvista(root: str | Path, layout: str = "json") -> Path:
    """MathVista testmini. "json": testmini.json keyed by pid + images/<pid>.jpg; "parquet":
    data/testmini-00000-of-00001.parquet with `query` and `decoded_image` (the `image` path kept)."""
    folder = Path(root) / FOLDERS["mathvista"]
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "json":
        doc = {}
        for k, (rec, _) in enumerate(MATHVISTA_RECORDS):
            doc[rec["pid"]] = rec
            _write_image(folder / rec["image"], k + 1)
        (folder / "testmini.json").write_text(json.dumps(doc, indent=4), encoding="utf-8")
    elif layout == "parquet":
        rows = []
        for k, (rec, query) in enumerate(MATHVISTA_RECORDS):
            row = {**rec, "decoded_image": _struct(k + 1, Path(rec["image"]).name, "JPEG"), "query": query,
                   "precision": None if rec["precision"] is None else float(rec["precision"])}
            rows.append(row)
        _write_parquet(folder / "data" / "testmini-00000-of-00001.parquet", rows)
    else:
        raise ValueError(f"MathVista layout {layout!r}; choose json or parquet")
    return folder


def write_mathvista_captions(path: str | Path) -> Path:
    """MathVista's caption file format ({"model", "url", "date", "texts": {pid: caption}}, as
    data/texts/captions_bard.json), captioning the fixture's math-targeted pids and one pid left empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"model": "bard", "url": "https://bard.google.com/", "date": "2023-09-01",
           "texts": {"1": "A block on a track with a ruler marked 0 to 3 m.",
                     "3": "A triangle ABC with its two angle bisectors meeting at O; angle A is 110 degrees.",
                     "6": "A price list: dish $0.95, scoop $0.50.", "50": ""}}
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- MathVerse

_VERSE_MC_WO = "Please directly answer the question and provide the correct option letter, e.g., A, B, C, D."
_VERSE_MC_COT = ("Please first conduct reasoning, and then answer the question and provide the correct option "
                 "letter, e.g., A, B, C, D, at the end.")
_VERSE_FF_WO = "Please directly answer the question and provide the final value, e.g., 1, 2.5, 300."
_VERSE_FF_COT = ("Please first conduct reasoning, and then answer the question and provide the final value, "
                 "e.g., 1, 2.5, 300, at the end.")
_VERSE_IMG = "According to the question shown in the image, please"

_P1_FULL = ("As shown in the figure, in triangle ABC, angle A = 80.0, angle B = 60.0, DE parallel BC, "
            "then the size of angle CED is ()\nChoices:\nA:40°\nB:60°\nC:120°\nD:140°")
_P1_LITE = "As shown in the figure, DE parallel BC, then the size of angle CED is ()\nChoices:\nA:40°\nB:60°\nC:120°\nD:140°"
_P1_DOM = "then the size of angle CED is ()\nChoices:\nA:40°\nB:60°\nC:120°\nD:140°"
_P2_FULL = "In the right triangle ABC, AB = 13 cm and AC = 5 cm. Find the length of BC."
_P3_FULL = "The line passes through (0, 0) and (2, 5). Find its slope."
_P4_FULL = "In the circle O, angle AOB = 120°. Find the inscribed angle ACB."


def _verse(sid: str, pid: str, version: str, question: str, answer: str, mc: bool, full: str,
           subject: str = "plane geometry") -> dict[str, Any]:
    wo, cot = (_VERSE_MC_WO, _VERSE_MC_COT) if mc else (_VERSE_FF_WO, _VERSE_FF_COT)
    if version == "Vision Only":
        query_wo = f"{_VERSE_IMG} {wo[0].lower()}{wo[1:]}"
        query_cot = f"{_VERSE_IMG} {cot[0].lower()}{cot[1:]}"
    else:
        query_wo, query_cot = f"{wo}\nQuestion: {question}", f"{cot}\nQuestion: {question}"
    return {"sample_index": sid, "problem_index": pid, "problem_version": version, "question": question,
            "image": f"image_{pid}.png", "answer": answer, "question_type": "multi-choice" if mc else "free-form",
            "metadata": {"split": "testmini", "source": "GeoQA", "subject": subject, "subfield": "Angle"},
            "query_wo": query_wo, "query_cot": query_cot, "question_for_eval": full}


MATHVERSE_RECORDS: list[dict[str, Any]] = [
    _verse("1", "1", "Text Dominant", _P1_FULL, "D", True, _P1_FULL),
    _verse("2", "1", "Text Lite", _P1_LITE, "D", True, _P1_FULL),
    _verse("3", "1", "Vision Intensive", _P1_LITE, "D", True, _P1_FULL),
    _verse("4", "1", "Vision Dominant", _P1_DOM, "D", True, _P1_FULL),
    _verse("5", "1", "Vision Only", "", "D", True, _P1_FULL),
    _verse("6", "2", "Text Dominant", _P2_FULL, "12 cm", False, _P2_FULL),
    _verse("7", "3", "Text Lite", _P3_FULL, "$\\frac{5}{2}$", False, _P3_FULL, subject="analytic geometry"),
    _verse("8", "4", "Vision Only", "", "60°", False, _P4_FULL),
]


def write_mathverse(root: str | Path, layout: str = "json") -> Path:
    """MathVerse testmini. "json": testmini.json (a list) + images/image_<problem>.png; "parquet": the root
    testmini.parquet with the image bytes in `image`."""
    folder = Path(root) / FOLDERS["mathverse"]
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "json":
        for rec in MATHVERSE_RECORDS:
            _write_image(folder / "images" / rec["image"], int(rec["problem_index"]))
        (folder / "testmini.json").write_text(json.dumps(MATHVERSE_RECORDS, indent=4), encoding="utf-8")
    elif layout == "parquet":
        rows = [{**rec, "image": _struct(int(rec["problem_index"]), rec["image"])} for rec in MATHVERSE_RECORDS]
        _write_parquet(folder / "testmini.parquet", rows)
    else:
        raise ValueError(f"MathVerse layout {layout!r}; choose json or parquet")
    return folder


# --------------------------------------------------------------------------- MathVision (MATH-V)

MATHVISION_RECORDS: list[dict[str, Any]] = [
    {"id": "1", "question": "<image1>\nHow many dots are on the hidden faces of the dice?",
     "options": ["2", "4", "6", "8", "10"], "image": "images/1.jpg", "answer": "C", "solution": None, "level": 2,
     "subject": "counting"},
    {"id": "2", "question": "The square in <image1> has side 3. What is the length of the path?", "options": [],
     "image": "images/2.jpg", "answer": "12", "solution": "Four sides of 3.", "level": 1,
     "subject": "metric geometry - length"},
    {"id": "3", "question": "<image1> What fraction of the figure is shaded?", "options": [],
     "image": "images/3.jpg", "answer": "$\\frac{1}{2}$", "solution": None, "level": 3,
     "subject": "metric geometry - area"},
    {"id": "4", "question": "Which of the pictures below shows the same cube? <image1>",
     "options": ["A", "B", "C", "D", "E"], "image": "images/4.jpg", "answer": "E", "solution": None, "level": 4,
     "subject": "solid geometry"},
    {"id": "5", "question": "<image1>\nThe bar is 7 units long and is cut in half. How long is each piece?",
     "options": [], "image": "images/5.jpg", "answer": "3.5", "solution": None, "level": 1, "subject": "arithmetic"},
]


def write_mathvision(root: str | Path, layout: str = "jsonl") -> Path:
    """MathVision (MATH-V). "jsonl": data/testmini.jsonl and data/test.jsonl + images/<id>.jpg (paths relative to
    the dataset folder); "parquet": data/testmini-00000-of-00001.parquet with `decoded_image`."""
    folder = Path(root) / FOLDERS["mathvision"]
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "jsonl":
        for k, rec in enumerate(MATHVISION_RECORDS):
            _write_image(folder / rec["image"], 20 + k)
        text = "\n".join(json.dumps(r) for r in MATHVISION_RECORDS) + "\n"
        (folder / "data").mkdir(exist_ok=True)
        (folder / "data" / "testmini.jsonl").write_text(text, encoding="utf-8")
        (folder / "data" / "test.jsonl").write_text(text, encoding="utf-8")
    elif layout == "parquet":
        rows = [{**rec, "decoded_image": _struct(20 + k, Path(rec["image"]).name, "JPEG")}
                for k, rec in enumerate(MATHVISION_RECORDS)]
        _write_parquet(folder / "data" / "testmini-00000-of-00001.parquet", rows)
    else:
        raise ValueError(f"MathVision layout {layout!r}; choose jsonl or parquet")
    return folder


# --------------------------------------------------------------------------- LogicVista


def _logic(name: str, question: str, answer: str, skill: str, broad: str, specific: str,
           reasoning: str) -> dict[str, Any]:
    return {"imagename": f"{name}.png", "question": question, "answer": answer, "reasoning": reasoning,
            "skill": [skill], "broad_capability": [broad], "specific_capability": [specific],
            "imagesource": "aptitudetests", "sourcelink": "https://example.org/logic", "liscenced": "false"}


LOGICVISTA_RECORDS: dict[str, dict[str, Any]] = {
    "v1_0": _logic("v1_0", "What choice (A, B, C, or D) should be in place of the question mark?", "C",
                   "inductive", "diagram", "pattern sequence", "The square moves one step right each time."),
    "v1_1": _logic("v1_1", "Which choices in the image (A-D) belong to the green category?", "C, A",
                   "inductive", "diagram", "pattern rule following", "Diagrams A and C have an X in the centre."),
    "v1_5": _logic("v1_5", "What options (A, B, C, or D) follow this same rule?", "B, D", "inductive",
                   "diagram and ocr", "pattern rule following", "Blue triangles in the two bottom lines."),
    "v1_19": _logic("v1_19", "How many triangles will be in the 6th shape? Select answers from A-D. \n"
                             " A) 10 B) 12 C) 14 D) 16", "C", "inductive", "diagram", "pattern sequence",
                    "Two more triangles each step: 14."),
    "v1_20": _logic("v1_20", "Which is the correct answer according to the image? Select from 1-5", "3",
                    "deductive", "ocr", "logical deduction", "Only statement 3 follows."),
    "v1_77": _logic("v1_77", "", "", "spatial", "diagram", "3d shapes", ""),
}
#: ids the loaders must skip (empty question and answer), per dataset key.
SKIPPED = {"logicvista": ["logicvista:v1_77"]}


def write_logicvista(root: str | Path, layout: str = "json") -> Path:
    """LogicVista: data/dataset.json keyed by id + data/images/<imagename>."""
    if layout != "json":
        raise ValueError(f"LogicVista layout {layout!r}; only json")
    folder = Path(root) / FOLDERS["logicvista"]
    data = folder / "data"
    for k, rec in enumerate(LOGICVISTA_RECORDS.values()):
        _write_image(data / "images" / rec["imagename"], 40 + k)
    (data / "dataset.json").write_text(json.dumps(LOGICVISTA_RECORDS, indent=4), encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- MATH-500 and GSM8K

MATH500_RECORDS: list[dict[str, Any]] = [
    {"problem": "What is $2 + 3 \\cdot 2 + 2$?", "solution": "$2 + 6 + 2 = \\boxed{10}$.", "answer": "10",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Solve $3x = 14$.", "solution": "$x = \\boxed{\\frac{14}{3}}$.", "answer": "\\frac{14}{3}",
     "subject": "Algebra", "level": 2, "unique_id": "test/algebra/7.json"},
    {"problem": "Simplify $\\sqrt{117}$.", "solution": "$\\sqrt{9 \\cdot 13} = \\boxed{3\\sqrt{13}}$.",
     "answer": "3\\sqrt{13}", "subject": "Prealgebra", "level": 3, "unique_id": "test/prealgebra/42.json"},
    {"problem": "How many positive divisors does 12 have?", "solution": "1, 2, 3, 4, 6, 12: $\\boxed{6}$.",
     "answer": "6", "subject": "Number Theory", "level": 2, "unique_id": "test/number_theory/5.json"},
]

GSM8K_RECORDS: list[dict[str, Any]] = [
    {"question": "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the rest for $2 each. "
                 "How much does she make every day?",
     "answer": "16 - 3 - 4 = <<16-3-4=9>>9 eggs are left.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"},
    {"question": "A shop sells 3 boxes of 411 pens. How many pens is that?",
     "answer": "3 * 411 = <<3*411=1233>>1233 pens.\n#### 1,233"},
    {"question": "A house costs $80,000 and repairs add $50,000. It then sells for 150% more than its cost. "
                 "How much profit is made?",
     "answer": "The cost is 80,000 + 50,000 = $<<80000+50000=130000>>130,000.\n#### 70,000"},
]


def write_math500(root: str | Path, layout: str = "jsonl") -> Path:
    """MATH-500: test.jsonl (HuggingFaceH4/MATH-500)."""
    if layout != "jsonl":
        raise ValueError(f"MATH-500 layout {layout!r}; only jsonl")
    folder = Path(root) / FOLDERS["math500"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in MATH500_RECORDS) + "\n", encoding="utf-8")
    return folder


def write_gsm8k(root: str | Path, layout: str = "jsonl") -> Path:
    """GSM8K: "jsonl" = test.jsonl (the GitHub release), "parquet" = main/test-00000-of-00001.parquet (openai/gsm8k)."""
    folder = Path(root) / FOLDERS["gsm8k"]
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "jsonl":
        (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in GSM8K_RECORDS) + "\n", encoding="utf-8")
    elif layout == "parquet":
        _write_parquet(folder / "main" / "test-00000-of-00001.parquet", GSM8K_RECORDS)
    else:
        raise ValueError(f"GSM8K layout {layout!r}; choose jsonl or parquet")
    return folder


WRITERS = {"mathvista": write_mathvista, "mathverse": write_mathverse, "mathvision": write_mathvision,
           "logicvista": write_logicvista, "math500": write_math500, "gsm8k": write_gsm8k}


def write_dataset(key: str, root: str | Path, layout: str | None = None) -> Path:
    """Write dataset `key` (a FOLDERS key) in `layout` (default: its first in LAYOUTS) under root; its folder."""
    return WRITERS[key](root, layout or LAYOUTS[key][0])


def write_data_root(root: str | Path, layout: str = "json") -> dict[str, Path]:
    """All six datasets under root, for the paper suite: layout "json" writes the JSON/JSONL variants,
    "parquet" the parquet variants (LogicVista and MATH-500 have one layout each). {key: dataset folder}."""
    if layout not in ("json", "parquet"):
        raise ValueError(f"layout {layout!r}; choose json or parquet")
    out = {}
    for key, variants in LAYOUTS.items():
        chosen = variants[-1] if layout == "parquet" else variants[0]
        out[key] = write_dataset(key, root, chosen)
    return out


# --------------------------------------------------------------------------- gold answers per loaded item

GOLD: dict[str, dict[str, str]] = {
    "mathvista": {"mathvista:1": "1.2", "mathvista:2": "1000", "mathvista:3": "C", "mathvista:4": "A",
                  "mathvista:5": "[2007, 2008]", "mathvista:6": "1.45", "mathvista:50": "B"},
    "mathverse": {"mathverse:1": "D", "mathverse:2": "D", "mathverse:3": "D", "mathverse:4": "D",
                  "mathverse:5": "D", "mathverse:6": "12 cm", "mathverse:7": "\\frac{5}{2}", "mathverse:8": "60°"},
    "mathvision": {"mathvision:1": "C", "mathvision:2": "12", "mathvision:3": "\\frac{1}{2}", "mathvision:4": "E",
                   "mathvision:5": "3.5"},
    "logicvista": {"logicvista:v1_0": "C", "logicvista:v1_1": "C, A", "logicvista:v1_5": "B, D",
                   "logicvista:v1_19": "C", "logicvista:v1_20": "3"},
    "math500": {"math500:test/prealgebra/1.json": "10", "math500:test/algebra/7.json": "\\frac{14}{3}",
                "math500:test/prealgebra/42.json": "3\\sqrt{13}", "math500:test/number_theory/5.json": "6"},
    "gsm8k": {"gsm8k:0": "18", "gsm8k:1": "1,233", "gsm8k:2": "70,000"},
}

ACCEPTED: dict[str, dict[str, list[str]]] = {
    "mathvista": {"mathvista:3": ["145°", "(C) 145°"], "mathvista:4": ["Yes"], "mathvista:1": ["1.20"],
                  "mathvista:2": ["1000 g"], "mathvista:6": ["$1.45"],
                  "mathvista:50": ["The population of insects would decrease"]},
    "mathverse": {"mathverse:1": ["140°"], "mathverse:5": ["140°"], "mathverse:6": ["12"], "mathverse:7": ["2.5"],
                  "mathverse:8": ["60"]},
    "mathvision": {"mathvision:1": ["6"], "mathvision:3": ["0.5"]},
    "logicvista": {"logicvista:v1_1": ["A, C", "A and C"], "logicvista:v1_5": ["D, B"], "logicvista:v1_19": ["14"]},
    "math500": {"math500:test/algebra/7.json": ["14/3"]},
    "gsm8k": {"gsm8k:1": ["1233"], "gsm8k:2": ["70000"]},
}

WRONG: dict[str, dict[str, str]] = {
    "mathvista": {"mathvista:1": "2.4", "mathvista:2": "500", "mathvista:3": "A", "mathvista:4": "B",
                  "mathvista:5": "[2006, 2007]", "mathvista:6": "2.45", "mathvista:50": "A"},
    "mathverse": {"mathverse:1": "A", "mathverse:2": "B", "mathverse:3": "C", "mathverse:4": "A",
                  "mathverse:5": "B", "mathverse:6": "13 cm", "mathverse:7": "\\frac{2}{5}", "mathverse:8": "120°"},
    "mathvision": {"mathvision:1": "A", "mathvision:2": "9", "mathvision:3": "\\frac{1}{3}", "mathvision:4": "D",
                   "mathvision:5": "7"},
    "logicvista": {"logicvista:v1_0": "D", "logicvista:v1_1": "A", "logicvista:v1_5": "B, C",
                   "logicvista:v1_19": "B", "logicvista:v1_20": "4"},
    "math500": {"math500:test/prealgebra/1.json": "12", "math500:test/algebra/7.json": "\\frac{3}{14}",
                "math500:test/prealgebra/42.json": "3\\sqrt{11}", "math500:test/number_theory/5.json": "4"},
    "gsm8k": {"gsm8k:0": "16", "gsm8k:1": "1,223", "gsm8k:2": "130,000"},
}
