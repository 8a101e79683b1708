"""The dataset loaders on fixtures in each benchmark's published layout (tests/real_layouts.py)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

import real_layouts as rl  # tests/real_layouts.py (pytest puts tests/ on sys.path)
from frankenscope.data import datasets as ds
from frankenscope.data.datasets import (
    DATASETS,
    load_dataset_items,
    load_logicvista,
    load_math500,
    load_mathverse,
    load_mathvista,
)
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError

CASES = [(key, layout) for key, layouts in rl.LAYOUTS.items() for layout in layouts]


def _load(key: str, folder: Path, tmp: Path, **kw) -> tuple[list[Item], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = load_dataset_items(key, folder, image_dir=tmp / "cache", **kw)
    return items, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize(("key", "layout"), CASES, ids=[f"{k}-{v}" for k, v in CASES])
def test_fixture_loads_with_count_prompts_and_fields(tmp_path: Path, key: str, layout: str) -> None:
    folder = rl.write_dataset(key, tmp_path, layout)
    items, warned = _load(key, folder, tmp_path)
    assert [it.id for it in items] == list(rl.GOLD[key])  # file order, every loadable item, nothing else
    assert all(it.prompt.strip() and it.answer.strip() for it in items)
    assert all(it.meta["dataset"] == key and it.meta["source_id"] == it.id.split(":", 1)[1] for it in items)
    for it in items:
        if key in ("math500", "gsm8k"):
            assert it.image is None and it.category == "text"
        else:
            assert it.image and Path(it.image).is_file()
    skipped = rl.SKIPPED.get(key, [])
    assert len(warned) == (1 if skipped else 0)
    # the files are found in this layout; without them the hint names the command the pinned hub installs
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(FrankenscopeError) as e:
        load_dataset_items(key, folder)
    assert f"hf download {DATASETS[key].hub[0]} --repo-type dataset --local-dir {folder}" in str(e.value)
    assert "huggingface-cli" not in str(e.value)


# --------------------------------------------------------------------------- MathVista


@pytest.fixture(scope="module")
def mathvista(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mathvista")
    return {layout: rl.write_mathvista(root / layout, layout) for layout in ("json", "parquet")}


def test_mathvista_layouts_give_one_prompt_per_mode(mathvista: dict[str, Path], tmp_path: Path) -> None:
    for mode in ds.MATHVISTA_PROMPTS:
        by_layout = {lay: load_mathvista(folder, prompt=mode, image_dir=tmp_path) for lay, folder in mathvista.items()}
        assert [it.prompt for it in by_layout["json"]] == [it.prompt for it in by_layout["parquet"]]
        assert [it.answer for it in by_layout["json"]] == [it.answer for it in by_layout["parquet"]]
        assert all(it.meta["prompt_mode"] == mode for it in by_layout["json"])
    # "query" is MathVista's own hint query, written out literally in the parquet and rebuilt for the JSON
    query = load_mathvista(mathvista["json"], image_dir=tmp_path)
    assert [it.prompt for it in query] == [q for _, q in rl.MATHVISTA_RECORDS]
    assert ds.MATHVISTA_DEFAULT_PROMPT == "query"
    # "question": the question, its unit, and the reference code's choices block
    plain = {it.id: it for it in load_mathvista(mathvista["parquet"], prompt="question", image_dir=tmp_path)}
    assert plain["mathvista:2"].prompt == "what is the total volume of the jug? (Unit: g)"
    assert plain["mathvista:3"].prompt == ("As shown in the figure, angle A = 110°, then angle BOC = ()\n\n"
                                           "Choices:\nA. 135°\nB. 140°\nC. 145°\nD. 150°")
    assert "(Unit: $)" in plain["mathvista:6"].prompt and "(Unit:" not in plain["mathvista:1"].prompt
    # the deprecated alias still works
    assert [it.prompt for it in load_mathvista(mathvista["json"], use_query=False, image_dir=tmp_path)] == [
        it.prompt for it in plain.values()]
    with pytest.raises(FrankenscopeError, match="prompt mode"):
        load_mathvista(mathvista["json"], prompt="hint")


def test_mathvista_fields_units_and_answers(mathvista: dict[str, Path], tmp_path: Path) -> None:
    for folder in mathvista.values():
        by = {it.id: it for it in load_mathvista(folder, image_dir=tmp_path)}
        assert by["mathvista:2"].answer_type == "number" and by["mathvista:2"].meta["unit"] == "g"
        assert by["mathvista:1"].meta["unit"] is None and float(by["mathvista:1"].meta["precision"]) == 1
        assert by["mathvista:3"].answer_type == "choice" and by["mathvista:3"].answer == "145°"
        assert by["mathvista:3"].meta["choices"] == ["135°", "140°", "145°", "150°"]
        assert by["mathvista:3"].meta["answer_letter"] == "C" and by["mathvista:50"].meta["answer_letter"] == "B"
        assert by["mathvista:5"].answer_type == "text"
        assert by["mathvista:2"].category == "perception" and by["mathvista:1"].category == "v2r"
        assert by["mathvista:1"].meta["metadata"]["context"] == "scientific figure"


def test_prompts_setting_through_load_dataset_items(mathvista: dict[str, Path], tmp_path: Path) -> None:
    verse = rl.write_mathverse(tmp_path, "json")
    vista = load_dataset_items("mathvista", mathvista["json"], image_dir=tmp_path,
                               prompts={"mathvista": "question", "mathverse": "query_wo"})
    assert vista[1].prompt == "what is the total volume of the jug? (Unit: g)"
    verse_items = load_dataset_items("mathverse", verse, image_dir=tmp_path,
                                     prompts={"mathvista": "question", "mathverse": "query_wo"})
    assert all(it.meta["prompt_mode"] == "query_wo" for it in verse_items)
    assert set(ds.PROMPT_MODES) == {"mathvista", "mathverse"}


# --------------------------------------------------------------------------- MathVerse


@pytest.fixture(scope="module")
def mathverse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mathverse")
    return {layout: rl.write_mathverse(root / layout, layout) for layout in ("json", "parquet")}


def test_mathverse_root_parquet_and_layouts_agree(mathverse: dict[str, Path], tmp_path: Path) -> None:
    assert (mathverse["parquet"] / "testmini.parquet").is_file()
    assert not list(mathverse["parquet"].rglob("*.json"))
    for mode in ds.MATHVERSE_PROMPTS:
        a = load_mathverse(mathverse["json"], prompt=mode, image_dir=tmp_path)
        b = load_mathverse(mathverse["parquet"], prompt=mode, image_dir=tmp_path)
        assert [(it.id, it.prompt, it.answer, it.answer_type) for it in a] == [
            (it.id, it.prompt, it.answer, it.answer_type) for it in b]
        assert all(it.prompt.strip() for it in a)
        assert [it.meta.get("choices") for it in a] == [it.meta.get("choices") for it in b]


def test_mathverse_version_aware_prompts(mathverse: dict[str, Path], tmp_path: Path) -> None:
    records = {r["sample_index"]: r for r in rl.MATHVERSE_RECORDS}
    cot = {it.meta["source_id"]: it for it in load_mathverse(mathverse["json"], image_dir=tmp_path)}
    assert ds.MATHVERSE_DEFAULT_PROMPT == "query_cot"
    for sid, it in cot.items():
        assert it.prompt == records[sid]["query_cot"] and it.meta["prompt_field"] == "query_cot"
    vision_only = cot["5"]
    assert vision_only.meta["problem_version"] == "Vision Only" and vision_only.meta["question"] == ""
    assert vision_only.prompt.startswith("According to the question shown in the image")
    wo = {it.meta["source_id"]: it for it in load_mathverse(mathverse["json"], prompt="query_wo", image_dir=tmp_path)}
    assert wo["5"].prompt == records["5"]["query_wo"] and wo["8"].prompt == records["8"]["query_wo"]
    assert wo["1"].prompt.startswith("Please directly answer")
    q = {it.meta["source_id"]: it for it in load_mathverse(mathverse["json"], prompt="question", image_dir=tmp_path)}
    assert q["1"].prompt == records["1"]["question"] and q["1"].meta["prompt_field"] == "question"
    # the Vision Only question is in the image: its official direct-answer input says so
    assert q["5"].prompt == records["5"]["query_wo"] and q["5"].meta["prompt_field"] == "query_wo"
    assert {it.meta["problem_version"] for it in cot.values()} == {
        "Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only"}


def test_mathverse_choices_units_and_dollar_gold(mathverse: dict[str, Path], tmp_path: Path) -> None:
    by = {it.meta["source_id"]: it for it in load_mathverse(mathverse["parquet"], image_dir=tmp_path)}
    options = {"A": "40°", "B": "60°", "C": "120°", "D": "140°"}
    for sid in "12345":  # Vision Only included: its options come from question_for_eval
        assert by[sid].answer == "D" and by[sid].answer_type == "choice" and by[sid].meta["choices"] == options
    assert (by["6"].answer, by["6"].answer_type, by["6"].meta["unit"], by["6"].meta["raw_answer"]) == (
        "12", "number", "cm", "12 cm")
    assert (by["7"].answer, by["7"].answer_type, by["7"].meta["raw_answer"]) == (
        "\\frac{5}{2}", "text", "$\\frac{5}{2}$")
    assert (by["8"].answer, by["8"].answer_type, by["8"].meta["unit"]) == ("60", "number", "°")
    assert by["1"].meta["metadata"]["subject"] == "plane geometry" and by["1"].meta["question_for_eval"]


def test_split_unit_and_parse_choices() -> None:
    assert ds.split_unit("14 cm") == ("14", "cm") and ds.split_unit("60^\\circ") == ("60", "°")
    assert ds.split_unit("12\\text{ cm}") == ("12", "cm") and ds.split_unit("2.5 m^2") == ("2.5", "m^2")
    assert ds.split_unit("5\\sqrt{3}") is None and ds.split_unit("3 x") is None and ds.split_unit("7") is None
    assert ds.parse_choices("Find x.\nChoices:\nA:40°\nB:60°") == {"A": "40°", "B": "60°"}
    assert ds.parse_choices("Select from A-D. \n A) 10 B) 12 C) 14 D) 16") == {
        "A": "10", "B": "12", "C": "14", "D": "16"}
    assert ds.parse_choices("Choices:\n(A) Yes\n(B) No") == {"A": "Yes", "B": "No"}
    assert ds.parse_choices("Which one? Select from A-E") == {} and ds.parse_choices("Point A. Then B. C") == {}


# --------------------------------------------------------------------------- MATH-V, LogicVista


def test_mathvision_layouts(tmp_path: Path) -> None:
    a = load_dataset_items("mathvision", rl.write_mathvision(tmp_path / "j", "jsonl"), image_dir=tmp_path)
    b = load_dataset_items("mathvision", rl.write_mathvision(tmp_path / "p", "parquet"), image_dir=tmp_path)
    assert [(it.prompt, it.answer, it.answer_type) for it in a] == [(it.prompt, it.answer, it.answer_type) for it in b]
    by = {it.id: it for it in a}
    assert by["mathvision:1"].prompt == ("How many dots are on the hidden faces of the dice?\n\n"
                                         "Choices:\nA. 2\nB. 4\nC. 6\nD. 8\nE. 10")
    assert "<image1>" not in by["mathvision:2"].prompt and by["mathvision:2"].answer_type == "number"
    assert by["mathvision:3"].answer == "\\frac{1}{2}" and by["mathvision:3"].meta["raw_answer"] == "$\\frac{1}{2}$"
    test_split = load_dataset_items("mathvision", tmp_path / "j" / "MathVision", split="test", image_dir=tmp_path)
    assert len(test_split) == len(a)


def test_logicvista_fields_letters_and_empty_record(tmp_path: Path) -> None:
    folder = rl.write_logicvista(tmp_path)
    with pytest.warns(UserWarning, match=r"LogicVista.*skipped 1 item.*v1_77"):
        items = load_logicvista(folder, image_dir=tmp_path)
    by = {it.id: it for it in items}
    assert "logicvista:v1_77" not in by and len(items) == len(rl.GOLD["logicvista"])
    two = by["logicvista:v1_1"]
    assert (two.answer, two.answer_type, two.meta["multi_letter"], two.meta["answer_letters"]) == (
        "A, C", "choice", True, ["A", "C"])
    assert two.meta["raw_answer"] == "C, A"
    assert by["logicvista:v1_5"].answer == "B, D"
    one = by["logicvista:v1_0"]
    assert (one.answer, one.answer_type) == ("C", "choice") and "multi_letter" not in one.meta
    assert one.meta["broad_capability"] == ["diagram"] and one.meta["specific_capability"] == ["pattern sequence"]
    assert one.meta["reasoning"].startswith("The square") and one.meta["skill"] == ["inductive"]
    assert by["logicvista:v1_19"].meta["choices"] == {"A": "10", "B": "12", "C": "14", "D": "16"}
    assert (by["logicvista:v1_20"].answer, by["logicvista:v1_20"].answer_type) == ("3", "number")


def test_logicvista_letter_order_does_not_matter(tmp_path: Path) -> None:
    from frankenscope.evaluate.extract import grade

    loaded = []
    for gold in ("C, A", "A, C"):
        rl.write_logicvista(tmp_path / gold)
        path = tmp_path / gold / "LogicVista" / "data" / "dataset.json"
        doc = json.loads(path.read_text())
        doc["v1_1"]["answer"] = gold
        del doc["v1_77"]
        path.write_text(json.dumps(doc))
        (item,) = [it for it in load_logicvista(path.parent.parent, image_dir=tmp_path) if it.id == "logicvista:v1_1"]
        loaded.append(item)
        for pred in ("\\boxed{C, A}", "\\boxed{A, C}", "Answer: A and C"):
            assert grade(pred, item), (gold, pred)
        assert not grade("\\boxed{A}", item) and not grade("\\boxed{A, B, C}", item)
    assert [(it.answer, it.answer_type, it.meta["answer_letters"]) for it in loaded] == [
        ("A, C", "choice", ["A", "C"])] * 2


def test_empty_items_are_skipped_with_one_warning(tmp_path: Path) -> None:
    folder = rl.write_math500(tmp_path)
    rows = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    rows[1]["answer"] = ""
    rows[2]["problem"] = "  "
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = load_math500(folder)
    assert [it.meta["source_id"] for it in items] == ["test/prealgebra/1.json", "test/number_theory/5.json"]
    (msg,) = [str(w.message) for w in caught]
    assert "MATH-500" in msg and "2 item(s)" in msg and "test/algebra/7.json" in msg


def test_loaded_gold_forms_grade(tmp_path: Path) -> None:
    """What the loaders emit is what the grader needs: units, multi-letter sets, option values."""
    from frankenscope.evaluate.extract import grade

    root = tmp_path / "data"
    folders = rl.write_data_root(root, "parquet")
    for key in ("mathverse", "logicvista"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # LogicVista's empty record
            items = load_dataset_items(key, folders[key], image_dir=tmp_path / "cache")
        for it in items:
            forms = [rl.GOLD[key][it.id], *rl.ACCEPTED[key].get(it.id, [])]
            for form in forms:
                assert grade(f"\\boxed{{{form}}}", it), (it.id, form)
            assert not grade(f"\\boxed{{{rl.WRONG[key][it.id]}}}", it) and not grade("", it)


# --------------------------------------------------------------------------- descriptions


def test_mathvista_caption_file_is_accepted(tmp_path: Path, mathvista: dict[str, Path]) -> None:
    from frankenscope.evaluate.run import _read_descriptions

    captions = _read_descriptions(rl.write_mathvista_captions(tmp_path / "captions_bard.json"))
    assert set(captions) == {"1", "3", "6"}  # the empty caption of pid 50 is left out
    items = {it.meta["source_id"]: it for it in load_mathvista(mathvista["json"], image_dir=tmp_path)}
    assert set(captions) <= set(items)
    plain = tmp_path / "d.json"
    plain.write_text(json.dumps({"mathvista:3": "a triangle", "6": {"description": "a table"}}))
    assert _read_descriptions(plain) == {"mathvista:3": "a triangle", "6": "a table"}
