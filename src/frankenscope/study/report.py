"""The study report: one self-contained HTML page (plots embedded) and a markdown summary.

It reads only result files. For each of the paper's claims (paper-notes.md §11, P1-P7) it gives a
plain verdict on this model — supported, contradicted or inconclusive — with the numbers behind it.
Paired differences use the per-item records of the fine-grained evaluation (bootstrap 95% CI).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frankenscope.evaluate.finegrained import paired_comparison
from frankenscope.io import safe_filename, write_text_atomic

METRICS = ("M_vis", "M_v2r", "M_rea")


@dataclass
class Verdict:
    claim: str
    statement: str
    verdict: str  # supported | contradicted | inconclusive | not run
    evidence: str


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def indicators_from_records(records: list[dict[str, Any]]) -> dict[str, dict[str, bool | None]]:
    """Per metric, item id -> indicator, rebuilt from one model's graded records (Table 1):
    M_vis = right with image and wrong with black image; M_v2r = right with image and right with
    black image + description; M_rea = right on the text item."""
    by = {}
    for r in records:
        by.setdefault(r["condition"], {})[r["id"]] = r["correct"]
    img, blk, dsc, txt = (by.get(c, {}) for c in ("image", "black", "black_desc", "text"))

    def both(a: bool | None, b: bool | None, f: Any) -> bool | None:
        return None if a is None or b is None else f(a, b)

    return {"M_vis": {i: both(img.get(i), blk[i], lambda a, b: a and not b) for i in blk},
            "M_v2r": {i: both(img.get(i), dsc[i], lambda a, b: a and b) for i in dsc},
            "M_rea": dict(txt)}


def _model_indicators(unit_dir: Path, label: str) -> dict[str, dict[str, bool | None]] | None:
    doc = _load(unit_dir / "models" / f"{safe_filename(label)}.json")
    return None if doc is None else indicators_from_records(doc["records"])


def _metric(doc: dict[str, Any], label: str, metric: str) -> dict[str, Any] | None:
    for m in doc["models"]:
        if m["label"] == label:
            return m["metrics"].get(metric)
    return None


def _fmt_ci(v: dict[str, Any] | None, key: str = "value") -> str:
    if v is None:
        return "n/a"
    return f"{v[key]:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" if key == "diff" else \
        f"{v[key]:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"


def _paired(unit_dir: Path, a: str, b: str, metric: str) -> dict[str, Any] | None:
    ia, ib = _model_indicators(unit_dir, a), _model_indicators(unit_dir, b)
    if ia is None or ib is None or not ia.get(metric):
        return None
    return paired_comparison(ia[metric], ib[metric])


def _sign(d: dict[str, Any] | None) -> int:
    """+1 / -1 when the paired CI excludes 0 on that side, 0 otherwise (or when missing)."""
    if d is None:
        return 0
    return 1 if d["ci_low"] > 0 else -1 if d["ci_high"] < 0 else 0


# -- verdicts ----------------------------------------------------------------------------------
def verdict_p1(out: Path) -> Verdict:
    st = "Fine-grained abilities do not all rise monotonically Base -> IN -> RL."
    unit = out / "finegrained"
    if _load(unit / "finegrained.json") is None:
        return Verdict("P1", st, "not run", "")
    steps = {(m, a, b): _paired(unit, a, b, m) for m in METRICS for a, b in (("Base", "IN"), ("IN", "RL"))}
    ev = "; ".join(f"{m} {a}->{b} {_fmt_ci(d, 'diff')}" for (m, a, b), d in steps.items() if d)
    drops = [k for k, d in steps.items() if _sign(d) < 0]
    monotone = all(d is not None and d["diff"] >= 0 for d in steps.values()) and any(
        _sign(d) > 0 for d in steps.values())
    v = "supported" if drops else "contradicted" if monotone else "inconclusive"
    return Verdict("P1", st, v, ev)


def verdict_p4(out: Path) -> Verdict:
    st = "Update energy ||dW||_F per LLM layer peaks in the Mid third for IN-Base and RL-IN, and RL-IN is " \
         ">= 10x smaller than IN-Base."
    doc = _load(out / "diff" / "diff.json")
    if doc is None:
        return Verdict("P4", st, "not run", "")
    regions = {r["region"]: r["stats"] for r in doc["regions"]}
    peak = {lb: max(regions, key=lambda reg: regions[reg][lb]["fro_mean"] or 0) for lb in ("in", "rl")}
    ratio = doc["totals"]["in"]["fro_total"] / max(doc["totals"]["rl"]["fro_total"], 1e-30)
    checks = [peak["in"] == "mid", peak["rl"] == "mid", ratio >= 10]
    ev = ("mean ||dW||_F per region (IN-Base / RL-IN): " + ", ".join(
        f"{reg} {regions[reg]['in']['fro_mean']:.3g} / {regions[reg]['rl']['fro_mean']:.3g}" for reg in regions)
        + f"; peak IN in {peak['in']}, RL in {peak['rl']}; total-norm ratio IN/RL = {ratio:.1f}")
    v = "supported" if all(checks) else "contradicted" if not any(checks) else "inconclusive"
    return Verdict("P4", st, v, ev + f" (sub-claims met: {sum(checks)}/3)")


def verdict_p5(out: Path) -> Verdict:
    st = "RL-IN updates are lower-rank (steeper spectrum) than IN-Base in Mid-Late layers; IN is steeper Early."
    doc = _load(out / "diff" / "diff.json")
    if doc is None:
        return Verdict("P5", st, "not run", "")
    regions = {r["region"]: r["stats"] for r in doc["regions"]}
    key = "effective_rank_mean"
    er = {reg: (regions[reg]["in"].get(key), regions[reg]["rl"].get(key)) for reg in regions}
    if any(a is None or b is None for a, b in er.values()):
        return Verdict("P5", st, "inconclusive", "spectral metrics missing")
    mid_late = [er["mid"][1] < er["mid"][0], er["late"][1] < er["late"][0]]
    early = er["early"][0] < er["early"][1]
    ev = "mean effective rank per region (IN-Base / RL-IN): " + ", ".join(
        f"{reg} {a:.1f} / {b:.1f}" for reg, (a, b) in er.items())
    checks = mid_late + [early]
    v = "supported" if all(checks) else "contradicted" if not any(mid_late) else "inconclusive"
    return Verdict("P5", st, v, ev)


def verdict_p6(out: Path) -> Verdict:
    st = "The IN:RL:RL hybrid (RL Mid+Late in IN) beats IN on M_v2r and M_rea."
    unit = out / "hybrids"
    if _load(unit / "finegrained.json") is None:
        return Verdict("P6", st, "not run", "")
    d = {m: _paired(unit, "IN", "IN:RL:RL", m) for m in ("M_v2r", "M_rea")}
    ev = "; ".join(f"{m} IN:RL:RL - IN {_fmt_ci(x, 'diff')}" for m, x in d.items())
    signs = [_sign(x) for x in d.values()]
    v = "supported" if all(s > 0 for s in signs) else "contradicted" if any(s < 0 for s in signs) and not any(
        s > 0 for s in signs) else "inconclusive"
    return Verdict("P6", st, v, ev)


def verdict_p7(out: Path) -> Verdict:
    """Frozen-late and frozen-early vs full RL on M_v2r. On the organism the freeze unit also writes
    paired differences on its held-out vision-to-reasoning items (heldout.json, hundreds of items);
    those decide when present, the fine-grained suite's M_v2r otherwise."""
    st = "RL with the Late region frozen scores below full RL on M_v2r; freezing Early costs nothing."
    unit = out / "freeze"
    if _load(unit / "finegrained.json") is None:
        return Verdict("P7", st, "not run", "the freeze unit did not run: disabled in the config, or no built-in RL "
                       "trainer for these models (it exists only for the organism)")
    late = _paired(unit, "RL", "RL frozen late", "M_v2r")
    early = _paired(unit, "RL", "RL frozen early", "M_v2r")
    ev = f"suite M_v2r frozen-late - RL {_fmt_ci(late, 'diff')}; frozen-early - RL {_fmt_ci(early, 'diff')}"
    held = (_load(unit / "heldout.json") or {}).get("frozen_minus_rl", {})
    held_late, held_early = (held.get(r, {}).get("v2r") for r in ("late", "early"))
    if held_late and held_early:
        late, early = held_late, held_early
        ev = (f"held-out v2r accuracy (n={late['n']}) frozen-late - RL {_fmt_ci(late, 'diff')}; frozen-early - RL "
              f"{_fmt_ci(early, 'diff')} (decides); {ev}")
    if _sign(late) < 0 and _sign(early) >= 0:
        v = "supported"
    elif _sign(late) > 0 or (_sign(late) == 0 and _sign(early) < 0):
        v = "contradicted"
    else:
        v = "inconclusive"
    return Verdict("P7", st, v, ev)


def verdicts(out: Path) -> list[Verdict]:
    from frankenscope.study.probe_report import verdict_p2, verdict_p3

    return [verdict_p1(out), verdict_p2(out), verdict_p3(out), verdict_p4(out), verdict_p5(out),
            verdict_p6(out), verdict_p7(out)]


# -- rendering -----------------------------------------------------------------------------------
SECTIONS = (
    ("Fine-grained abilities (Fig. 2, Table 1)", "finegrained", ["finegrained.png"], "table.md"),
    ("Attention to the image, IN vs RL (Fig. 3)", "attention", ["*.png"], None),
    ("Vision localization by visual-token swapping (Fig. 4a)", "localize-vision", ["*.png"], None),
    ("Reasoning localization by layer skipping (Fig. 4b)", "localize-reasoning", ["*.png"], None),
    ("Update energy (Fig. 5) and diversity (Fig. 6)", "diff", ["fig5_energy.png", "fig6_*.png"], None),
    ("Transferability: six Frankenstein hybrids (Table 2)", "hybrids", ["finegrained.png"], "table.md"),
    ("Necessity: RL with one region frozen (Table 3)", "freeze", ["finegrained.png"], "table.md"),
)


def _images(folder: Path, patterns: list[str]) -> list[Path]:
    found: list[Path] = []
    for pat in patterns:
        # figures only: merged models and drawn item suites (suite/, items/) also hold PNGs
        found += sorted(p for p in folder.glob(f"**/{pat}")
                        if not {"models", "suite", "items"} & set(p.relative_to(folder).parts))
    return list(dict.fromkeys(found))


def _md_to_html_table(md: str) -> str:
    """Render the simple pipe tables (and plain lines) that the analyses write."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        else:
            flush()
            if line.strip():
                out.append(f"<p>{html.escape(line.lstrip('# '))}</p>")
    flush()
    return "\n".join(out)


def write_report(out: str | Path) -> dict[str, str]:
    """Write OUT/report.html (self-contained) and OUT/report.md from the study's result files."""
    out = Path(out)
    study = _load(out / "study.json") or {}
    name = study.get("config", {}).get("name", out.name)
    vs = verdicts(out)
    md = [f"# frankenscope study: {name}", "", "## The paper's claims on this model", "",
          "| claim | statement | verdict | evidence |", "|---|---|---|---|"]
    md += [f"| {v.claim} | {v.statement} | **{v.verdict}** | {v.evidence} |" for v in vs]
    colour = {"supported": "#1a7f37", "contradicted": "#cf222e", "inconclusive": "#9a6700", "not run": "#6e7781"}
    body = [f"<h1>frankenscope study: {html.escape(name)}</h1>",
            "<h2>The paper's claims on this model</h2><table><tr><th>claim</th><th>statement</th>"
            "<th>verdict</th><th>evidence</th></tr>"]
    body += [f"<tr><td>{v.claim}</td><td>{html.escape(v.statement)}</td><td style='color:{colour[v.verdict]};"
             f"font-weight:bold'>{v.verdict}</td><td>{html.escape(v.evidence)}</td></tr>" for v in vs]
    body.append("</table><p class='note'>Differences are paired over the same items with bootstrap 95% CIs; "
                "a claim is supported only when the CI excludes zero in its direction.</p>")
    for title, unit, pats, table in SECTIONS:
        folder = out / unit
        md += ["", f"## {title}", ""]
        body.append(f"<h2>{html.escape(title)}</h2>")
        if not folder.is_dir():
            md.append("_not run_")
            body.append("<p><em>not run</em></p>")
            continue
        if table and (folder / table).is_file():
            text = (folder / table).read_text()
            md.append(text)
            body.append(_md_to_html_table(text))
        summary = folder / "summary.md"
        if summary.is_file():
            md.append(summary.read_text())
            body.append(_md_to_html_table(summary.read_text()))
        for img in _images(folder, pats):
            rel = img.relative_to(out)
            md.append(f"![{rel}]({rel})")
            data = base64.b64encode(img.read_bytes()).decode()
            body.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(str(rel))}'>"
                        f"<figcaption>{html.escape(str(rel))}</figcaption></figure>")
    units = study.get("units", [])
    if units:
        md += ["", "## Units", "", "| unit | status | wall s |", "|---|---|---:|"]
        md += [f"| {u['unit']} | {u['status']} | {u['wall_s']} |" for u in units]
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1f2328}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #d0d7de;"
             "padding:4px 8px;vertical-align:top}th{background:#f6f8fa}img{max-width:100%}"
             "figure{margin:1em 0}figcaption{color:#6e7781;font-size:12px}.note{color:#6e7781}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>frankenscope: {html.escape(name)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    write_text_atomic(out / "report.html", page)
    write_text_atomic(out / "report.md", "\n".join(md) + "\n")
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md")}
