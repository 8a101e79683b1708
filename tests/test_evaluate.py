"""Answer extraction and grading, bootstrap metrics, the evaluation runner and HF generation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate import (
    HFGenerator,
    accuracy_summary,
    bootstrap_ci,
    evaluate,
    extract_answer,
    format_table,
    grade,
    iou,
    model_fingerprint,
    paired_difference,
    parse_box,
    parse_number,
    write_eval_result,
)
from frankenscope.evaluate.runner import prompt_text
from frankenscope.loading import Loaded


def item(answer: str, answer_type: str, task: str = "t", id: str = "x", **kw: Any) -> Item:
    return Item(id=id, task=task, prompt="q", answer=answer, answer_type=answer_type, **kw)


# -- extraction -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("3.5", "3.5"),
    ("0.25", "0.25"),
    ("The ratio is \\boxed{1:2}.", "1:2"),
    ("**7**", "7"),
    ("first \\boxed{1}, then \\boxed{2}, finally \\boxed{3}", "3"),
    ("<think>maybe 3</think><answer>12</answer>", "12"),
    ("<answer>1</answer> no, <answer> 2 </answer>", "2"),
    ("Let me think.\nAnswer: 4\nDone", "4"),
    ("so the final ANSWER: **Yes**.", "Yes"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("$42$.", "42"),
    ("\\boxed{\\text{B}}", "B"),
    ("  plain text answer.  ", "plain text answer"),
    ("\\boxed{5} and an unclosed \\boxed{6", "5"),
])
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_parse_number() -> None:
    assert parse_number("3.5") == 3.5
    assert parse_number("x = -0.25 m") == -0.25
    assert parse_number("1,000 apples") == 1000.0
    assert parse_number("\\frac{1}{2}") == 0.5
    assert parse_number("3/4") == 0.75
    assert parse_number("no digits") is None


def test_grade_numbers_keep_decimals() -> None:
    assert grade("\\boxed{3.5}", item("3.5", "number"))
    assert not grade("\\boxed{3.5}", item("5", "number"))  # the reference's truncation bug would say True
    assert grade("The answer is 0.25", item("0.25", "number"))
    assert not grade("0.25", item("25", "number"))
    assert grade("**1,000**", item("1000", "number"))
    assert grade("\\boxed{-2}", item("-2", "number"))
    assert not grade("\\boxed{2}", item("-2", "number"))
    assert grade("\\boxed{\\frac{1}{2}}", item("0.5", "number"))
    assert not grade("no number here", item("3", "number"))


def test_grade_text_word_yesno() -> None:
    assert grade("Answer: 1:2", item("1:2", "text"))
    assert not grade("Answer: 2", item("1:2", "text"))
    assert grade("**Red**", item("red", "word"))
    assert grade("\\boxed{ Big   Cat }", item("big cat", "word"))
    assert not grade("reddish", item("red", "word"))
    assert grade("<answer>Yes, it is.</answer>", item("yes", "yesno"))
    assert grade("No.", item("No", "yesno"))
    assert not grade("Yes", item("no", "yesno"))


def test_grade_choice() -> None:
    mc = {"choices": ["circle", "square", "triangle"]}
    assert grade("\\boxed{B}", item("B", "choice", meta=mc))
    assert grade("\\boxed{B}", item("square", "choice", meta=mc))  # gold given as option text
    assert grade("(B) square", item("square", "choice", meta=mc))
    assert grade("Answer: square", item("B", "choice", meta=mc))
    assert not grade("\\boxed{C}", item("B", "choice", meta=mc))
    # "D" is not a choice letter here, so it is compared as option text (and matches the option "D")
    assert grade("D", item("D", "choice", meta={"choices": ["1", "2", "D"]}))
    assert not grade("D", item("C", "choice", meta={"choices": ["1", "2", "3"]}))
    assert grade("\\boxed{A}", item("yes", "choice", meta={"choices": {"A": "yes", "B": "no"}}))


def test_grade_errors() -> None:
    with pytest.raises(FrankenscopeError, match="answer_type"):
        grade("1", item("1", "colour"))
    with pytest.raises(FrankenscopeError, match="cannot be parsed"):
        grade("1", item("many", "number"))


# -- boxes ----------------------------------------------------------------------------------------

def test_iou_known_values() -> None:
    assert iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert iou((0, 0, 2, 2), (0, 0, 2, 1)) == 0.5  # inter 2, union 4
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)  # inter 2, union 6
    assert iou((2, 2, 0, 0), (0, 0, 2, 2)) == 1.0  # corner order does not matter
    assert iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching edges


def test_parse_box_and_grade_box() -> None:
    assert parse_box("[10, 20, 30, 40]") == (10.0, 20.0, 30.0, 40.0)
    assert parse_box("(1.5,2,3,4.25) extra 9") == (1.5, 2.0, 3.0, 4.25)
    assert parse_box("1 2 3") is None
    assert grade("\\boxed{[12, 12, 50, 50]}", item("10,10,50,50", "box"))  # IoU 0.9025
    assert not grade("[0, 0, 20, 20]", item("10,10,50,50", "box"))  # IoU 100/1900
    assert not grade("[0, 0, 20]", item("10,10,50,50", "box"))


# -- metrics --------------------------------------------------------------------------------------

def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random(200) < 0.6).astype(float)
    a = bootstrap_ci(x, seed=3)
    assert a == bootstrap_ci(list(x), seed=3)
    assert a != bootstrap_ci(x, seed=4)
    assert a[0] < x.mean() < a[1]
    assert 0.0 < a[1] - a[0] < 0.3
    # all-equal input: never a zero-width interval (unbounded without a known range, else the exact bound)
    assert bootstrap_ci([1.0] * 17) == (-math.inf, math.inf)
    lo, hi = bootstrap_ci([0.1] * 5, bounds=(0.0, 1.0))
    assert lo < 0.1 < hi
    lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)


def test_accuracy_summary_and_paired_difference() -> None:
    s = accuracy_summary([True, True, False, True])
    assert (s["n"], s["correct"], s["accuracy"]) == (4, 3, 0.75)
    assert s["ci_low"] <= 0.75 <= s["ci_high"]
    rng = np.random.default_rng(0)
    a = rng.random(100) < 0.4
    b = rng.random(100) < 0.7
    d = paired_difference(a, b, seed=5)
    assert d["diff"] == pytest.approx(b.mean() - a.mean())
    assert d["method"].startswith("Newcombe")  # 0/1 data: the paired score interval, not the bootstrap
    assert d["ci_low"] < d["diff"] < d["ci_high"]
    all_flip = paired_difference([False] * 5, [True] * 5)  # was [1, 1] (zero width) under the bootstrap
    assert all_flip["ci_low"] < 1.0 and not all_flip["significant"]  # McNemar p = 0.0625
    x = rng.random(50)
    c = paired_difference(x, x + 0.1 + rng.normal(0, 0.01, 50), seed=5)
    assert c["method"].startswith("paired percentile bootstrap") and c["significant"]
    with pytest.raises(FrankenscopeError):
        paired_difference([True], [True, False])


# -- evaluate with a stand-in generator ------------------------------------------------------------

class StandIn:
    """A Generator with known outputs, recording the keyword arguments it was called with."""

    def __init__(self, responses: dict[str, str]) -> None:
        self.responses = responses
        self.calls: list[dict[str, Any]] = []

    def __call__(self, items: list[Item], *, black_image: bool = False,
                 use_description: bool = False) -> list[str]:
        self.calls.append({"black_image": black_image, "use_description": use_description})
        return [self.responses[it.id] for it in items]


def standin_items() -> tuple[list[Item], dict[str, str]]:
    mc = {"choices": ["red", "green", "blue"]}
    rows = [  # id, task, answer, type, response, right?
        ("a1", "arith", "3.5", "number", "so \\boxed{3.5}", True),
        ("a2", "arith", "0.25", "number", "The answer is 0.25.", True),
        ("a3", "arith", "5", "number", "\\boxed{3.5}", False),
        ("a4", "arith", "4", "number", "Answer: 7", False),
        ("r1", "read", "1:2", "text", "Answer: 1:2", True),
        ("r2", "read", "cat", "word", "**Cat**", True),
        ("r3", "read", "dog", "word", "<answer>fox</answer>", False),
        ("m1", "mc", "B", "choice", "\\boxed{B}", True),
        ("m2", "mc", "yes", "yesno", "<answer>Yes.</answer>", True),
        ("m3", "mc", "10,10,50,50", "box", "[12, 12, 50, 50]", True),
    ]
    items = [Item(id=i, task=t, prompt=f"question {i}", answer=a, answer_type=ty,
                  category="text" if t == "arith" else "perception", meta=mc if ty == "choice" else {})
             for i, t, a, ty, _, _ in rows]
    return items, {i: resp for i, _, _, _, resp, _ in rows}


def test_evaluate_standin() -> None:
    items, responses = standin_items()
    gen = StandIn(responses)
    res = evaluate(items, gen, seed=0, black_image=True)
    assert gen.calls == [{"black_image": True, "use_description": False}]
    assert res.overall["accuracy"] == 0.7
    assert (res.overall["n"], res.overall["correct"]) == (10, 7)
    assert {k: (v["n"], v["correct"]) for k, v in res.by_task.items()} == {
        "arith": (4, 2), "read": (3, 2), "mc": (3, 3)}
    # 3 of 3 right: the Wilson interval [0.4385, 1], not the zero-width [1, 1] of a degenerate bootstrap
    assert res.by_task["mc"]["accuracy"] == 1.0 and res.by_task["mc"]["ci_low"] == pytest.approx(0.4385, abs=1e-4)
    assert {k: v["n"] for k, v in res.by_category.items()} == {"perception": 6, "text": 4}
    assert [r.correct for r in res.records] == [True, True, False, False, True, True, False, True, True, True]
    assert res.records[0].extracted == "3.5" and res.records[0].response == "so \\boxed{3.5}"
    assert res.condition == {"black_image": True, "use_description": False}
    table = format_table(res)
    assert "| arith | 4 | 0.500 |" in table and "| overall | 10 | 0.700 |" in table


def test_evaluate_checks_generator_output() -> None:
    items, _ = standin_items()
    with pytest.raises(FrankenscopeError, match="responses"):
        evaluate(items, lambda its, **kw: ["x"])
    with pytest.raises(FrankenscopeError, match="no items"):
        evaluate([], StandIn({}))


def test_prompt_text_description() -> None:
    it = Item(id="d", task="t", prompt="How many?", answer="3", answer_type="number", image="x.png",
              description="three red squares")
    assert prompt_text(it) == "How many?"
    assert prompt_text(it, use_description=True) == "Image description: three red squares\nHow many?"
    it.description = None
    with pytest.raises(FrankenscopeError, match="description"):
        prompt_text(it, use_description=True)


def test_write_eval_result(tmp_path: Path) -> None:
    items, responses = standin_items()
    res = evaluate(items, StandIn(responses), seed=0)
    path = write_eval_result(res, tmp_path / "run", model_source="organism/micro", model_fingerprint="abc",
                             seed=7, settings={"max_new_tokens": 8})
    assert path == tmp_path / "run" / "results.json"
    doc = json.loads(path.read_text())
    assert doc["kind"] == "eval" and doc["schema_version"] == 1 and doc["seed"] == 7
    assert doc["versions"]["torch"] and "transformers" in doc["versions"]
    assert doc["inputs"]["model_source"] == "organism/micro" and doc["inputs"]["model_fingerprint"] == "abc"
    assert doc["settings"] == {"max_new_tokens": 8}
    assert doc["summary"]["overall"]["accuracy"] == 0.7
    assert doc["summary"]["by_task"]["read"]["correct"] == 2
    assert len(doc["records"]) == 10 and doc["records"][2]["correct"] is False
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["results.json"]  # no temp files left


# -- HFGenerator on the micro organism -------------------------------------------------------------

@pytest.fixture(scope="module")
def micro() -> tuple[Any, Any]:
    from frankenscope.organism.model import build_organism

    return build_organism("micro", seed=0, initializer_range=0.2)


def image_items(tmp_path: Path) -> list[Item]:
    rng = np.random.default_rng(0)
    out = []
    prompts = ["How many?", "What colour is the largest shape in the picture?", "Read the word."]
    for k, prompt in enumerate(prompts):
        path = tmp_path / f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(path)
        out.append(Item(id=f"i{k}", task="count", prompt=prompt, answer="3", answer_type="number",
                        image=str(path), description=f"{k + 1} blue circles"))
    # text-only items in the middle and at the end, of different lengths (so padding happens)
    out.insert(1, Item(id="t0", task="arith", prompt="2+3=?", answer="5", answer_type="number",
                       category="text"))
    out.append(Item(id="t1", task="arith", prompt="What is seven times six, minus two?", answer="40",
                    answer_type="number", category="text"))
    return out


def test_hf_generator_batched_equals_single(micro: tuple[Any, Any], tmp_path: Path) -> None:
    model, processor = micro
    items = image_items(tmp_path)
    processor.tokenizer.padding_side = "right"  # the generator must left-pad regardless, and restore this
    single = HFGenerator(model, processor, batch_size=1, max_new_tokens=8, progress=False)(items)
    loaded = Loaded(model=model, processor=processor, adapter=HFGenerator(model, processor).adapter, source="m")
    batched = HFGenerator(loaded, batch_size=4, max_new_tokens=8, progress=False)(items)
    assert processor.tokenizer.padding_side == "right"
    assert len(batched) == len(items) and all(isinstance(r, str) for r in batched)
    assert batched == single
    processor.tokenizer.padding_side = "left"


def test_hf_generator_black_image_and_description(micro: tuple[Any, Any], tmp_path: Path) -> None:
    model, processor = micro
    items = [it for it in image_items(tmp_path) if it.image is not None]
    seen: list[Any] = []

    def capture(module: Any, args: tuple, kwargs: dict) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    handle = model.model.visual.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        gen = HFGenerator(model, processor, batch_size=4, max_new_tokens=4, progress=False)
        real = gen(items)
        black = gen(items, black_image=True)
        both = gen(items, black_image=True, use_description=True)
    finally:
        handle.remove()
    assert len(seen) == 3  # one vision forward per call (prefill only)
    assert not np.allclose(seen[0].numpy(), seen[1].numpy())
    assert seen[1].unique().numel() <= 3  # a black image normalises to one value per channel
    assert seen[1].equal(seen[2])
    assert len(real) == len(black) == len(both) == len(items)
    assert gen.settings()["repetition_penalty"] == 1.0 and gen.settings()["do_sample"] is False


def test_model_fingerprint(micro: tuple[Any, Any], tmp_path: Path) -> None:
    from frankenscope.organism.model import build_organism, save_folder

    model, processor = micro
    a = save_folder(model, processor, tmp_path / "a")
    b = save_folder(*build_organism("micro", seed=1, initializer_range=0.2), tmp_path / "b")
    fa = model_fingerprint(a)
    assert fa == model_fingerprint(a) and len(fa) == 64
    assert fa != model_fingerprint(b)
    with pytest.raises(FrankenscopeError, match="config.json"):
        model_fingerprint(tmp_path)


def test_box_with_three_digit_coordinates_is_four_numbers():
    from frankenscope.evaluate.extract import parse_box

    assert parse_box("8,77,32,101") == (8.0, 77.0, 32.0, 101.0)
    assert parse_box("(8, 77), (132, 1,000)") == (8.0, 77.0, 132.0, 1.0)
