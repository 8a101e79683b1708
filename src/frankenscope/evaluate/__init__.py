"""Evaluation: generation, answer extraction and grading, metrics with confidence intervals, the fine-grained
evaluation (M_vis / M_v2r / M_rea) and its response cache. Names are imported on first use."""

from frankenscope._lazy import lazy_exports

_M = "frankenscope.evaluate."
_EXPORTS = {
    **dict.fromkeys(("extract_answer", "grade", "grader_identity", "iou", "normalize_text", "parse_box",
                     "parse_number"), _M + "extract"),
    **dict.fromkeys(("accuracy_summary", "bootstrap_ci", "paired_difference"), _M + "metrics"),
    **dict.fromkeys(("EvalRecord", "EvalResult", "Generator", "HFGenerator", "evaluate", "format_table",
                     "model_fingerprint", "write_eval_result"), _M + "runner"),
    **dict.fromkeys(("PromptStyle", "get_prompt_style", "PROMPT_STYLES"), _M + "prompts"),
    "finegrained_eval": _M + "run",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
