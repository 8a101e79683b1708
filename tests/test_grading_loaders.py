"""The grading property over every loader: for each item of a fixture in each dataset's real published
layout, the gold answer written the ways real chains of thought end grades right; a wrong answer and an
empty response do not."""

from __future__ import annotations

from pathlib import Path

import pytest

import real_layouts as rl
from frankenscope.data.datasets import load_dataset_items
from frankenscope.evaluate.extract import grade

COT = "Let me look at the figure carefully.\nStep 1: read the values. Step 2: compare them, 2 vs 3.\n"
SHAPES = {
    "boxed": lambda g: f"{COT}So the result is \\boxed{{{g}}}.",
    "answer_tag": lambda g: f"<think>{COT}</think>\n<answer>{g}</answer>",
    "answer_line": lambda g: f"{COT}Answer: {g}",
    "answer_next_line": lambda g: f"{COT}**Final Answer:**\n\n{g}\n",
    "sentence": lambda g: f"{COT}Checking every step once more, the answer is {g}.",
}
CASES = [(key, layout) for key, layouts in rl.LAYOUTS.items() for layout in layouts]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list]:
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for key, layout in CASES:
        folder = rl.write_dataset(key, root / f"{key}-{layout}", layout)
        with pytest.warns(UserWarning) if key in rl.SKIPPED else _nothing():
            out[key, layout] = load_dataset_items(key, folder, image_dir=root / "img")
    return out


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("key, layout", CASES)
def test_every_item_grades_right_in_every_answer_shape(loaded: dict, key: str, layout: str) -> None:
    items = loaded[key, layout]
    assert {it.id for it in items} == set(rl.GOLD[key])  # every loadable item, and only those
    for it in items:
        for gold in [rl.GOLD[key][it.id], *rl.ACCEPTED[key].get(it.id, [])]:
            for shape, write in SHAPES.items():
                assert grade(write(gold), it), (it.id, shape, gold)
        wrong = rl.WRONG[key][it.id]
        for shape, write in SHAPES.items():
            assert not grade(write(wrong), it), (it.id, shape, wrong)
        assert not grade("", it) and not grade("<think>\n</think>\n", it), it.id


def test_skipped_items_are_never_graded(loaded: dict) -> None:
    for key, skipped in rl.SKIPPED.items():
        for layout in rl.LAYOUTS[key]:
            assert not {it.id for it in loaded[key, layout]} & set(skipped)


def test_prompts_are_identical_across_layouts(loaded: dict) -> None:
    for key, layouts in rl.LAYOUTS.items():
        if len(layouts) < 2:
            continue
        first, *rest = ({it.id: it.prompt for it in loaded[key, lay]} for lay in layouts)
        assert all(r == first for r in rest), key
        assert all(p.strip() for p in first.values()), key


def test_fixture_folders_are_in_real_layouts(tmp_path: Path) -> None:
    folders = rl.write_data_root(tmp_path, "parquet")
    assert (folders["mathverse"] / "testmini.parquet").is_file()  # the root parquet of the hub release
    assert list((folders["mathvista"] / "data").glob("testmini-*.parquet"))
