"""Grading on responses shaped like real chains of thought (not the organism's `Answer: X` lines)."""

from __future__ import annotations

import pytest

from frankenscope.data.schema import Item
from frankenscope.evaluate.extract import (
    extract_answer,
    gold_answer,
    grade,
    grader_identity,
    resolve_expression,
)


def item(answer: str, answer_type: str = "number", meta: dict | None = None) -> Item:
    return Item(id="t:1", task="t", prompt="q", answer=answer, answer_type=answer_type, category="text",
                meta=meta or {})


GSM_COT = ("Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins with 4.\n"
           "So she sells 16 - 3 - 4 = 9 eggs. Each sells for $2, so she makes 9 * 2 = 18 dollars.\n"
           "The answer is 18.")


def test_fallback_takes_the_final_answer_not_the_first_number() -> None:
    assert extract_answer(GSM_COT, "number") == "18"
    assert grade(GSM_COT, item("18")) and not grade(GSM_COT, item("16"))
    no_cue = GSM_COT.rsplit("\n", 1)[0]  # ends "... 9 * 2 = 18 dollars."
    assert extract_answer(no_cue, "number") == "18"
    assert grade(no_cue, item("18")) and not grade(no_cue, item("16"))


def test_answer_cue_reads_on_to_the_next_non_empty_line() -> None:
    text = "Let me compute the area.\nWidth 3, height 4.\n**Final Answer:**\n\n12\n"
    assert extract_answer(text) == "12"
    assert grade(text, item("12"))
    assert not grade("Answer:\n\n", item("0"))  # a cue with nothing after it is never right


def test_an_answer_that_is_an_expression_resolves_to_its_result() -> None:
    assert grade("Answer: 3 + 2 = 5", item("5"))
    assert grade("Answer: 3 + 2", item("5"))
    assert grade("so x = 5. Answer: x = 5", item("5"))
    assert grade("\\boxed{2 \\times 3}", item("6"))  # a LaTeX product: math-verify evaluates it
    assert not grade("Answer: 3 + 2 = 6", item("5"))
    assert resolve_expression("12 ÷ 4 × 3") == "9"
    assert resolve_expression("(1, -2)") == "(1, -2)"  # a coordinate list is not a difference
    assert resolve_expression("1,000 + 24") == "1024"
    assert resolve_expression("2^1000000") == "2^1000000"  # no huge powers


def test_last_cue_wins_and_think_blocks_are_skipped() -> None:
    text = ("<think>Maybe the answer is 7? No: 4 + 4 = 8, so the answer is 8.</think>\n"
            "The total is 8 apples.")
    assert extract_answer(text, "number") == "8"
    assert grade("First guess: answer is 3. Checking again, the answer is 4.", item("4"))
    assert extract_answer("The answer is 3.5. Done.") == "3.5"  # the sentence ends at ". ", not at "3."


@pytest.mark.parametrize("gold", ["$\\frac{1}{2}$", "\\frac{1}{2}.", "**\\frac{1}{2}**"])
def test_gold_is_normalised_like_the_prediction(gold: str) -> None:
    assert gold_answer(item(gold, "text")) == "\\frac{1}{2}"
    assert grade("\\boxed{\\frac{1}{2}}", item(gold, "text"))
    assert grade("Answer: 1/2", item(gold, "text"))


def test_gold_with_period_or_dollars_grades_for_every_type() -> None:
    assert grade("Answer: yes", item("Yes.", "yesno"))
    assert grade("\\boxed{42}", item("$42$", "number"))
    assert grade("The answer is B", item("B.", "choice", {"choices": ["1", "2", "3"]}))


def test_multi_letter_answers_compare_as_sets() -> None:
    gold = item("A, C", "choice")
    for pred in ("Answer: C, A", "\\boxed{A, C}", "the answer is A and C", "Answer: (C) (A)", "Answer: AC"):
        assert grade(pred, gold), pred
    for pred in ("Answer: A", "Answer: A, B, C", "Answer: A, B"):
        assert not grade(pred, gold), pred


def test_option_value_counts_like_its_letter() -> None:
    mc = item("B", "choice", {"choices": {"A": "$\\frac{1}{3}$", "B": "$\\frac{1}{2}$", "C": "1"}})
    assert grade("\\boxed{B}", mc) and grade("\\boxed{\\frac{1}{2}}", mc) and grade("Answer: $\\frac{1}{2}$", mc)
    assert not grade("\\boxed{\\frac{1}{3}}", mc) and not grade("\\boxed{A}", mc)


@pytest.mark.parametrize("answer_type, gold", [("number", "0"), ("text", ""), ("word", ""), ("choice", "A")])
def test_empty_response_is_never_correct(answer_type: str, gold: str) -> None:
    meta = {"choices": ["x", "y"]} if answer_type == "choice" else None
    assert not grade("", item(gold, answer_type, meta))
    assert not grade("   \n", item(gold, answer_type, meta))


def test_grader_identity_names_math_verify_version() -> None:
    ident = grader_identity()
    assert ident["grader"] == "frankenscope.evaluate.extract" and ident["version"] >= 2
    assert ident["math_verify"]  # a pinned dependency, always installed
