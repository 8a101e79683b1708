"""Tables and a bar plot of fine-grained results; they read only the `finegrained.json` document.

- `format_table`: abilities x models in percent with 95% CIs, shaped like the paper's Tables 2-3
  (optionally with the difference to a reference model in parentheses, as Table 2 shows "vs IN").
- `format_transitions`: the 2x2 counts, both accuracies and the ungraded count per model.
- `format_comparisons`: consecutive-model paired differences with CIs and McNemar p.
- `plot_bars`: grouped bars like Fig. 2 (a group per ability, a bar per model, CI error bars, 0-100).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from frankenscope.io import write_text_atomic

ROW_NAMES = {
    "benchmark": "Average benchmark accuracy",
    "M_vis": "Vision (M_vis)",
    "M_v2r": "Vision-to-Reasoning (M_v2r)",
    "M_rea": "Reasoning (M_rea)",
}
ROW_ORDER = ("benchmark", "M_vis", "M_v2r", "M_rea")


def _missing(x: float | None) -> bool:
    """An undefined value: null in a result file (NaN in memory)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def _pct(x: float | None) -> str:
    return "-" if _missing(x) else f"{100 * x:.1f}"  # type: ignore[operator]


def _signed(x: float | None) -> str:
    return "-" if _missing(x) else f"{100 * x:+.1f}"  # type: ignore[operator]


def _row_name(key: str, doc: dict[str, Any]) -> str:
    if key == "benchmark":
        names = doc.get("benchmark_label")
        return names or ROW_NAMES[key]
    return ROW_NAMES.get(key, key)


def _rows(doc: dict[str, Any]) -> list[str]:
    present = {k for m in doc["models"] for k in m["metrics"]}
    return [k for k in ROW_ORDER if k in present]


def format_table(doc: dict[str, Any], reference: str | None = None) -> str:
    """Markdown table: one row per ability, one column per model, cells "47.0 [37.0, 57.0]" (percent).

    reference: a model label; other models' cells then also show their difference to it, "(+4.0)".
    """
    models = doc["models"]
    labels = [m["label"] for m in models]
    ref = next((m for m in models if m["label"] == reference), None) if reference else None
    lines = ["| ability | N | " + " | ".join(labels) + " |", "|---|---:|" + "---|" * len(labels)]
    for key in _rows(doc):
        ns = {m["metrics"][key]["n"] for m in models if key in m["metrics"]}
        cells = []
        for m in models:
            s = m["metrics"].get(key)
            if s is None:
                cells.append("-")
                continue
            cell = f"{_pct(s['value'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]"
            if ref is not None and m is not ref and key in ref["metrics"]:
                cell += f" ({_signed(s['value'] - ref['metrics'][key]['value'])})"
            cells.append(cell)
        n = str(ns.pop()) if len(ns) == 1 else "varies"
        lines.append(f"| {_row_name(key, doc)} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_transitions(doc: dict[str, Any]) -> str:
    """Markdown table of the 2x2 transition counts per model and experiment (A = image, B = control)."""
    lines = ["| model | experiment | N | n_TT | n_TF | n_FT | n_FF | acc_A | acc_B | ungraded |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = {"vis": "vision (B = black image)", "v2r": "v2r (B = black image + description)"}
    for m in doc["models"]:
        for exp, t in m.get("transitions", {}).items():
            lines.append(f"| {m['label']} | {names.get(exp, exp)} | {t['N']} | {t['n_TT']} | {t['n_TF']} | "
                         f"{t['n_FT']} | {t['n_FF']} | {_pct(t['acc_A'])} | {_pct(t['acc_B'])} | {t['n_ungraded']} |")
    return "\n".join(lines)


def format_comparisons(doc: dict[str, Any]) -> str:
    """Markdown table of paired comparisons (later model minus earlier), difference in points."""
    lines = ["| comparison | ability | N | difference [95% CI] | only A right | only B right | McNemar p |",
             "|---|---|---:|---|---:|---:|---:|"]
    for c in doc.get("comparisons", []):
        for key in ROW_ORDER:
            s = c["metrics"].get(key)
            if s is None:
                continue
            lines.append(f"| {c['a']} -> {c['b']} | {_row_name(key, doc)} | {s['n']} | "
                         f"{_signed(s['diff'])} [{_signed(s['ci_low'])}, {_signed(s['ci_high'])}] | "
                         f"{s['n_a_only']} | {s['n_b_only']} | {s['mcnemar_p']:.3g} |")
    return "\n".join(lines)


def format_report(doc: dict[str, Any], reference: str | None = None) -> str:
    parts = [f"# Fine-grained evaluation ({doc.get('suite', '?')} suite)", "",
             "Values in percent with 95% bootstrap CIs over items.", "", format_table(doc, reference), ""]
    if any(m.get("transitions") for m in doc["models"]):
        parts += ["## Transitions (A = with the image)", "", format_transitions(doc), ""]
    if doc.get("comparisons"):
        parts += ["## Paired comparisons (B minus A)", "", format_comparisons(doc), ""]
    styles = {m["label"]: m["prompt_style"]["name"] for m in doc["models"]}
    parts += ["Prompt styles: " + ", ".join(f"{k}: {v}" for k, v in styles.items()), ""]
    return "\n".join(parts)


def plot_bars(doc: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Grouped bar chart (Fig. 2 style): x = ability, one bar per model, CI error bars, y = score 0-100."""
    from frankenscope.plotting import pyplot, save_png

    plt = pyplot()
    models = doc["models"]
    rows = _rows(doc)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(rows) + 0.4 * len(models)), 4.5))
    for j, m in enumerate(models):
        xs, ys, err_lo, err_hi = [], [], [], []
        for i, key in enumerate(rows):
            s = m["metrics"].get(key)
            if s is None or _missing(s["value"]):
                continue
            v = 100 * s["value"]
            lo = 100 * s["ci_low"] if not _missing(s["ci_low"]) else v
            hi = 100 * s["ci_high"] if not _missing(s["ci_high"]) else v
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(v)
            err_lo.append(max(0.0, v - lo))
            err_hi.append(max(0.0, hi - v))
        bars = ax.bar(xs, ys, width=width * 0.95, label=m["label"], yerr=[err_lo, err_hi], capsize=3)
        for bar, v, up in zip(bars, ys, err_hi, strict=True):  # the value sits above its CI bar
            ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v + up), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([_row_name(k, doc).replace(" (", "\n(") for k in rows], fontsize=9)
    ax.set_ylabel("Score")
    ax.set_ylim(0, 110)
    ax.set_title(title or f"Fine-grained abilities ({doc.get('suite', '')} suite), 95% CI")
    ax.legend(fontsize=8, ncol=min(4, len(models)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, Path(path))


def write_report(doc: dict[str, Any], out_dir: str | Path, reference: str | None = None) -> dict[str, Path]:
    """Write table.md and finegrained.png into out_dir; return their paths."""
    out_dir = Path(out_dir)
    md = write_text_atomic(out_dir / "table.md", format_report(doc, reference))
    png = plot_bars(doc, out_dir / "finegrained.png")
    return {"table": md, "plot": png}
