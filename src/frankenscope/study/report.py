"""The study report: one self-contained HTML page (plots embedded) and a markdown summary.

It only renders: it reads the result files and the verdicts (`frankenscope.study.verdicts`, where
every claim's rule lives), and writes report.html, report.md and verdicts.json (every test with its
raw and Holm-adjusted p-value). A claim that cannot be decided shows "error" with its unit; the
report is written all the same.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from frankenscope.analyses import ANALYSES
from frankenscope.io import write_result, write_text_atomic
from frankenscope.study.verdicts import (  # noqa: F401 - Verdict, indicators_from_records: re-exported
    RULES,
    Verdict,
    indicators_from_records,
    verdicts,
    verdicts_payload,
)

VERDICTS_SCHEMA_VERSION = 1


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def fmt_ci(v: dict[str, Any] | None, key: str = "value") -> str:
    if v is None:
        return "n/a"
    return f"{v[key]:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" if key == "diff" else \
        f"{v[key]:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"


# -- rendering -----------------------------------------------------------------------------------
#: (heading, unit, figure globs, markdown table) of every analysis with a report section, in registry order.
SECTIONS = tuple((a.title, a.name, list(a.figures), a.table) for a in ANALYSES if a.title)


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


def _validation_table(out: Path, md: list[str], body: list[str]) -> None:
    """The planted-effect checks first (OUT/validate/validate.json): does each analysis find an effect whose
    answer is known on this model? Appends to the markdown lines and the HTML body; nothing when not run."""
    doc = _load(out / "validate" / "validate.json")
    if not doc:
        return
    status = "PASS" if doc.get("passed") else "NOT ALL PASSED"
    md += ["## Validation: planted effects with known answers", "",
           f"Overall: **{status}**; input checkpoints unchanged: {'yes' if doc.get('inputs_unchanged') else 'NO'} "
           "(details: validate/validate.md).", "",
           "| check | planted edit | predicted | observed | result |", "|---|---|---|---|---|"]
    body.append(f"<h2>Validation: planted effects with known answers</h2><p>Overall: <b>{status}</b> "
                "(details: validate/validate.md)</p><table><tr><th>check</th><th>planted edit</th>"
                "<th>predicted</th><th>observed</th><th>result</th></tr>")
    for c in doc.get("checks", []):
        cells = [c.get("title", c.get("name", "")), c.get("edit", ""), c.get("prediction", ""),
                 c.get("observed") or c.get("reason") or "", c.get("status", "")]
        md.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
        body.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
    md.append("")
    body.append("</table>")


def write_report(out: str | Path) -> dict[str, str]:
    """Write OUT/report.html (self-contained) and OUT/report.md from the study's result files."""
    out = Path(out)
    study = _load(out / "study.json") or {}
    name = study.get("config", {}).get("name", out.name)
    vs = verdicts(out)
    write_result(out / "verdicts.json", "verdicts", VERDICTS_SCHEMA_VERSION, verdicts_payload(vs),
                 seed=study.get("config", {}).get("seed"), inputs={"study": str(out)})
    md = [f"# frankenscope study: {name}", ""]
    body = [f"<h1>frankenscope study: {html.escape(name)}</h1>"]
    _validation_table(out, md, body)
    md += ["## The paper's claims on this model", "",
          "| claim | statement | verdict | evidence |", "|---|---|---|---|"]
    md += [f"| {v.claim} | {v.statement} | **{v.verdict}** | {v.evidence} |" for v in vs]
    md += ["", "How each verdict is decided (alpha 0.05, Holm within each claim; the minimum effect that "
           "matters is shown beside every estimate):", ""] + [f"- **{c}**: {r}" for c, r in RULES.items()]
    colour = {"supported": "#1a7f37", "contradicted": "#cf222e", "inconclusive": "#9a6700", "not run": "#6e7781",
              "not applicable": "#6e7781", "error": "#cf222e"}
    body += ["<h2>The paper's claims on this model</h2><table><tr><th>claim</th><th>statement</th>"
             "<th>verdict</th><th>evidence</th></tr>"]
    body += [f"<tr><td>{v.claim}</td><td>{html.escape(v.statement)}</td><td style='color:{colour[v.verdict]};"
             f"font-weight:bold'>{v.verdict}</td><td>{html.escape(v.evidence)}</td></tr>" for v in vs]
    body.append("</table><p class='note'>How each verdict is decided (alpha 0.05, Holm within each claim; the "
                "minimum effect that matters is shown beside every estimate):</p><ul class='note'>"
                + "".join(f"<li><b>{c}</b>: {html.escape(r)}</li>" for c, r in RULES.items()) + "</ul>")
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
