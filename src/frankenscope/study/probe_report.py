"""Verdicts P2 (attention shift) and P3 (functional localization) from the probe result files."""

from __future__ import annotations

from pathlib import Path

from frankenscope.study.report import Verdict


def verdict_p2(out: Path) -> Verdict:
    st = "RL attends more from reasoning tokens to image tokens than IN in most Mid-Late layers, ~0 Early."
    return Verdict("P2", st, "not run", "")


def verdict_p3(out: Path) -> Verdict:
    st = "Recognition is localized Early, OCR/counting/grounding stay sensitive into Mid, reasoning is Late."
    return Verdict("P3", st, "not run", "")
