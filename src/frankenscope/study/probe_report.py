"""Verdicts P2 (attention shift) and P3 (functional localization) from the probe result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frankenscope.study.report import Verdict
from frankenscope.weights.partition import partition


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _regions(out: Path, n_layers: int) -> dict[str, list[int]]:
    study = _load(out / "study.json") or {}
    return partition(n_layers, study.get("config", {}).get("partition", "thirds"))


def _region_of(layer: int, regions: dict[str, list[int]]) -> str:
    return next(r for r, ls in regions.items() if layer in ls)


def verdict_p2(out: Path) -> Verdict:
    st = "RL attends more from reasoning tokens to image tokens than IN in most Mid-Late layers, ~0 Early."
    doc = _load(out / "attention" / "attention.json")
    if doc is None:
        return Verdict("P2", st, "not run", "")
    rows = doc["differences"]["RL - IN"]["per_layer"]
    regions = _regions(out, doc["settings"]["n_layers"])
    late = [r for r in rows if _region_of(r["layer"], regions) in ("mid", "late")]
    up = sum(r["mass"]["ci_low"] > 0 for r in late)
    down = sum(r["mass"]["ci_high"] < 0 for r in late)
    ev = "attention mass RL - IN per layer: " + ", ".join(
        f"L{r['layer']} {r['mass']['diff']:+.2g} [{r['mass']['ci_low']:+.2g}, {r['mass']['ci_high']:+.2g}]"
        for r in rows) + f"; Mid-Late layers significantly up {up}/{len(late)}, down {down}/{len(late)}"
    v = "supported" if up > len(late) / 2 else "contradicted" if down > len(late) / 2 else "inconclusive"
    return Verdict("P2", st, v, ev)


def sensitivity_depth(per_layer: list[dict[str, Any]]) -> int | None:
    """The last swap-start layer whose change rate is at least half the task's maximum (None: never changes)."""
    rates = [(r["layer"], r["change"]["rate"]) for r in per_layer if r["change"]["rate"] == r["change"]["rate"]]
    top = max((x for _, x in rates), default=0.0)
    if top <= 0:
        return None
    return max(layer for layer, x in rates if x >= top / 2)


def verdict_p3(out: Path) -> Verdict:
    st = "Recognition is localized Early, OCR/counting/grounding stay sensitive into Mid, reasoning is Late."
    vis = _load(out / "localize-vision" / "base" / "localize_vision.json")
    rea = _load(out / "localize-reasoning" / "base" / "localize_reasoning.json")
    if vis is None or rea is None:
        return Verdict("P3", st, "not run", "needs both localizations of the Base model")
    regions = _regions(out, len(rea["layers"]) if len(rea["layers"]) >= 3 else 3)
    depth = {t: sensitivity_depth(v["per_layer"]) for t, v in vis["tasks"].items() if t != "all"}
    checks, ev = [], []
    for task, d in depth.items():
        region = None if d is None else _region_of(d, regions)
        ev.append(f"{task}: no swap at any layer changes its answer" if d is None
                  else f"{task} sensitive up to layer {d} ({region})")
        if task == "recognition":
            checks.append(region == "early")
        elif task in ("ocr", "counting", "grounding"):
            checks.append(region in ("mid", "late"))
    inc = {reg: [r["increase"]["diff"] for r in rea["tasks"]["all"]["per_layer"] if r["layer"] in ls]
           for reg, ls in regions.items()}
    mean_inc = {reg: sum(x) / len(x) for reg, x in inc.items() if x}
    worst = max(mean_inc, key=lambda r: mean_inc[r]) if mean_inc else None
    checks.append(worst == "late")
    ev.append("mean skip-error increase per region: " + ", ".join(f"{r} {x:+.3f}" for r, x in mean_inc.items()))
    v = "supported" if all(checks) else "contradicted" if not any(checks) else "inconclusive"
    return Verdict("P3", st, v, "; ".join(ev) + f" (sub-claims met: {sum(checks)}/{len(checks)})")
