"""The verdicts on the paper's claims P1-P7, each a stated rule over a study's result files.

Every claim gets one of: supported, contradicted, inconclusive, not run (its unit's result is
missing), not applicable (the claim's statistic is undefined, e.g. an update of zero), or error (a
result file could not be read; the report is still written and names the unit). The rules, claim
by claim, are `RULES` below (also printed as the report's footer). Common vocabulary:

* alpha = 0.05, two-sided unless said otherwise. Holm's adjustment runs within each claim's family
  of tests; "significant" means Holm-adjusted p < alpha *and* the interval excludes 0 on that side.
* Paired accuracies (0/1 per item, same items): Newcombe score interval + exact McNemar
  (`metrics.paired_binary`). Continuous per-item values: paired bootstrap + sign-flip test.
* A difference d with interval [lo, hi] against a minimum effect delta > 0 is judged as
    gain:    met if significant and d >= delta;   failed if hi < delta  (the interval rules out a gain that matters)
    loss:    met if significant and d <= -delta;  failed if lo > -delta
    no loss: met if lo > -delta;                  failed if the loss is met
  and unclear otherwise. A claim made of several parts is supported when every part is met,
  contradicted when any part failed, inconclusive otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frankenscope.analyses import claim_units
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.metrics import ALPHA, holm, paired_binary, paired_continuous, wilson_interval
from frankenscope.io import safe_filename
from frankenscope.weights.partition import Partition

METRICS = ("M_vis", "M_v2r", "M_rea")
#: Smallest accuracy difference that matters: the paper's smallest differences read as effects are
#: 2-3 points (P7: M_v2r 27 vs 29; P1: Reasoning 63 -> 60), and at N = 100 one item is 1 point.
MIN_ACCURACY = 0.02
#: Smallest attention shift that matters, relative to IN's own mass in that layer: the demo's
#: 0.001 shifts on a mass of 0.3 (0.3%) change nothing a layer reads from the image.
MIN_ATTENTION_RELATIVE = 0.05
#: A swap "still matters" at a layer when at least this share of answers changes (one in four).
MIN_CHANGE_RATE = 0.25
#: Two regions' mean update norms or effective ranks within 5% of each other are a tie, not an order
#: (layers of one region already differ by more than that).
MIN_RELATIVE = 0.05
#: P4: RL's update is "an order of magnitude smaller" when ||dW_IN|| / ||dW_RL|| >= 10.
ENERGY_RATIO = 10.0
VERDICTS = ("supported", "contradicted", "inconclusive", "not run", "not applicable", "error")

STATEMENTS = {
    "P1": "Fine-grained abilities do not all rise monotonically Base -> IN -> RL.",
    "P2": "RL attends more from reasoning tokens to image tokens than IN in most Mid-Late layers, ~0 Early.",
    "P3": "On Base: recognition is localized Early, OCR/counting/grounding stay sensitive into Mid, reasoning "
          "is Late.",
    "P4": "Update energy per LLM layer peaks in the Mid third for IN-Base and for RL-IN, and RL-IN is >= 10x "
          "smaller than IN-Base.",
    "P5": "RL-IN updates are lower-rank than IN-Base in Mid and Late layers; IN-Base is the lower-rank one Early.",
    "P6": "The IN:RL:RL hybrid (RL's Mid+Late in IN) beats IN on M_v2r and M_rea.",
    "P7": "RL with the Late region frozen scores below full RL on vision-to-reasoning; freezing Early costs "
          "nothing.",
}

RULES = {
    "P1": f"Six paired tests (M_vis, M_v2r, M_rea x Base->IN, IN->RL; Newcombe + McNemar, Holm over the six). "
          f"Supported: some step is a loss (significant drop >= {MIN_ACCURACY}). Contradicted: every step is a "
          f"no loss (lower bound > -{MIN_ACCURACY}). Inconclusive otherwise. Not run: no finegrained unit.",
    "P2": f"Per probed layer, RL - IN attention mass (paired bootstrap interval, sign-flip test, Holm over the "
          f"layers; minimum effect {MIN_ATTENTION_RELATIVE:.0%} of IN's mass in that layer). Regions from the "
          f"model's layer count. Part A: more than half of the probed Mid+Late layers a gain (failed: more than "
          f"half ruled out). Part B: no Early layer a gain or a loss. Supported: A met and B not failed; "
          f"contradicted: A or B failed. Not run: no attention unit or no Mid/Late layer probed.",
    "P3": f"On Base, regions from the model's layer count, any probed layer subset. Vision (change rate when "
          f"the swap starts at a region's first probed layer, exact one-sided binomial test against "
          f"{MIN_CHANGE_RATE}, Wilson interval): recognition sensitive Early and insensitive Mid; OCR, counting, "
          f"grounding sensitive Mid. Reasoning (layer skipping on text-only items; per item, mean error over a "
          f"region's probed layers): Late - Early and Late - Mid both a gain >= {MIN_ACCURACY}. Holm over all "
          f"P3 tests; a part is met when its test is significant, failed when the interval rules it out. "
          f"Supported: all parts met; contradicted: a part failed. Not run: neither localization ran.",
    "P4": f"LLM decoder layers only (embeddings, vision tower, projector, lm_head excluded). Deterministic: "
          f"mean ||dW||_F per region; a peak is met when Mid beats both other regions by >= {MIN_RELATIVE:.0%}, "
          f"failed when another region beats Mid by >= {MIN_RELATIVE:.0%}, a tie otherwise; the ratio of total "
          f"LLM update norms IN/RL is met when >= {ENERGY_RATIO:g}. Not applicable: an update of zero.",
    "P5": f"LLM decoder layers only. Deterministic: mean effective rank per region (singular values above "
          f"1e-6 s_1); relative difference r = (rank_RL - rank_IN) / rank_IN. Mid and Late: met when "
          f"r <= -{MIN_RELATIVE:.0%}, failed when r >= +{MIN_RELATIVE:.0%}; Early the other way round; a tie "
          f"otherwise. Not applicable: an update of zero.",
    "P6": f"IN:RL:RL - IN on M_v2r and on M_rea (Newcombe + McNemar, Holm over the two): both a gain >= "
          f"{MIN_ACCURACY} supports; either ruled out (upper bound < {MIN_ACCURACY}) contradicts. Not run: no "
          f"hybrids unit.",
    "P7": f"On the organism's held-out vision-to-reasoning items: frozen-region RL re-run - unfrozen RL re-run "
          f"(the control: same trainer, worker process and threads, same seeds). One seed: Newcombe + McNemar; "
          f"two or more: the mean over seeds with run-to-run and item variance (t, seeds - 1 df). Holm over "
          f"late and early. Late frozen a loss >= {MIN_ACCURACY} and Early frozen a no loss (lower bound > "
          f"-{MIN_ACCURACY}) supports; either failing contradicts. Not run: no freeze unit (organism only).",
}

__doc__ = (__doc__ or "") + "\nRules:\n\n" + "\n\n".join(f"{c}: {STATEMENTS[c]}\n    {RULES[c]}" for c in RULES)


@dataclass
class Verdict:
    claim: str
    statement: str
    verdict: str
    evidence: str
    tests: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- decision helpers
def _row(name: str, d: dict[str, Any], delta: float) -> dict[str, Any]:
    """A test row: name, estimate, interval, raw p, min effect (p_holm and outcome are filled in later)."""
    return {"name": name, "estimate": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "p": d["p"],
            "n": d.get("n"), "min_effect": delta, "p_holm": None, "outcome": None}


def _adjust(rows: list[dict[str, Any]]) -> None:
    for r, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = p


def _sig(r: dict[str, Any], sign: int) -> bool:
    side = r["ci_low"] > 0 if sign > 0 else r["ci_high"] < 0
    return r["p_holm"] is not None and r["p_holm"] < ALPHA and side


def gain(r: dict[str, Any]) -> str:
    """met: significant and estimate >= delta; failed: upper bound < delta; unclear otherwise."""
    if _sig(r, 1) and r["estimate"] >= r["min_effect"]:
        return "met"
    return "failed" if r["ci_high"] < r["min_effect"] else "unclear"


def loss(r: dict[str, Any]) -> str:
    """met: significant and estimate <= -delta; failed: lower bound > -delta; unclear otherwise."""
    if _sig(r, -1) and r["estimate"] <= -r["min_effect"]:
        return "met"
    return "failed" if r["ci_low"] > -r["min_effect"] else "unclear"


def no_loss(r: dict[str, Any]) -> str:
    """met: lower bound > -delta; failed: the loss is met; unclear otherwise."""
    if r["ci_low"] > -r["min_effect"]:
        return "met"
    return "failed" if loss(r) == "met" else "unclear"


def conjunction(parts: Sequence[str]) -> str:
    """supported when every part is met, contradicted when any failed, inconclusive otherwise."""
    if parts and all(p == "met" for p in parts):
        return "supported"
    return "contradicted" if "failed" in parts else "inconclusive"


def _fmt(r: dict[str, Any]) -> str:
    p = "" if r["p"] is None else f" p={r['p']:.3g}, Holm p={r['p_holm']:.3g};"
    n = f" n={r['n']};" if r.get("n") is not None else ""
    return (f"{r['name']} {r['estimate']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}];{p}{n} "
            f"min effect {r['min_effect']:.3g} -> {r['outcome']}")


# --------------------------------------------------------------------------- result files
def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _study(out: Path) -> dict[str, Any]:
    return (_load(out / "study.json") or {}).get("config", {})


def indicators_from_records(records: list[dict[str, Any]]) -> dict[str, dict[str, bool | None]]:
    """Per metric, item id -> indicator, rebuilt from one model's graded records (Table 1):
    M_vis = right with image and wrong with black image; M_v2r = right with image and right with
    black image + description; M_rea = right on the text item."""
    by: dict[str, dict[str, Any]] = {}
    for r in records:
        by.setdefault(r["condition"], {})[r["id"]] = r["correct"]
    img, blk, dsc, txt = (by.get(c, {}) for c in ("image", "black", "black_desc", "text"))

    def both(a: bool | None, b: bool | None, f: Any) -> bool | None:
        return None if a is None or b is None else f(a, b)

    return {"M_vis": {i: both(img.get(i), blk[i], lambda a, b: a and not b) for i in blk},
            "M_v2r": {i: both(img.get(i), dsc[i], lambda a, b: a and b) for i in dsc},
            "M_rea": dict(txt)}


def _paired(unit: Path, a: str, b: str, metric: str) -> dict[str, Any] | None:
    """Paired B - A on one metric's items graded for both (None when either model's records are missing)."""
    docs = [_load(unit / "models" / f"{safe_filename(label)}.json") for label in (a, b)]
    if any(d is None for d in docs):
        return None
    ia, ib = (indicators_from_records(d["records"])[metric] for d in docs)  # type: ignore[index]
    ids = [i for i in ia if i in ib and ia[i] is not None and ib[i] is not None]
    return paired_binary([bool(ia[i]) for i in ids], [bool(ib[i]) for i in ids]) if ids else None


# --------------------------------------------------------------------------- the claims
def verdict_p1(out: Path) -> Verdict:
    unit = out / "finegrained"
    if _load(unit / "finegrained.json") is None:
        return Verdict("P1", STATEMENTS["P1"], "not run", "no finegrained/finegrained.json")
    rows = [_row(f"{m} {a}->{b}", d, MIN_ACCURACY) for m in METRICS for a, b in (("Base", "IN"), ("IN", "RL"))
            if (d := _paired(unit, a, b, m)) is not None]
    if not rows:
        return Verdict("P1", STATEMENTS["P1"], "not run", "finegrained/models/*.json hold no paired records")
    _adjust(rows)
    for r in rows:
        r["outcome"] = "drop" if loss(r) == "met" else "no drop" if no_loss(r) == "met" else "unclear"
    v = ("supported" if any(r["outcome"] == "drop" for r in rows)
         else "contradicted" if all(r["outcome"] == "no drop" for r in rows) else "inconclusive")
    return Verdict("P1", STATEMENTS["P1"], v, "; ".join(_fmt(r) for r in rows), rows,
                   [f"{len(rows)} tests in the Holm family"])


def _regions(out: Path, n_layers: int) -> dict[str, list[int]]:
    return Partition.parse(_study(out).get("partition", "thirds")).regions(n_layers)


def _region_of(layer: int, regions: dict[str, list[int]]) -> str:
    for r, ls in regions.items():
        if layer in ls:
            return r
    raise FrankenscopeError(f"layer {layer} is outside the model's {sum(map(len, regions.values()))} layers")


def verdict_p2(out: Path, n_boot: int = 2000) -> Verdict:
    doc = _load(out / "attention" / "attention.json")
    if doc is None:
        return Verdict("P2", STATEMENTS["P2"], "not run", "no attention/attention.json")
    regions = _regions(out, doc["settings"]["n_layers"])
    recs = doc["records"]
    if "IN" not in recs or "RL" not in recs:
        raise FrankenscopeError("attention/attention.json: records need the models 'IN' and 'RL'")
    rl = {r["id"]: r for r in recs["RL"] if r["n_response_tokens"] > 0}
    pairs = [(r, rl[r["id"]]) for r in recs["IN"] if r["n_response_tokens"] > 0 and r["id"] in rl]
    seed = _study(out).get("seed", 0)
    rows = []
    for i, layer in enumerate(doc["layers"]):
        ok = [(a["mass"][i], b["mass"][i]) for a, b in pairs
              if not (math.isnan(a["mass"][i]) or math.isnan(b["mass"][i]))]
        if not ok:
            continue
        xa, xb = [a for a, _ in ok], [b for _, b in ok]
        d = paired_continuous(xa, xb, n_boot=n_boot, seed=seed, bounds=(-1.0, 1.0))
        row = _row(f"L{layer} ({_region_of(layer, regions)})", d, MIN_ATTENTION_RELATIVE * abs(sum(xa) / len(xa)))
        row["layer"], row["region"] = layer, _region_of(layer, regions)
        rows.append(row)
    late = [r for r in rows if r["region"] in ("mid", "late")]
    if not late:
        return Verdict("P2", STATEMENTS["P2"], "not run", "no Mid or Late layer was probed")
    _adjust(rows)
    words = {"met": "gain", "failed": "gain ruled out", "unclear": "unclear"}
    for r in rows:
        g = gain(r)
        if r["region"] == "early":
            r["outcome"] = "shift" if "met" in (g, loss(r)) else "no shift shown"
        else:
            r["outcome"] = words[g]
    up = sum(gain(r) == "met" for r in late)
    ruled_out = sum(gain(r) == "failed" for r in late)
    part_a = "met" if up > len(late) / 2 else "failed" if ruled_out > len(late) / 2 else "unclear"
    early = [r for r in rows if r["region"] == "early"]
    part_b = "failed" if any(r["outcome"] == "shift" for r in early) else "met"
    v = conjunction([part_a, part_b])
    ev = (f"Mid-Late layers with a gain {up}/{len(late)}, ruled out {ruled_out}/{len(late)} (part A {part_a}); "
          f"Early layers with a shift: {sum(r['outcome'] == 'shift' for r in early)}/{len(early)} (part B "
          f"{part_b}); " + "; ".join(_fmt(r) for r in rows))
    notes = [f"{len(pairs)} items with a response from both models; n_boot {n_boot}"]
    if not early:
        notes.append("no Early layer probed: part B is vacuous")
    return Verdict("P2", STATEMENTS["P2"], v, ev, rows, notes)


def binom_sf(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p) (exact sum in log space)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p)
            + (n - j) * math.log1p(-p) for j in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def _rate_row(name: str, flags: list[bool], sensitive: bool) -> dict[str, Any]:
    """One-sided exact binomial test of the change rate against MIN_CHANGE_RATE (H1: above if `sensitive`,
    below otherwise), with the Wilson interval."""
    k, n = sum(flags), len(flags)
    lo, hi = wilson_interval(k, n)
    p = binom_sf(k, n, MIN_CHANGE_RATE) if sensitive else 1 - binom_sf(k + 1, n, MIN_CHANGE_RATE)
    return {"name": name, "estimate": k / n, "ci_low": lo, "ci_high": hi, "p": p, "n": n,
            "min_effect": MIN_CHANGE_RATE, "p_holm": None, "outcome": None, "kind": "sensitive" if sensitive
            else "insensitive"}


def _rate_outcome(r: dict[str, Any]) -> str:
    tau = r["min_effect"]
    if r["kind"] == "sensitive":
        return "met" if r["p_holm"] < ALPHA else "failed" if r["ci_high"] < tau else "unclear"
    return "met" if r["p_holm"] < ALPHA else "failed" if r["ci_low"] > tau else "unclear"


def _text_only(records: list[dict[str, Any]], organism: bool) -> list[dict[str, Any]]:
    """On the organism, the items without an image (category "text"); other datasets are kept whole."""
    if not organism:
        return records
    from frankenscope.organism.tasks import TASK_CATEGORY

    return [r for r in records if TASK_CATEGORY.get(r["task"]) == "text"]


def verdict_p3(out: Path, n_boot: int = 2000) -> Verdict:
    vis = _load(out / "localize-vision" / "base" / "localize_vision.json")
    rea = _load(out / "localize-reasoning" / "base" / "localize_reasoning.json")
    if vis is None and rea is None:
        return Verdict("P3", STATEMENTS["P3"], "not run", "no localization of the Base model")
    cfg = _study(out)
    rows: list[dict[str, Any]] = []
    parts: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    if vis is None:
        notes.append("localize-vision did not run: the vision parts are unclear")
    else:
        regions = _regions(out, vis["settings"]["n_layers"])
        layers = vis["layers"]
        first = {reg: min((x for x in layers if x in ls), default=None) for reg, ls in regions.items()}
        want = {"recognition": [("early", True), ("mid", False)], "ocr": [("mid", True)],
                "counting": [("mid", True)], "grounding": [("mid", True)]}
        for task, checks in want.items():
            recs = [r for r in vis["records"] if r["task"] == task]
            if not recs:
                continue
            for reg, sensitive in checks:
                key = f"{task} {'sensitive' if sensitive else 'insensitive'} {reg}"
                if first[reg] is None:
                    notes.append(f"{key}: no {reg} layer probed")
                    parts[key] = []
                    continue
                i = layers.index(first[reg])
                row = _rate_row(f"{task} change rate, swap from L{first[reg]} ({reg})",
                                [bool(r["changed"][i]) for r in recs], sensitive)
                parts[key] = [row]
                rows.append(row)
    if rea is None:
        notes.append("localize-reasoning did not run: the reasoning part is unclear")
    else:
        regions = _regions(out, rea["settings"]["n_layers"])
        recs = _text_only(rea["records"], bool(cfg.get("organism")))
        by_region = {reg: [i for i, x in enumerate(rea["layers"]) if x in ls] for reg, ls in regions.items()}
        reasoning: list[dict[str, Any]] = []
        if not recs:
            notes.append("no text-only items in the layer-skipping run: the reasoning part is unclear")
        elif not by_region["late"]:
            notes.append("no Late layer probed: the reasoning part is unclear")
        else:
            def err(r: dict[str, Any], idx: list[int]) -> float:
                return sum(not r["correct"][i] for i in idx) / len(idx)

            for other in ("early", "mid"):
                if not by_region[other]:
                    notes.append(f"no {other} layer probed: Late - {other} is not tested")
                    continue
                d = paired_continuous([err(r, by_region[other]) for r in recs],
                                      [err(r, by_region["late"]) for r in recs], n_boot=n_boot,
                                      seed=cfg.get("seed", 0), bounds=(-1.0, 1.0))
                row = _row(f"skip error Late - {other.capitalize()} ({len(recs)} text items)", d, MIN_ACCURACY)
                row["kind"] = "gain"
                reasoning.append(row)
                rows.append(row)
        parts["reasoning Late highest"] = reasoning
    if not rows:
        return Verdict("P3", STATEMENTS["P3"], "inconclusive", "; ".join(notes), [], notes)
    _adjust(rows)
    for r in rows:
        r["outcome"] = gain(r) if r.get("kind") == "gain" else _rate_outcome(r)
    part_outcomes = {k: conjunction_part([r["outcome"] for r in rs]) for k, rs in parts.items()}
    v = conjunction(list(part_outcomes.values()))
    ev = ", ".join(f"{k}: {o}" for k, o in part_outcomes.items()) + "; " + "; ".join(_fmt(r) for r in rows)
    return Verdict("P3", STATEMENTS["P3"], v, ev, rows, notes)


def conjunction_part(outcomes: list[str]) -> str:
    """A part made of tests: met when all are met (and there is one), failed when any failed."""
    if outcomes and all(o == "met" for o in outcomes):
        return "met"
    return "failed" if "failed" in outcomes else "unclear"


def _diff_doc(out: Path) -> dict[str, Any] | None:
    return _load(out / "diff" / "diff.json")


def _llm_total(doc: dict[str, Any], label: str) -> float:
    """sqrt(sum ||dW||_F^2) over the selected tensors of the LLM decoder layers."""
    return math.sqrt(sum(t["stats"][label]["fro"] ** 2 for t in doc["tensors"]
                         if t["component"] == "llm" and t["selected"] and t["layer"] is not None))


def _order(values: dict[str, float], want: str, lower: bool = False) -> str:
    """met when `want` beats every other region by >= MIN_RELATIVE (higher, or lower if `lower`), failed
    when another region beats it by that much, unclear (a tie) otherwise."""
    sign = -1 if lower else 1
    others = [v for k, v in values.items() if k != want]
    mine = values[want]
    if all(sign * (mine - o) >= MIN_RELATIVE * abs(o) for o in others):
        return "met"
    return "failed" if any(sign * (o - mine) >= MIN_RELATIVE * abs(mine) for o in others) else "unclear"


def verdict_p4(out: Path) -> Verdict:
    doc = _diff_doc(out)
    if doc is None:
        return Verdict("P4", STATEMENTS["P4"], "not run", "no diff/diff.json")
    if not doc["regions"]:
        return Verdict("P4", STATEMENTS["P4"], "not run", "fewer than 3 LLM layers: no regions")
    totals = {lb: _llm_total(doc, lb) for lb in ("in", "rl")}
    fro = {lb: {r["region"]: r["stats"][lb]["fro_mean"] or 0.0 for r in doc["regions"]} for lb in ("in", "rl")}
    ev = ("mean ||dW||_F per LLM region (IN-Base / RL-IN): " + ", ".join(
        f"{reg} {fro['in'][reg]:.3g} / {fro['rl'][reg]:.3g}" for reg in fro["in"])
        + f"; total LLM update norm IN {totals['in']:.3g}, RL {totals['rl']:.3g}")
    zero = [lb for lb, t in totals.items() if t == 0]
    if zero:
        return Verdict("P4", STATEMENTS["P4"], "not applicable", ev + f"; the {'/'.join(zero).upper()} update "
                       "changed no LLM decoder weight, so its peak and the ratio are undefined")
    ratio = totals["in"] / totals["rl"]
    parts = {"IN peaks Mid": _order(fro["in"], "mid"), "RL peaks Mid": _order(fro["rl"], "mid"),
             f"IN/RL >= {ENERGY_RATIO:g}": "met" if ratio >= ENERGY_RATIO else "failed"}
    ev += f"; ratio IN/RL {ratio:.3g}; " + ", ".join(f"{k}: {o}" for k, o in parts.items())
    return Verdict("P4", STATEMENTS["P4"], conjunction(list(parts.values())), ev,
                   notes=[f"ties within {MIN_RELATIVE:.0%} count as unclear"])


def verdict_p5(out: Path) -> Verdict:
    doc = _diff_doc(out)
    if doc is None:
        return Verdict("P5", STATEMENTS["P5"], "not run", "no diff/diff.json")
    if not doc["regions"]:
        return Verdict("P5", STATEMENTS["P5"], "not run", "fewer than 3 LLM layers: no regions")
    er = {lb: {r["region"]: r["stats"][lb].get("effective_rank_mean") for r in doc["regions"]} for lb in ("in", "rl")}
    if any(v is None for d in er.values() for v in d.values()):
        return Verdict("P5", STATEMENTS["P5"], "not run", "diff.json has no spectral metrics (--no-spectral?)")
    ev = "mean effective rank per LLM region (IN-Base / RL-IN): " + ", ".join(
        f"{reg} {er['in'][reg]:.1f} / {er['rl'][reg]:.1f}" for reg in er["in"])
    if any(v == 0 for d in er.values() for v in d.values()):
        return Verdict("P5", STATEMENTS["P5"], "not applicable", ev + "; an update of zero has no spectrum")
    parts = {}
    for reg in er["in"]:
        r = (er["rl"][reg] - er["in"][reg]) / er["in"][reg]
        lower_rl = r <= -MIN_RELATIVE
        higher_rl = r >= MIN_RELATIVE
        if reg == "early":
            parts[f"early: IN lower-rank (r {r:+.1%})"] = "met" if higher_rl else "failed" if lower_rl else "unclear"
        else:
            parts[f"{reg}: RL lower-rank (r {r:+.1%})"] = "met" if lower_rl else "failed" if higher_rl else "unclear"
    ev += "; " + ", ".join(f"{k}: {o}" for k, o in parts.items())
    return Verdict("P5", STATEMENTS["P5"], conjunction(list(parts.values())), ev,
                   notes=["deterministic: one weight diff, no sampling; a tie within 5% is unclear"])


def verdict_p6(out: Path) -> Verdict:
    unit = out / "hybrids"
    if _load(unit / "finegrained.json") is None:
        return Verdict("P6", STATEMENTS["P6"], "not run", "no hybrids/finegrained.json")
    rows = [_row(f"{m} IN:RL:RL - IN", d, MIN_ACCURACY) for m in ("M_v2r", "M_rea")
            if (d := _paired(unit, "IN", "IN:RL:RL", m)) is not None]
    if len(rows) < 2:
        return Verdict("P6", STATEMENTS["P6"], "not run", "hybrids/models/ lacks IN or IN:RL:RL records for "
                       "M_v2r and M_rea")
    _adjust(rows)
    for r in rows:
        r["outcome"] = gain(r)
    return Verdict("P6", STATEMENTS["P6"], conjunction([r["outcome"] for r in rows]),
                   "; ".join(_fmt(r) for r in rows), rows)


def verdict_p7(out: Path) -> Verdict:
    unit = out / "freeze"
    doc = _load(unit / "heldout.json")
    if doc is None:
        return Verdict("P7", STATEMENTS["P7"], "not run", "no freeze/heldout.json: the freeze unit did not run "
                       "(disabled, or no built-in RL trainer for these models: it exists only for the organism)")
    diffs = doc.get("frozen_minus_control")
    if diffs is None:
        raise FrankenscopeError("freeze/heldout.json has no 'frozen_minus_control' (written before the "
                                "like-for-like control existed): delete freeze/ and rerun the study")
    missing = [r for r in ("late", "early") if r not in diffs]
    if missing:
        return Verdict("P7", STATEMENTS["P7"], "not run", f"freeze.regions lacks {', '.join(missing)}")
    seeds = doc.get("seeds", [])
    rows = []
    for region, kind in (("late", "loss"), ("early", "no loss")):
        d = diffs[region]["pooled"].get("v2r")
        if d is None:
            raise FrankenscopeError(f"freeze/heldout.json: no v2r items for region {region}")
        row = _row(f"frozen {region} - control (v2r)", d, MIN_ACCURACY)
        row["kind"] = kind
        rows.append(row)
    _adjust(rows)
    for r in rows:
        r["outcome"] = loss(r) if r["kind"] == "loss" else no_loss(r)
    notes = [f"{len(seeds)} seed(s) {seeds}" + (": run-to-run RL variance is not in the interval (one run each)"
                                                 if len(seeds) < 2 else ": interval includes run-to-run variance")]
    ev = f"{notes[0]}; " + "; ".join(_fmt(r) for r in rows)
    return Verdict("P7", STATEMENTS["P7"], conjunction([r["outcome"] for r in rows]), ev, rows, notes)


_RULE_FNS: dict[str, Callable[[Path], Verdict]] = {
    "P1": verdict_p1, "P2": verdict_p2, "P3": verdict_p3, "P4": verdict_p4, "P5": verdict_p5, "P6": verdict_p6,
    "P7": verdict_p7,
}
#: claim -> (its rule, the units it reads: `Analysis.claims` in the registry).
CLAIMS: dict[str, tuple[Callable[[Path], Verdict], str]] = {
    c: (_RULE_FNS[c], " / ".join(units)) for c, units in claim_units().items()}
if set(CLAIMS) != set(STATEMENTS):
    raise FrankenscopeError(f"verdicts: claims {sorted(set(STATEMENTS) ^ set(CLAIMS))} have a rule but no analysis "
                            "in the registry, or the reverse")


def verdicts(out: str | Path) -> list[Verdict]:
    """Every claim's verdict. A claim whose result files cannot be read is an "error" naming its unit;
    the others are still decided."""
    out = Path(out)
    res = []
    for claim, (fn, unit) in CLAIMS.items():
        try:
            res.append(fn(out))
        except Exception as e:  # noqa: BLE001 - the report must still be written; the error is shown in it
            res.append(Verdict(claim, STATEMENTS[claim], "error",
                               f"unit {unit}: could not be decided ({type(e).__name__}: {e})"))
    return res


def verdicts_payload(vs: list[Verdict]) -> dict[str, Any]:
    """The verdicts as a result payload (with every test's raw and Holm-adjusted p-value)."""
    return {"alpha": ALPHA, "min_effects": {"accuracy": MIN_ACCURACY, "attention_relative": MIN_ATTENTION_RELATIVE,
                                            "change_rate": MIN_CHANGE_RATE, "relative_order": MIN_RELATIVE,
                                            "energy_ratio": ENERGY_RATIO},
            "rules": RULES, "verdicts": [asdict(v) for v in vs]}
