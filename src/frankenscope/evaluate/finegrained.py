"""Fine-grained abilities (paper Table 1, Eqs. 4-6): vision, vision-to-reasoning alignment, reasoning.

Notation: f(i, p) is the model's graded answer with the real image i and prompt p, f(b, p) with an
all-black image b of the same size, f(b, d, p) with the black image and a textual description d of
i, f(p) on a text-only item; y is the gold answer. Over the N items of a metric's set:

    M_vis = (1/N) Σ 1[f(i,p) = y  and  f(b,p) != y]      (Eq. 4; right only when the model sees the image)
    M_v2r = (1/N) Σ 1[f(i,p) = y  and  f(b,d,p) = y]     (Eq. 5; right both with the image and with its description)
    M_rea = (1/N) Σ 1[f(p) = y]                          (Eq. 6; text-only accuracy)

With A the image condition and B the control (black image, or black image + description), every item
falls in one cell of the 2x2 table n_TT, n_TF, n_FT, n_FF (first letter: A right/wrong; second: B), so
M_vis = n_TF / N and M_v2r = n_TT / N; acc_A = (n_TT + n_TF)/N, acc_B = (n_TT + n_FT)/N,
net_gain = n_FT - n_TF, side_effect_rate = n_TF/(n_TT + n_TF) and lift_rate = n_FT/(n_FF + n_FT)
(the reference code's transition statistics; a rate with a zero
denominator is reported as 0).

Ungraded items (an LLM judge that failed, a missing description) are neither right nor wrong: they
are left out of N for every metric that needs them and counted in `n_ungraded`. Without a judge
every item is graded, so N is the full set, as in the paper.

Every value is a proportion and comes with its Wilson 95% interval (`metrics.wilson_interval`); the
average over benchmarks uses a stratified bootstrap (`stratified_mean_ci`, `n_boot` resamples). Two
models on the same items are compared by the mean per-item difference of the metric's indicator
(later minus earlier) with Newcombe's paired score interval and McNemar's exact test on the
discordant items (`metrics.paired_binary`: significant only when both agree).

Conditions run per model: "image" (every item with an image), "black" (the M_vis set), "black_desc"
(the M_v2r set) and "text" (the M_rea set and text-only benchmark items).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.extract import extract_answer, grade
from frankenscope.evaluate.metrics import (
    ALPHA,
    degenerate_interval,
    mcnemar_exact,
    paired_binary,
    proportion_summary,
)
from frankenscope.evaluate.prompts import PromptStyle

Label = bool | None

#: condition -> (black_image, with_description)
CONDITIONS: dict[str, tuple[bool, bool]] = {
    "image": (False, False),
    "black": (True, False),
    "black_desc": (True, True),
    "text": (False, False),
}
METRICS = ("M_vis", "M_v2r", "M_rea")


# --------------------------------------------------------------------------- formulas


def _safe_rate(num: int, den: int) -> float:
    return num / den if den else 0.0


def transitions(a: Sequence[Label], b: Sequence[Label]) -> dict[str, Any]:
    """The 2x2 table of two paired conditions over items graded in both (None = ungraded, left out)."""
    if len(a) != len(b):
        raise FrankenscopeError(f"transitions need paired labels ({len(a)} vs {len(b)})")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    tt = sum(1 for x, y in pairs if x and y)
    tf = sum(1 for x, y in pairs if x and not y)
    ft = sum(1 for x, y in pairs if not x and y)
    ff = sum(1 for x, y in pairs if not x and not y)
    n = len(pairs)
    acc_a, acc_b = _safe_rate(tt + tf, n), _safe_rate(tt + ft, n)
    return {"N": n, "n_ungraded": len(a) - n, "n_TT": tt, "n_TF": tf, "n_FT": ft, "n_FF": ff,
            "acc_A": acc_a if n else math.nan, "acc_B": acc_b if n else math.nan,
            "delta_acc": acc_a - acc_b if n else math.nan, "net_gain": ft - tf,
            "side_effect_rate": _safe_rate(tf, tt + tf), "lift_rate": _safe_rate(ft, ff + ft)}


def m_vis_indicators(a: Sequence[Label], b: Sequence[Label]) -> list[Label]:
    """Per item: right with the image and wrong with the black image (None when either is ungraded)."""
    return [None if x is None or y is None else bool(x and not y) for x, y in zip(a, b, strict=True)]


def m_v2r_indicators(a: Sequence[Label], c: Sequence[Label]) -> list[Label]:
    """Per item: right with the image and right with the black image + description."""
    return [None if x is None or y is None else bool(x and y) for x, y in zip(a, c, strict=True)]


def m_vis(a: Sequence[Label], b: Sequence[Label], seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """M_vis (Eq. 4) = n_TF / N with its CI; `a` image labels, `b` black-image labels, item-aligned."""
    ind = [x for x in m_vis_indicators(a, b) if x is not None]
    return {**proportion_summary(ind), "n_ungraded": len(a) - len(ind)}


def m_v2r(a: Sequence[Label], c: Sequence[Label], seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """M_v2r (Eq. 5) = n_TT / N with its CI; `c` black image + description labels."""
    ind = [x for x in m_v2r_indicators(a, c) if x is not None]
    return {**proportion_summary(ind), "n_ungraded": len(a) - len(ind)}


def m_rea(t: Sequence[Label], seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """M_rea (Eq. 6) = text-only accuracy with its CI."""
    ind = [x for x in t if x is not None]
    return {**proportion_summary(ind), "n_ungraded": len(t) - len(ind)}


def paired_comparison(x: dict[str, Label], y: dict[str, Label], seed: int = 0, alpha: float = ALPHA
                      ) -> dict[str, Any]:
    """Model y vs model x on the ids graded for both (`metrics.paired_binary`): {n, value_a, value_b,
    diff (= b - a), ci_low, ci_high (Newcombe), n_a_only, n_b_only, mcnemar_p (= p), p, significant}."""
    ids = [i for i in x if i in y and x[i] is not None and y[i] is not None]
    d = paired_binary([bool(x[i]) for i in ids], [bool(y[i]) for i in ids], alpha)
    return {"n": d["n"], "value_a": d["mean_a"], "value_b": d["mean_b"], "diff": d["diff"],
            "ci_low": d["ci_low"], "ci_high": d["ci_high"], "n_a_only": d["n_a_only"], "n_b_only": d["n_b_only"],
            "mcnemar_p": d["p"], "p": d["p"], "significant": d["significant"], "method": d["method"]}


def stratified_mean_ci(groups: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0,
                       alpha: float = 0.05, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float, float]:
    """(mean of the group means, CI low, CI high): each of the `n_boot` bootstrap resamples redraws items
    within every group (for the average accuracy over benchmarks of different sizes). When the resampled
    means cannot vary (all values equal) the interval is `metrics.degenerate_interval` over all items
    (`bounds`: the range of one value: (0, 1) for accuracies, (-1, 1) for paired differences)."""
    if n_boot < 1:
        raise FrankenscopeError(f"the stratified bootstrap needs n_boot >= 1 (got {n_boot})")
    arrays = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not arrays:
        return (math.nan, math.nan, math.nan)
    value = float(np.mean([g.mean() for g in arrays]))
    if all(np.all(g == arrays[0][0]) for g in arrays):
        return (value, *degenerate_interval(value, sum(g.size for g in arrays), bounds, alpha))
    rng = np.random.default_rng(seed)
    stats = np.zeros(n_boot)
    for g in arrays:
        stats += g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1)
    stats /= len(arrays)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (value, float(lo), float(hi))


# --------------------------------------------------------------------------- item sets and the run


@dataclass
class MetricSets:
    """Which items each metric uses. bench: benchmark name -> items (accuracy, averaged over benchmarks).

    definitions: a sentence per set saying how it was chosen (recorded in the results).
    """

    vis: list[Item]
    v2r: list[Item]
    rea: list[Item]
    bench: dict[str, list[Item]] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)

    def plan(self) -> dict[str, list[Item]]:
        """condition -> the items to run in it (each item once per condition, first occurrence order)."""
        def what(it: Item) -> tuple[Any, ...]:  # what is asked (a description may be attached to one copy)
            return (it.prompt, it.answer, it.answer_type, it.image)

        def uniq(items: list[Item]) -> list[Item]:
            seen: dict[str, Item] = {}
            for it in items:
                if it.id in seen and what(seen[it.id]) != what(it):
                    raise FrankenscopeError(f"two different items share the id {it.id!r}")
                seen.setdefault(it.id, it)
            return list(seen.values())

        bench_items = [it for items in self.bench.values() for it in items]
        return {
            "image": uniq([it for it in [*self.vis, *self.v2r, *bench_items] if it.image is not None]),
            "black": uniq(self.vis),
            "black_desc": uniq(self.v2r),
            "text": uniq([*self.rea, *[it for it in bench_items if it.image is None]]),
        }

    def ids(self) -> dict[str, Any]:
        return {"vis": [it.id for it in self.vis], "v2r": [it.id for it in self.v2r],
                "rea": [it.id for it in self.rea], "bench": {k: [it.id for it in v] for k, v in self.bench.items()}}

    def check(self) -> None:
        for it in self.vis + self.v2r:
            if it.image is None:
                raise FrankenscopeError(f"item {it.id!r} is in the M_vis/M_v2r set but has no image")
        for it in self.rea:
            if it.image is not None:
                raise FrankenscopeError(f"item {it.id!r} is in the M_rea set but has an image (M_rea is text-only)")


@dataclass
class Record:
    """One graded response in one condition. correct = judge_correct with a judge, else rule_correct;
    None means ungraded."""

    id: str
    task: str
    condition: str
    response: str | None
    extracted: str | None
    rule_correct: bool | None
    judge_correct: bool | None = None
    correct: bool | None = None
    error: str | None = None


Judge = Callable[[Item, str, str], dict[str, Any]]


def grade_response(item: Item, response: str, judge: Judge | None = None) -> dict[str, Any]:
    """Rule-based grade (`extract.grade`, with math-verify when installed) and, with a judge, its verdict.
    The primary label is the judge's when a judge is used (None if the judge failed), else the rule's."""
    extracted = extract_answer(response)
    rule = grade(response, item)
    out: dict[str, Any] = {"extracted": extracted, "rule_correct": rule, "judge_correct": None,
                           "correct": rule, "error": None}
    if judge is not None:
        verdict = judge(item, response, extracted)
        out["judge_correct"] = verdict.get("judge_correct")
        out["correct"] = verdict.get("judge_correct")
        out["error"] = verdict.get("judge_error")
    return out


def run_conditions(generate: Callable[..., list[str]], style: PromptStyle, sets: MetricSets,
                   judge: Judge | None = None, log: Callable[[str], None] | None = None) -> list[Record]:
    """Generate and grade every planned (condition, item). Items of the description condition without a
    description are recorded ungraded (error "no description") and not generated."""
    records: list[Record] = []
    for cond, items in sets.plan().items():
        if not items:
            continue
        black, with_desc = CONDITIONS[cond]
        runnable = [it for it in items if not with_desc or it.description]
        for it in items:
            if with_desc and not it.description:
                records.append(Record(it.id, it.task, cond, None, None, None, error="no description"))
        if not runnable:
            continue
        if log:
            log(f"  {cond}: {len(runnable)} items")
        rendered = [style.apply(it, with_description=with_desc) for it in runnable]
        responses = generate(rendered, black_image=black)
        if len(responses) != len(rendered):
            raise FrankenscopeError(f"generator returned {len(responses)} responses for {len(rendered)} items")
        for it, resp in zip(rendered, responses, strict=True):
            g = grade_response(it, resp, judge)
            records.append(Record(it.id, it.task, cond, resp, g["extracted"], g["rule_correct"],
                                  g["judge_correct"], g["correct"], g["error"]))
    return records


def labels_by_condition(records: list[Record]) -> dict[str, dict[str, Label]]:
    out: dict[str, dict[str, Label]] = {c: {} for c in CONDITIONS}
    for r in records:
        out[r.condition][r.id] = r.correct
    return out


def indicators(labels: dict[str, dict[str, Label]], sets: MetricSets) -> dict[str, dict[str, Label]]:
    """Per metric, item id -> the metric's per-item indicator (None when ungraded). Benchmarks use the keys
    "bench:<name>" with the image or text accuracy of each item."""
    img, blk, dsc, txt = (labels.get(c, {}) for c in ("image", "black", "black_desc", "text"))
    out: dict[str, dict[str, Label]] = {
        "M_vis": {it.id: m_vis_indicators([img.get(it.id)], [blk.get(it.id)])[0] for it in sets.vis},
        "M_v2r": {it.id: m_v2r_indicators([img.get(it.id)], [dsc.get(it.id)])[0] for it in sets.v2r},
        "M_rea": {it.id: txt.get(it.id) for it in sets.rea},
    }
    for name, items in sets.bench.items():
        out[f"bench:{name}"] = {it.id: (img if it.image is not None else txt).get(it.id) for it in items}
    return out


def model_metrics(records: list[Record], sets: MetricSets, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Metrics, 2x2 tables and benchmark accuracies of one model from its graded records."""
    labels = labels_by_condition(records)
    img, blk, dsc, txt = (labels[c] for c in ("image", "black", "black_desc", "text"))
    metrics: dict[str, Any] = {}
    trans: dict[str, Any] = {}
    if sets.vis:
        a = [img.get(it.id) for it in sets.vis]
        b = [blk.get(it.id) for it in sets.vis]
        metrics["M_vis"] = m_vis(a, b, seed, n_boot)
        trans["vis"] = _with_acc_cis(transitions(a, b), a, b, seed, n_boot)
    if sets.v2r:
        a = [img.get(it.id) for it in sets.v2r]
        c = [dsc.get(it.id) for it in sets.v2r]
        metrics["M_v2r"] = m_v2r(a, c, seed, n_boot)
        trans["v2r"] = _with_acc_cis(transitions(a, c), a, c, seed, n_boot)
    if sets.rea:
        metrics["M_rea"] = m_rea([txt.get(it.id) for it in sets.rea], seed, n_boot)
    bench: dict[str, Any] = {}
    groups = []
    for name, values in indicators(labels, sets).items():
        if not name.startswith("bench:"):
            continue
        graded = [bool(v) for v in values.values() if v is not None]
        bench[name[6:]] = {**proportion_summary(graded), "n_ungraded": len(values) - len(graded)}
        groups.append([float(v) for v in graded])
    if bench:
        value, lo, hi = stratified_mean_ci(groups, n_boot=n_boot, seed=seed)
        metrics["benchmark"] = {"value": value, "ci_low": lo, "ci_high": hi, "n": sum(len(g) for g in groups),
                                "count": int(sum(sum(g) for g in groups)),
                                "n_ungraded": sum(b["n_ungraded"] for b in bench.values()),
                                "benchmarks": sorted(bench)}
    return {"metrics": metrics, "transitions": trans, "benchmarks": bench}


def _with_acc_cis(t: dict[str, Any], a: list[Label], b: list[Label], seed: int, n_boot: int) -> dict[str, Any]:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    ra = proportion_summary([bool(x) for x, _ in pairs])
    rb = proportion_summary([bool(y) for _, y in pairs])
    return {**t, "acc_A_ci": [ra["ci_low"], ra["ci_high"]], "acc_B_ci": [rb["ci_low"], rb["ci_high"]]}


def compare_models(ind_a: dict[str, dict[str, Label]], ind_b: dict[str, dict[str, Label]], seed: int = 0,
                   n_boot: int = 2000) -> dict[str, Any]:
    """Paired comparison (b vs a) for each metric both have (`paired_comparison`: analytic, so `n_boot` has
    nothing to resample there); "benchmark" is the average over benchmarks (stratified paired bootstrap with
    `n_boot` resamples; McNemar on the pooled items)."""
    out: dict[str, Any] = {}
    for m in METRICS:
        if m in ind_a and m in ind_b and ind_a[m]:
            out[m] = paired_comparison(ind_a[m], ind_b[m], seed=seed)
    benches = sorted(k for k in ind_a if k.startswith("bench:") and k in ind_b)
    if benches:
        diffs, only_a, only_b = [], 0, 0
        for k in benches:
            ids = [i for i in ind_a[k] if i in ind_b[k] and ind_a[k][i] is not None and ind_b[k][i] is not None]
            x = [float(bool(ind_a[k][i])) for i in ids]
            y = [float(bool(ind_b[k][i])) for i in ids]
            diffs.append([q - p for p, q in zip(x, y, strict=True)])
            only_a += sum(1 for p, q in zip(x, y, strict=True) if p > q)
            only_b += sum(1 for p, q in zip(x, y, strict=True) if q > p)
        value, lo, hi = stratified_mean_ci(diffs, n_boot=n_boot, seed=seed, bounds=(-1.0, 1.0))
        p = mcnemar_exact(only_a, only_b)
        out["benchmark"] = {"n": sum(len(d) for d in diffs), "diff": value, "ci_low": lo, "ci_high": hi,
                            "n_a_only": only_a, "n_b_only": only_b, "mcnemar_p": p, "p": p, "n_boot": n_boot,
                            "significant": bool(p < ALPHA and (lo > 0 or hi < 0))}
    return out
