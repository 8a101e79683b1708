"""Typer commands for weight diffs and merges (registered from the analysis registry as `diff` and `merge`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from frankenscope.cli_common import fail
from frankenscope.errors import FrankenscopeError
from frankenscope.weights.partition import Partition


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def diff_cmd(
    base: Path | None = typer.Option(None, "--base", help="Base checkpoint (three-way form)."),
    in_: Path | None = typer.Option(None, "--in", help="IN (SFT) checkpoint (three-way form)."),
    rl: Path | None = typer.Option(None, "--rl", help="RL checkpoint (three-way form)."),
    from_: Path | None = typer.Option(None, "--from", help="Starting checkpoint (pairwise form)."),
    to: Path | None = typer.Option(None, "--to", help="Ending checkpoint (pairwise form): delta = TO - FROM."),
    out: Path = typer.Option(..., "--out", help="Output folder: diff.json and the figures."),
    top_k: int = typer.Option(50, "--top-k", help="Singular values kept per matrix (spectrum, log-volume)."),
    partition: str = typer.Option("thirds", "--partition", help="LLM regions: thirds, 8,12,8, cuts:9,18, ..."),
    max_svd_elements: int = typer.Option(100_000_000, "--max-svd-elements",
                                         help="Skip spectral metrics for bigger matrices (embeddings, lm_head)."),
    svd_method: str = typer.Option("svd", "--svd-method", help="svd (torch.linalg.svdvals) or gram (faster on CPU)."),
    spectral: bool = typer.Option(True, "--spectral/--no-spectral", help="Compute SVD-based metrics."),
    device: str = typer.Option("cpu", "--device", help="Where SVDs run (cpu, cuda)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw fig5_energy.png and fig6_*.png."),
    full_hash: bool = typer.Option(False, "--full-hash", help="Fingerprint inputs by hashing every byte."),
    architecture: str | None = typer.Option(None, "--architecture",
                                            help="Architecture for bare .safetensors files without config.json."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (1 avoids MKL's slowdown on "
                                       "busy shared machines; default: torch's choice)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Per-matrix update energy and spectra (IN - Base and RL - IN, or TO - FROM), streamed tensor by tensor."""
    from frankenscope.weights.diff import diff_models, diff_pair

    kwargs: dict[str, Any] = dict(top_k=top_k, max_svd_elements=max_svd_elements,
                  svd_method=svd_method, spectral=spectral, device=device, plots=plots, full_hash=full_hash,
                  architecture=architecture, progress=progress)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    three = (base, in_, rl)
    two = (from_, to)
    try:
        kwargs["partition"] = Partition.parse(partition)
        if all(p is not None for p in three) and all(p is None for p in two):
            doc = diff_models(base, in_, rl, out, **kwargs)
        elif all(p is not None for p in two) and all(p is None for p in three):
            doc = diff_pair(from_, to, out, **kwargs)
        else:
            raise FrankenscopeError("give either --base, --in and --rl, or --from and --to")
    except FrankenscopeError as e:
        fail(e)
        return
    labels = list(doc["deltas"])
    typer.echo(f"wrote {out / 'diff.json'} ({len(doc['tensors'])} tensors, {doc['wall_s']} s)")
    for row in doc["regions"]:
        cells = ", ".join(f"{lb} ||dW||_F mean {_fmt(row['stats'][lb]['fro_mean'])}"
                          f" eff. rank {_fmt(row['stats'][lb]['effective_rank_mean'])}" for lb in labels)
        typer.echo(f"  {row['region']:>5} (layers {row['layers'][0]}-{row['layers'][-1]}): {cells}")
    for note in doc["notes"]:
        typer.echo(f"  note: {note}")


def merge_cmd(
    in_: Path = typer.Option(..., "--in", help="IN (SFT) model folder."),
    rl: Path = typer.Option(..., "--rl", help="RL model folder."),
    out: Path = typer.Option(..., "--out", help="Output folder (with --all-hybrids: one subfolder per plan). An "
                             "existing folder that is not an earlier merge is refused unless --overwrite."),
    plan: str | None = typer.Option(None, "--plan", help="Donors of early:mid:late, e.g. IN:RL:RL."),
    all_hybrids: bool = typer.Option(False, "--all-hybrids", help="Write the paper's six hybrids."),
    partition: str = typer.Option("thirds", "--partition", help="LLM regions: thirds, 8,12,8, cuts:9,18, ..."),
    non_layer_from: str = typer.Option(
        "early", "--non-layer-from",
        help="Donor of vision tower, projector, embeddings, final norm, lm_head, config: early (the early "
             "region's donor, as the reference code does), IN or RL."),
    shard_gb: float = typer.Option(2.0, "--shard-gb", help="Maximum shard size in GB (GiB)."),
    full_hash: bool = typer.Option(False, "--full-hash", help="Fingerprint donors by hashing every byte."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT even if it is not an earlier merge."),
) -> None:
    """Region-wise Frankenstein merge of an IN and an RL checkpoint into a loadable HF folder."""
    from frankenscope.weights.merge import merge, merge_all_hybrids

    donors = {"IN": in_, "RL": rl}
    kwargs: dict[str, Any] = dict(non_layer_from=non_layer_from,
                  shard_bytes=max(1, int(shard_gb * 1024**3)), full_hash=full_hash, progress=progress,
                  overwrite=overwrite)
    try:
        kwargs["partition"] = Partition.parse(partition)
        if all_hybrids == (plan is not None):
            raise FrankenscopeError("give exactly one of --plan PLAN and --all-hybrids")
        paths = merge_all_hybrids(donors, out, **kwargs) if all_hybrids else [merge(donors, plan, out, **kwargs)]
    except FrankenscopeError as e:
        fail(e)
        return
    for p in paths:
        typer.echo(f"wrote {p}")
