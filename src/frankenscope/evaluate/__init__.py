"""Evaluation: generation runner, answer extraction and grading, accuracy metrics with bootstrap CIs."""

from frankenscope.evaluate.extract import extract_answer, grade, iou, normalize_text, parse_box, parse_number
from frankenscope.evaluate.metrics import accuracy_summary, bootstrap_ci, paired_difference
from frankenscope.evaluate.runner import (
    EvalRecord,
    EvalResult,
    Generator,
    HFGenerator,
    evaluate,
    format_table,
    model_fingerprint,
    write_eval_result,
)

__all__ = [
    "EvalRecord", "EvalResult", "Generator", "HFGenerator", "accuracy_summary", "bootstrap_ci", "evaluate",
    "extract_answer", "format_table", "grade", "iou", "model_fingerprint", "normalize_text", "paired_difference",
    "parse_box", "parse_number", "write_eval_result",
]
