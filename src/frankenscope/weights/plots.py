"""Figures of a weight diff, drawn from diff.json alone (no checkpoint is opened).

* ``fig5_energy.png`` (paper Fig. 5): per-layer mean Frobenius norm of the update over the unified
  axis (vision blocks, projector, LLM layers); with two updates, IN on the left axis (solid) and RL on
  a twin right axis (dashed), since RL updates are one to two orders of magnitude smaller. Sections
  and the early/mid/late LLM regions are shaded.
* ``fig6_spectra.png`` (paper Fig. 6): one heatmap per update, layer x rank, colour = the layer's mean
  ln(s_i / s_1) over its matrices; the colour scale is shared so the panels compare directly.
* ``fig6_rank_trends.png``: ln(s_i / s_1) at ranks 10/20/30/40 against the layer (the paper's
  overlaid "Rank 10/20/30/40 trend" lines).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from frankenscope.errors import FrankenscopeError
from frankenscope.plotting import load_result, pyplot, save_png

COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")
STYLES = ("-", "--", "-.", ":")
SECTION_COLOURS = {"vision": "#9467bd", "projector": "#d62728", "llm": "#2ca02c"}
REGION_ALPHA = {"early": 0.05, "mid": 0.12, "late": 0.05}
TREND_RANKS = (10, 20, 30, 40)
_LABEL_NAMES = {"in": "IN update (IN - Base)", "rl": "RL update (RL - IN)", "delta": "update (to - from)"}


def _shade(ax: Any, doc: dict[str, Any]) -> None:
    lay = doc["layout"]
    axis = lay["unified_axis"]
    spans = {"vision": (axis["vision"][0] - 0.5, axis["vision"][1] + 0.5),
             "projector": (axis["projector"] - 0.5, axis["projector"] + 0.5),
             "llm": (axis["llm"][0] - 0.5, axis["llm"][1] + 0.5)}
    for sec, (lo, hi) in spans.items():
        if hi > lo:
            ax.axvspan(lo, hi, color=SECTION_COLOURS[sec], alpha=0.06, lw=0)
            ax.text((lo + hi) / 2, 1.0, sec, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=8, color=SECTION_COLOURS[sec])
    offset = axis["llm"][0]
    for reg, layers in (lay.get("partition") or {}).items():
        if layers:
            lo, hi = offset + min(layers) - 0.5, offset + max(layers) + 0.5
            ax.axvspan(lo, hi, color="grey", alpha=REGION_ALPHA.get(reg, 0.05), lw=0)
            ax.text((lo + hi) / 2, 0.98, reg, transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=7, color="dimgrey")


def _name(label: str, doc: dict[str, Any]) -> str:
    d = doc["deltas"][label]
    return _LABEL_NAMES.get(label, f"{d['to']} - {d['from']}")


def plot_energy(doc_or_path: dict[str, Any] | str | Path, path: str | Path) -> Path:
    """Fig. 5: per-layer mean ||delta||_F on the unified axis; twin y axes for two updates."""
    doc = load_result(doc_or_path, "diff", "diff.json")
    plt = pyplot()
    labels = list(doc["deltas"])
    xs = [row["unified_index"] for row in doc["layers"]]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    _shade(ax, doc)
    handles = []
    twin = ax.twinx() if len(labels) > 1 else None
    for i, lb in enumerate(labels):
        target = ax if i == 0 or twin is None else twin  # a third update would share the right axis
        ys = [row["stats"][lb]["fro_mean"] for row in doc["layers"]]
        (h,) = target.plot(xs, ys, STYLES[i % 4], color=COLOURS[i % 4], marker="o", ms=2.5, lw=1.4,
                           label=_name(lb, doc))
        handles.append(h)
        target.set_ylabel(f"{_name(lb, doc)}: mean ||dW||_F", color=COLOURS[i % 4])
        target.tick_params(axis="y", colors=COLOURS[i % 4])
    ax.set_xlabel("unified layer index (vision blocks, projector, LLM layers)")
    ax.set_title("Update energy per layer (mean Frobenius norm over the layer's weight matrices)", fontsize=10,
                 pad=14)
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    return save_png(fig, Path(path))


def _grid(doc: dict[str, Any], label: str, k: int, lo: int, hi: int) -> list[list[float]]:
    """Rows lo..hi of the unified axis (NaN where a layer has no spectrum), k ranks each."""
    by_index = {row["unified_index"]: row["stats"][label]["spectrum_mean"] for row in doc["layers"]}
    rows = []
    for idx in range(lo, hi + 1):
        spec = by_index.get(idx, [])
        rows.append([spec[i] if i < len(spec) else math.nan for i in range(k)])
    return rows


def plot_spectra(doc_or_path: dict[str, Any] | str | Path, path: str | Path) -> Path:
    """Fig. 6: per-update heatmaps of the layer-mean ln(s_i/s_1), layers x ranks, one colour scale."""
    doc = load_result(doc_or_path, "diff", "diff.json")
    plt = pyplot()
    import numpy as np

    labels = list(doc["deltas"])
    k = doc["settings"]["top_k"]
    idx = [row["unified_index"] for row in doc["layers"]]
    lo, hi = (min(idx), max(idx)) if idx else (0, 0)
    grids = [np.array(_grid(doc, lb, k, lo, hi), dtype=float).reshape(hi - lo + 1, k) for lb in labels]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    vmin = min(float(finite.min()) if finite.size else -1.0, -1e-6)
    fig, axs = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 6), squeeze=False)
    im = None
    for ax, lb, g in zip(axs[0], labels, grids, strict=True):
        im = ax.imshow(g, aspect="auto", cmap="viridis", vmin=vmin, vmax=0.0, interpolation="nearest",
                       extent=(-0.5, k - 0.5, hi + 0.5, lo - 0.5))
        axis = doc["layout"]["unified_axis"]
        for y in (axis["projector"] - 0.5, axis["projector"] + 0.5):
            ax.axhline(y, color="white", lw=0.8, ls="--")
        offset = axis["llm"][0]
        for layers in list((doc["layout"].get("partition") or {}).values())[1:]:
            ax.axhline(offset + min(layers) - 0.5, color="white", lw=0.6, ls=":")
        ax.set_title(_name(lb, doc), fontsize=10)
        ax.set_xlabel("singular value rank i")
        ax.set_ylabel("unified layer index (vision | projector | LLM)")
    if im is not None:
        fig.colorbar(im, ax=axs[0].tolist(), label="layer mean ln(s_i / s_1)")
    fig.suptitle("Normalised singular spectra of the updates", fontsize=11)
    return save_png(fig, Path(path))


def plot_rank_trends(doc_or_path: dict[str, Any] | str | Path, path: str | Path,
                     ranks: tuple[int, ...] = TREND_RANKS) -> Path:
    """ln(s_r/s_1) at fixed ranks r against the layer: solid for the first update, dashed for the next."""
    doc = load_result(doc_or_path, "diff", "diff.json")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    _shade(ax, doc)
    xs = [row["unified_index"] for row in doc["layers"]]
    cmap = plt.get_cmap("viridis")
    for i, lb in enumerate(doc["deltas"]):
        for j, r in enumerate(ranks):
            ys = []
            for row in doc["layers"]:
                spec = row["stats"][lb]["spectrum_mean"]
                ys.append(spec[r] if r < len(spec) else math.nan)
            ax.plot(xs, ys, STYLES[i % 4], color=cmap(j / max(1, len(ranks) - 1)), lw=1.2,
                    label=f"{lb} rank {r}")
    ax.set_xlabel("unified layer index")
    ax.set_ylabel("layer mean ln(s_r / s_1)")
    ax.set_title("Spectral decay at fixed ranks (steeper = more concentrated update)", fontsize=10, pad=14)
    ax.legend(fontsize=7, ncol=2)
    return save_png(fig, Path(path))


def plot_diff(doc_or_path: dict[str, Any] | str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """All diff figures into out_dir (default: the folder of diff.json)."""
    if out_dir is None:
        if isinstance(doc_or_path, dict):
            raise FrankenscopeError("plot_diff needs out_dir when given a document instead of a path")
        p = Path(doc_or_path)
        out_dir = p if p.is_dir() else p.parent
    out_dir = Path(out_dir)
    doc = load_result(doc_or_path, "diff", "diff.json")
    paths = [plot_energy(doc, out_dir / "fig5_energy.png")]
    if doc["settings"].get("spectral", True):
        paths += [plot_spectra(doc, out_dir / "fig6_spectra.png"),
                  plot_rank_trends(doc, out_dir / "fig6_rank_trends.png")]
    return paths
