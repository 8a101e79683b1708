"""Figures of the causal probes, drawn from their JSON results alone (no model is opened).

* ``fig4a_change_rate.png`` (paper Fig. 4a): change rate per layer, one line per task, 95% CI bands;
  a second panel shows the flip-to-source rate.
* ``fig4b_skip_error.png`` (paper Fig. 4b): error rate with each layer skipped, one line per task,
  the unablated error as a dashed line of the same colour.
* ``fig3_attention.png`` (paper Fig. 3): attention mass from response tokens to image tokens per
  layer, one line per model (e.g. IN and RL); a second panel shows the difference with its CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frankenscope.plotting import load_result, pyplot, save_png

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _band(ax: Any, xs: list[int], rows: list[dict[str, Any]], key: str, colour: str, marker: str,
          label: str) -> None:
    ys = [r[key] for r in rows]
    ax.plot(xs, ys, marker=marker, color=colour, label=label, lw=1.6, ms=4)
    ax.fill_between(xs, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=colour, alpha=0.15, lw=0)


def _tasks(doc: dict[str, Any]) -> list[str]:
    tasks = [t for t in doc["tasks"] if t != "all"]
    return tasks or list(doc["tasks"])


def plot_vision(doc_or_path: dict[str, Any] | str | Path, out_dir: str | Path) -> Path:
    """Fig. 4a from localize_vision.json: change rate (and flip-to-source rate) per layer and task."""
    doc = load_result(doc_or_path, "localize_vision", "localize_vision.json")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    for i, task in enumerate(_tasks(doc)):
        rows = doc["tasks"][task]["per_layer"]
        xs = [r["layer"] for r in rows]
        c, m = COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]
        n = doc["tasks"][task]["n_pairs"]
        _band(axes[0], xs, [r["change"] for r in rows], "rate", c, m, f"{task} (n={n})")
        _band(axes[1], xs, [r["flip_to_source"] for r in rows], "rate", c, m, task)
    s = doc["settings"]
    axes[0].set_title(f"Visual-token swap: answer changed ({s['mode']})")
    axes[1].set_title("Answer became the source's ground truth")
    for ax in axes:
        ax.set_xlabel("LLM layer l (swap " + ("from l on" if s["mode"] == "cumulative" else "at l only") + ")")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("rate (95% CI)")
    axes[0].legend(fontsize=8)
    return save_png(fig, Path(out_dir) / "fig4a_change_rate.png")


def plot_reasoning(doc_or_path: dict[str, Any] | str | Path, out_dir: str | Path) -> Path:
    """Fig. 4b from localize_reasoning.json: error rate per skipped layer and task, baseline dashed."""
    doc = load_result(doc_or_path, "localize_reasoning", "localize_reasoning.json")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, task in enumerate(_tasks(doc)):
        t = doc["tasks"][task]
        rows = t["per_layer"]
        xs = [r["layer"] for r in rows]
        c, m = COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]
        _band(ax, xs, [r["error"] for r in rows], "rate", c, m, f"{task} (n={t['n_items']})")
        ax.axhline(t["baseline_error"]["rate"], color=c, ls="--", lw=1, alpha=0.8)
    ax.set_title("Layer skipping: error rate with one layer skipped (dashed: no layer skipped)")
    ax.set_xlabel("skipped LLM layer")
    ax.set_ylabel("error rate (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, Path(out_dir) / "fig4b_skip_error.png")


def plot_attention(doc_or_path: dict[str, Any] | str | Path, out_dir: str | Path, key: str = "mass") -> Path:
    """Fig. 3 from attention.json: attention mass per layer per model, and the difference to the first model."""
    doc = load_result(doc_or_path, "attention", "attention.json")
    plt = pyplot()
    diffs = doc.get("differences", {})
    fig, axes = plt.subplots(1, 2 if diffs else 1, figsize=(12 if diffs else 7, 4.2), squeeze=False)
    ax = axes[0][0]
    for i, (label, m) in enumerate(doc["models"].items()):
        rows = m["per_layer"]
        _band(ax, [r["layer"] for r in rows], [r[key] for r in rows], "mean", COLOURS[i % len(COLOURS)],
              MARKERS[i % len(MARKERS)], f"{label} (n={m['n_items']})")
    what = "mass (sum over image tokens)" if key == "mass" else "per-token mean (Eq. 1)"
    ax.set_title(f"Response -> image attention, {what}", fontsize=10)
    ax.set_xlabel("LLM layer")
    ax.set_ylabel("mean over heads and response tokens (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if diffs:
        ax2 = axes[0][1]
        for i, (label, d) in enumerate(diffs.items()):
            rows = d["per_layer"]
            _band(ax2, [r["layer"] for r in rows], [r[key] for r in rows], "diff", COLOURS[(i + 3) % len(COLOURS)],
                  MARKERS[i % len(MARKERS)], f"{label} (paired, n={d['n_items']})")
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_title("Difference per layer")
        ax2.set_xlabel("LLM layer")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    return save_png(fig, Path(out_dir) / "fig3_attention.png")
