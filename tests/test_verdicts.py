"""Every claim P1-P7 decided from constructed result files: supported, contradicted, inconclusive and
not run (a sign error in any rule turns one of these around), plus grounding scoring and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frankenscope.study import verdicts as V


def _w(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _study(out: Path, **config: Any) -> Path:
    _w(out / "study.json", {"config": {"partition": "thirds", "seed": 0, **config}})
    return out


# -- P1 ---------------------------------------------------------------------------------------------
def _finegrained(unit: Path, right: dict[str, list[bool]]) -> None:
    """M_rea records only: model label -> per-item correctness on text items."""
    _w(unit / "finegrained.json", {})
    for label, flags in right.items():
        _w(unit / "models" / f"{label}.json", {"records": [
            {"id": f"t{i}", "condition": "text", "correct": c} for i, c in enumerate(flags)]})


def _flags(n: int, right: int) -> list[bool]:
    return [i < right for i in range(n)]


@pytest.mark.parametrize("base, in_, rl, n, verdict", [
    (70, 70, 40, 100, "supported"),       # RL loses 30 of 100: a drop
    (200, 260, 320, 400, "contradicted"),  # every step rises: no step can hide a drop of 2 points
    (70, 70, 66, 100, "inconclusive"),    # 4-vs-0 items: not significant, and a drop is not ruled out
    (40, 70, 100, 100, "contradicted"),   # the sign-flipped version of the first row
])
def test_p1(tmp_path, base, in_, rl, n, verdict):
    out = _study(tmp_path)
    _finegrained(out / "finegrained", {"Base": _flags(n, base), "IN": _flags(n, in_), "RL": _flags(n, rl)})
    v = V.verdict_p1(out)
    assert v.verdict == verdict, v.evidence
    assert all(t["p_holm"] >= t["p"] for t in v.tests) and "Holm p=" in v.evidence


def test_p1_not_run(tmp_path):
    assert V.verdict_p1(_study(tmp_path)).verdict == "not run"


def test_p1_holm_over_the_family(tmp_path):
    """A drop that is significant alone (p = 0.0313, 6-vs-0) but not after Holm over the steps."""
    out = _study(tmp_path)
    _finegrained(out / "finegrained", {"Base": _flags(100, 50), "IN": _flags(100, 50), "RL": _flags(100, 44)})
    v = V.verdict_p1(out)
    drop = next(t for t in v.tests if t["name"] == "M_rea IN->RL")
    assert drop["p"] < 0.05 <= drop["p_holm"]
    assert v.verdict == "inconclusive"


# -- P2 ---------------------------------------------------------------------------------------------
def _attention(out: Path, shift: dict[int, float], n_layers: int = 6, layers: list[int] | None = None,
               noise: float = 0.002, n: int = 40) -> None:
    layers = layers if layers is not None else list(range(n_layers))
    rng = np.random.default_rng(0)
    base = 0.3 + rng.normal(0, 0.05, (n, len(layers)))
    rl = base + np.array([shift.get(x, 0.0) for x in layers]) + rng.normal(0, noise, (n, len(layers)))

    def recs(m: np.ndarray) -> list[dict[str, Any]]:
        return [{"id": f"i{i}", "n_response_tokens": 5, "mass": list(map(float, row))} for i, row in enumerate(m)]

    _w(out / "attention" / "attention.json", {"settings": {"n_layers": n_layers}, "layers": layers,
                                              "records": {"IN": recs(base), "RL": recs(rl)}})


@pytest.mark.parametrize("shift, noise, n, verdict", [
    ({2: 0.05, 3: 0.05, 4: 0.05, 5: 0.05}, 0.002, 40, "supported"),
    ({2: -0.05, 3: -0.05, 4: -0.05, 5: -0.05}, 0.002, 40, "contradicted"),  # sign flipped
    ({2: 0.001, 3: 0.001, 4: 0.001, 5: 0.001}, 0.002, 40, "contradicted"),  # significant but 0.3% of the mass
    ({2: 0.02, 3: 0.02, 4: 0.02, 5: 0.02}, 0.2, 12, "inconclusive"),
    ({0: 0.05, 1: 0.05, 2: 0.05, 3: 0.05, 4: 0.05, 5: 0.05}, 0.002, 40, "contradicted"),  # Early moves too
])
def test_p2(tmp_path, shift, noise, n, verdict):
    out = _study(tmp_path)
    _attention(out, shift, noise=noise, n=n)
    v = V.verdict_p2(out, n_boot=500)
    assert v.verdict == verdict, v.evidence
    assert "min effect" in v.evidence and len(v.tests) == 6


def test_p2_tiny_shift_is_significant_but_too_small(tmp_path):
    out = _study(tmp_path)
    _attention(out, {x: 0.001 for x in range(2, 6)}, noise=0.0005)
    v = V.verdict_p2(out, n_boot=500)
    late = [t for t in v.tests if t["region"] != "early"]
    assert all(t["ci_low"] > 0 for t in late)  # the shift is real ...
    assert all(t["outcome"] == "gain ruled out" for t in late)  # ... and rules out one of 5% of the mass


def test_p2_layer_subset_and_not_run(tmp_path):
    out = _study(tmp_path)
    assert V.verdict_p2(out).verdict == "not run"
    _attention(out, {}, n_layers=9, layers=[0, 1, 2])  # only Early layers probed
    assert V.verdict_p2(out, n_boot=200).verdict == "not run"


# -- P3 ---------------------------------------------------------------------------------------------
def _vision(out: Path, layers: list[int], n_layers: int, changed: dict[str, list[float]], n: int = 30) -> None:
    """changed: task -> per probed layer, the share of n pairs whose answer changes."""
    recs = [{"task": t, "changed": [i < round(r * n) for r in rates]} for t, rates in changed.items()
            for i in range(n)]
    _w(out / "localize-vision" / "base" / "localize_vision.json",
       {"settings": {"n_layers": n_layers}, "layers": layers, "records": recs})


def _reasoning(out: Path, layers: list[int], n_layers: int, wrong: dict[str, list[bool]], n: int = 40) -> None:
    """wrong: task -> per probed layer, whether skipping it makes every item of the task wrong."""
    recs = [{"task": t, "correct": [not w for w in ws]} for t, ws in wrong.items() for _ in range(n)]
    _w(out / "localize-reasoning" / "base" / "localize_reasoning.json",
       {"settings": {"n_layers": n_layers}, "layers": layers, "records": recs})


EVERY_THIRD = [0, 3, 6]  # of 9 layers: one per region


@pytest.mark.parametrize("recognition, counting, late_wrong, verdict", [
    ([1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [False, False, True], "supported"),
    ([1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [False, False, True], "contradicted"),  # recognition still changes Mid
    ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [False, False, True], "contradicted"),  # counting not sensitive Mid
    ([1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [True, False, False], "contradicted"),  # reasoning Early, not Late
])
def test_p3(tmp_path, recognition, counting, late_wrong, verdict):
    out = _study(tmp_path, organism=True)
    _vision(out, EVERY_THIRD, 9, {"recognition": recognition, "counting": counting})
    # image tasks break in Early; pooled with them, Late would not be highest: text-only items decide
    _reasoning(out, EVERY_THIRD, 9, {"word_problem": late_wrong, "more_than": [True, True, False]})
    v = V.verdict_p3(out, n_boot=300)
    assert v.verdict == verdict, v.evidence
    assert "(40 text items)" in v.evidence


def test_p3_inconclusive_and_not_run(tmp_path):
    out = _study(tmp_path, organism=True)
    assert V.verdict_p3(out).verdict == "not run"
    _vision(out, EVERY_THIRD, 9, {"recognition": [1.0, 0.0, 0.0], "counting": [1.0, 0.5, 0.0]}, n=4)
    _reasoning(out, EVERY_THIRD, 9, {"word_problem": [False, False, True]}, n=3)
    assert V.verdict_p3(out, n_boot=300).verdict == "inconclusive"


def test_p3_partitions_by_the_models_layers(tmp_path):
    """Layers 0-9 of a 28-layer model: 9 is Mid, nothing is Late (the old code called 6-9 "late");
    one reasoning dataset (no "all" group) works."""
    out = _study(tmp_path)
    layers = list(range(10))
    _vision(out, layers, 28, {"recognition": [1.0] * 9 + [0.0]})
    _reasoning(out, layers, 28, {"gsm8k": [False] * 10})
    v = V.verdict_p3(out, n_boot=200)
    assert "swap from L9 (mid)" in v.evidence and "no Late layer probed" in " ".join(v.notes)
    assert v.verdict == "inconclusive"


# -- P4 / P5 ------------------------------------------------------------------------------------------
def _diff(out: Path, fro: dict[str, dict[str, float]], rank: dict[str, dict[str, float]] | None = None,
          embed_rl: float = 0.0) -> None:
    """fro / rank: label ("in"/"rl") -> region -> mean ||dW||_F / mean effective rank (3 layers each)."""
    regions = {"early": [0, 1, 2], "mid": [3, 4, 5], "late": [6, 7, 8]}
    tensors = [{"component": "llm", "selected": True, "layer": x,
                "stats": {lb: {"fro": fro[lb][reg]} for lb in fro}} for reg, ls in regions.items() for x in ls]
    tensors.append({"component": "embed", "selected": True, "layer": None,
                    "stats": {"in": {"fro": 0.0}, "rl": {"fro": embed_rl}}})
    _w(out / "diff" / "diff.json", {"regions": [
        {"region": reg, "stats": {lb: {"fro_mean": fro[lb][reg],
                                       "effective_rank_mean": (rank or {}).get(lb, {}).get(reg, 1.0)} for lb in fro}}
        for reg in regions], "tensors": tensors})


def _energy(peak_in: str = "mid", peak_rl: str = "mid", scale: float = 0.05, tie: bool = False) -> dict:
    def prof(peak: str, s: float) -> dict[str, float]:
        d = {"early": 1.0 * s, "mid": 1.0 * s, "late": 1.0 * s}
        d[peak] = 2.0 * s
        if tie:
            d["late"] = 1.98 * s
        return d
    return {"in": prof(peak_in, 1.0), "rl": prof(peak_rl, scale)}


@pytest.mark.parametrize("energy, embed_rl, verdict", [
    (_energy(), 100.0, "supported"),  # the RL embedding change is not an LLM layer: the ratio stays 20
    (_energy(peak_rl="late"), 0.0, "contradicted"),
    (_energy(scale=0.5), 0.0, "contradicted"),  # RL only 2x smaller
    (_energy(tie=True), 0.0, "inconclusive"),  # Mid and Late within 1%
])
def test_p4(tmp_path, energy, embed_rl, verdict):
    out = _study(tmp_path)
    _diff(out, energy, embed_rl=embed_rl)
    v = V.verdict_p4(out)
    assert v.verdict == verdict, v.evidence


def test_p4_zero_update_is_not_applicable_and_not_run(tmp_path):
    out = _study(tmp_path)
    assert V.verdict_p4(out).verdict == "not run"
    _diff(out, _energy(scale=0.0))
    v = V.verdict_p4(out)
    assert v.verdict == "not applicable" and "changed no LLM decoder weight" in v.evidence
    assert "e+" not in v.evidence  # no 8.4e29-style ratio


def _ranks(mid: float, late: float, early: float) -> dict:
    """RL's effective rank relative to IN's (IN = 10 everywhere)."""
    return {"in": {"early": 10.0, "mid": 10.0, "late": 10.0},
            "rl": {"early": 10.0 * early, "mid": 10.0 * mid, "late": 10.0 * late}}


@pytest.mark.parametrize("ranks, verdict", [
    (_ranks(0.8, 0.8, 1.2), "supported"),
    (_ranks(1.2, 1.2, 0.8), "contradicted"),  # sign flipped
    (_ranks(0.8, 0.98, 1.2), "inconclusive"),  # Late a tie within 5%
])
def test_p5(tmp_path, ranks, verdict):
    out = _study(tmp_path)
    _diff(out, _energy(), rank=ranks)
    assert V.verdict_p5(out).verdict == verdict


def test_p5_not_run_and_not_applicable(tmp_path):
    out = _study(tmp_path)
    assert V.verdict_p5(out).verdict == "not run"
    _diff(out, _energy(), rank={"in": {"early": 5.0, "mid": 5.0, "late": 5.0},
                                "rl": {"early": 0.0, "mid": 0.0, "late": 0.0}})
    assert V.verdict_p5(out).verdict == "not applicable"


# -- P6 ---------------------------------------------------------------------------------------------
def _hybrids(unit: Path, n: int, in_v2r: int, hy_v2r: int, in_rea: int, hy_rea: int) -> None:
    _w(unit / "finegrained.json", {})

    def recs(v2r: int, rea: int) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            out += [{"id": f"v{i}", "condition": "image", "correct": i < v2r},
                    {"id": f"v{i}", "condition": "black_desc", "correct": True},
                    {"id": f"t{i}", "condition": "text", "correct": i < rea}]
        return out

    _w(unit / "models" / "IN.json", {"records": recs(in_v2r, in_rea)})
    _w(unit / "models" / "IN_RL_RL.json", {"records": recs(hy_v2r, hy_rea)})  # safe file name of IN:RL:RL


@pytest.mark.parametrize("counts, verdict", [
    ((100, 40, 60, 40, 60), "supported"),
    ((100, 60, 40, 60, 40), "contradicted"),  # sign flipped
    ((400, 200, 202, 200, 200), "contradicted"),  # a 2-item gain on 400: a gain of 2 points is ruled out
    ((100, 40, 44, 40, 44), "inconclusive"),
])
def test_p6(tmp_path, counts, verdict):
    out = _study(tmp_path)
    _hybrids(out / "hybrids", *counts)
    v = V.verdict_p6(out)
    assert v.verdict == verdict, v.evidence


def test_p6_not_run(tmp_path):
    assert V.verdict_p6(_study(tmp_path)).verdict == "not run"


# -- P7 ---------------------------------------------------------------------------------------------
def _stage(folder: Path, correct: dict[str, bool]) -> None:
    _w(folder / "stage.json", {"heldout": {"correct": correct}})


def _p7(tmp_path: Path, late: int, early: int, n: int = 400, seeds: dict[int, tuple[int, int]] | None = None):
    """Held-out v2r items: the control gets the first half right; a frozen run gains (> 0) or loses (< 0)
    that many items. seeds: RL seed -> (late, early) for several seeds."""
    from frankenscope.study.run import rerun_folder, write_frozen_heldout

    ids = [f"digit_sum_{i}" for i in range(n)]
    root, unit = tmp_path / "organism", tmp_path / "study" / "freeze"
    seeds = seeds or {0: (late, early)}

    def run(shift: int) -> dict[str, bool]:
        c = {i: k < n // 2 for k, i in enumerate(ids)}
        for k in range(abs(shift)):
            c[ids[n // 2 + k if shift > 0 else k]] = shift > 0
        return c

    for s, (lt, er) in seeds.items():
        _stage(root / rerun_folder("control", s, 0), run(0))
        _stage(root / rerun_folder("late", s, 0), run(lt))
        _stage(root / rerun_folder("early", s, 0), run(er))
    unit.mkdir(parents=True, exist_ok=True)
    write_frozen_heldout(unit, root, ["early", "late"], seed=0, seeds=list(seeds))
    _study(tmp_path / "study")
    return V.verdict_p7(tmp_path / "study")


@pytest.mark.parametrize("late, early, verdict", [
    (-40, 0, "supported"), (-40, 40, "supported"),
    (-40, -40, "contradicted"),  # freezing Early costs too (was "inconclusive" in the old table)
    (0, -40, "contradicted"), (0, 0, "contradicted"),  # Late frozen provably costs < 2 points
    (40, 0, "contradicted"), (40, -40, "contradicted"),  # sign flipped
])
def test_p7_truth_table(tmp_path, late, early, verdict):
    v = _p7(tmp_path, late, early)
    assert v.verdict == verdict, v.evidence
    assert "1 seed(s)" in v.evidence and "not in the interval" in v.evidence


def test_p7_inconclusive_not_run_and_seeds(tmp_path):
    assert _p7(tmp_path / "a", -4, 0, n=100).verdict == "inconclusive"  # 4-vs-0 on 100 items
    assert V.verdict_p7(_study(tmp_path / "b")).verdict == "not run"
    # every seed alone supports, but the seeds disagree by more than the effect: run-to-run variance wins
    v = _p7(tmp_path / "c", 0, 0, seeds={0: (-40, 0), 1: (-2, 0)})
    assert v.verdict != "supported" and "2 seed(s) [0, 1]" in v.evidence
    assert "includes run-to-run" in v.evidence
    v = _p7(tmp_path / "d", 0, 0, seeds={0: (-40, 0), 1: (-42, 0), 2: (-38, 0)})
    assert v.verdict == "supported", v.evidence


def test_frozen_heldout_names_missing_stage(tmp_path):
    from frankenscope.errors import FrankenscopeError
    from frankenscope.study.run import write_frozen_heldout

    _stage(tmp_path / "rl-control", {"more_than_0": True})
    with pytest.raises(FrankenscopeError, match="rl-frozen-mid"):
        write_frozen_heldout(tmp_path / "unit", tmp_path, ["mid"], seed=0)


# -- the report ----------------------------------------------------------------------------------------
def test_report_is_written_when_a_claim_cannot_be_decided(tmp_path):
    from frankenscope.study.report import write_report

    out = _study(tmp_path)
    _finegrained(out / "finegrained", {"Base": _flags(100, 70), "IN": _flags(100, 70), "RL": _flags(100, 40)})
    (out / "attention").mkdir()
    (out / "attention" / "attention.json").write_text('{"settings": {}}')  # broken
    write_report(out)
    md = (out / "report.md").read_text()
    assert "| P2 |" in md and "**error**" in md and "unit attention" in md
    assert "| P1 |" in md and "**supported**" in md
    assert all(f"**{c}**:" in md for c in V.RULES)  # the rules footer
    doc = json.loads((out / "verdicts.json").read_text())
    p1 = next(v for v in doc["verdicts"] if v["claim"] == "P1")
    assert all("p_holm" in t for t in p1["tests"]) and doc["min_effects"]["accuracy"] == V.MIN_ACCURACY


# -- grounding scoring ----------------------------------------------------------------------------------
def _pair(target: str, source: str) -> Any:
    from frankenscope.data.schema import ProbePair

    return ProbePair(id="g", task="grounding", target_image="t.png", source_image="s.png", prompt="Locate",
                     target_answer=target, source_answer=source, answer_type="box")


def test_grounding_change_and_flip_by_iou():
    from frankenscope.probes.swap import PairSweep, score_pair

    pair = _pair("10,10,40,40", "60,60,90,90")
    sweep = PairSweep("g", [0, 1, 2], clean="10,10,40,40", swapped=["11,10,41,40", "61,60,91,90", "25,10,55,40"])
    rec = score_pair(pair, sweep)
    assert rec.changed == [False, True, True]  # one pixel of jitter is no change (the old string rule: True)
    assert rec.flipped == [False, True, False] and rec.kept == [True, False, False]
    assert rec.unswapped_correct


def test_grounding_gold_boxes_rescaled_to_the_seen_image():
    import torch
    from PIL import Image

    from frankenscope.probes.swap import PairSweep, score_pair, seen_scale

    class Proc:
        class image_processor:  # noqa: N801 - mimics the processor attribute
            patch_size = 14

    from frankenscope.adapters import get_adapter

    grid = {"image_grid_thw": torch.tensor([[1, 8, 8]])}
    qwen = get_adapter("Qwen2VLForConditionalGeneration")
    scale = seen_scale(grid, Proc(), Image.new("RGB", (200, 200)), qwen)
    assert scale == (112 / 200, 112 / 200)
    # a family without a resize grid answers in its own frame: no rescale
    assert seen_scale(grid, Proc(), Image.new("RGB", (200, 200)), get_adapter("Gemma3ForConditionalGeneration")) \
        == (1.0, 1.0)
    pair = _pair("10,10,40,40", "60,60,90,90")  # original 200-px pixels; the model sees 112 px
    sweep = PairSweep("g", [0], clean="6,6,22,22", swapped=["34,34,50,50"])
    rec = score_pair(pair, sweep, box_scale=scale)
    assert rec.unswapped_correct and rec.flipped == [True]
    assert score_pair(pair, sweep).flipped == [False]  # unscaled gold boxes miss


def test_iou_threshold_is_strict():
    from frankenscope.data.schema import Item
    from frankenscope.evaluate.extract import grade

    item = Item(id="b", task="grounding", prompt="p", answer="0,0,2,2", answer_type="box")
    assert not grade("0,0,2,1", item)  # IoU exactly 0.5: not > 0.5
    assert grade("0,0,2,1.1", item)
