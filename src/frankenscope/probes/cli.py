"""Typer commands of the causal probes (argument parsing only); the main app registers them from the analysis registry (`frankenscope.analyses`) as
`localize vision`, `localize reasoning` and `attention`. The work is done by `probes/run.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from frankenscope.cli_common import fail
from frankenscope.errors import FrankenscopeError
from frankenscope.probes.run import ATTENTION_TASKS, REASONING_TASKS  # light: no torch at import


def _tasks(spec: str | None) -> list[str] | None:
    return [t.strip() for t in spec.split(",") if t.strip()] if spec else None


def _rate_cell(s: dict[str, Any]) -> str:
    return f"{s['rate']:.2f}"


def _table(tasks: dict[str, Any], key: str) -> str:
    names = list(tasks)
    layers = [r["layer"] for r in tasks[names[0]]["per_layer"]]
    lines = ["| layer | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for i, layer in enumerate(layers):
        lines.append(f"| {layer} | " + " | ".join(_rate_cell(tasks[t]["per_layer"][i][key]) for t in names) + " |")
    return "\n".join(lines)


def localize_vision_cmd(
    model: str = typer.Argument(..., help="HF folder or hub id (the paper probes the base model)."),
    out: Path = typer.Option(..., help="Output folder: localize_vision.json and fig4a_change_rate.png."),
    pairs: str = typer.Option("organism", help="Probe pairs: a jsonl file, a task folder, a folder of task folders "
                              "(the paper's <task>/data.jsonl + <task>/images/), a suite, or 'organism'."),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks to keep (default: all)."),
    n: int | None = typer.Option(None, help="Pairs per task: the first N of each file task (default all); "
                                 "for 'organism' the number drawn (default 50)."),
    mode: str = typer.Option("cumulative", help="cumulative: swap in every layer >= l (the reference); "
                             "single: swap in layer l only."),
    layers: str | None = typer.Option(None, help="Swap layers, e.g. '0-5,8' (default: all)."),
    engine: str = typer.Option("fast", help="fast (exact triangular sweep) or naive (one hooked prompt pass "
                               "per layer, the oracle)."),
    resize_source: bool = typer.Option(False, "--resize-source", help="Resize a source image to its target's "
                                       "size when their token grids differ (otherwise such a pair is an error)."),
    max_new_tokens: int = typer.Option(24, help="Greedy decoding budget per answer."),
    change_rule: str = typer.Option("exact", help="exact: normalised extracted answers differ; reference: the "
                                    "reference code's rule (substring test for answers of >= 20 characters)."),
    prompt_style: str = typer.Option("plain", help="Prompt style: a built-in name (plain, boxed, think_answer, "
                                     "think_boxed) or a .json style file, as in `eval`."),
    system: str | None = typer.Option(None, help="System prompt, replacing the style's (default: the style's)."),
    seed: int = typer.Option(0, help="Seed of the organism pairs and of the bootstrap CIs."),
    dtype: str = typer.Option("float32"), device: str | None = typer.Option(None),
    attn: str = typer.Option("sdpa", help="Attention implementation (sdpa or eager)."),
    plots: bool = typer.Option(True, "--plots/--no-plots"), progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Visual-token swapping per layer (Fig. 4a, Eq. 2): change rate, flip-to-source rate, unswapped accuracy."""
    from frankenscope.probes.run import run_localize_vision

    try:
        result, path, fig = run_localize_vision(
            model, out, pairs=pairs, tasks=_tasks(tasks), n=n, mode=mode, layers=layers, engine=engine,
            resize_source=resize_source, max_new_tokens=max_new_tokens, change_rule=change_rule, system=system,
            seed=seed, dtype=dtype, device=device, attn=attn, plots=plots, progress=progress,
            prompt_style=prompt_style)
    except FrankenscopeError as e:
        fail(e)
        return
    typer.echo(f"change rate per layer ({mode}, {engine} engine, {len(result.records)} pairs, {result.wall_s:.1f} s):")
    typer.echo(_table(result.tasks, "change"))
    acc = ", ".join(f"{t} {v['unswapped_accuracy']['rate']:.2f}" for t, v in result.tasks.items())
    typer.echo(f"unswapped accuracy: {acc}")
    typer.echo(f"wrote {path}" + (f" and {fig}" if fig else ""))


def localize_reasoning_cmd(
    model: str = typer.Argument(..., help="HF folder or hub id."),
    out: Path = typer.Option(..., help="Output folder: localize_reasoning.json and fig4b_skip_error.png."),
    dataset: str = typer.Option("organism", help="Items: a suite, task folder or jsonl file; a paper dataset by "
                                "name (math500, gsm8k, ... under --data-root, or name:PATH; comma-separated for "
                                f"several, the paper uses gsm8k,math500); or 'organism' (tasks "
                                f"{', '.join(REASONING_TASKS)} drawn into OUT/suite)."),
    data_root: str = typer.Option("data", help="Folder holding the paper datasets named by --dataset."),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks to keep."),
    n: int | None = typer.Option(None, help="Items per task (organism default 50; files: the first N)."),
    layers: str | None = typer.Option(None, help="Layers to skip, e.g. '0-5' (default: all)."),
    max_new_tokens: int = typer.Option(80, help="Greedy decoding budget per response."),
    batch_items: str | None = typer.Option(None, help="Items per generate call (each adds 1 + #layers rows); "
                                           "auto: as many as fit in free GPU memory (default: ~32 rows)."),
    prompt_style: str = typer.Option("plain", help="Prompt style: a built-in name or a .json style file."),
    system: str | None = typer.Option(None, help="System prompt, replacing the style's (default: the style's)."),
    seed: int = typer.Option(0, help="Seed of the organism suite and of the bootstrap CIs."),
    dtype: str = typer.Option("float32"), device: str | None = typer.Option(None),
    plots: bool = typer.Option(True, "--plots/--no-plots"), progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Layer skipping (Fig. 4b): error rate with each decoder layer skipped, and its increase over no skip."""
    from frankenscope.probes.run import run_localize_reasoning

    try:
        result, path, fig = run_localize_reasoning(
            model, out, dataset=dataset, tasks=_tasks(tasks), n=n, data_root=data_root, layers=layers,
            max_new_tokens=max_new_tokens,
            batch_items=batch_items, system=system, seed=seed, dtype=dtype, device=device, plots=plots,
            progress=progress, prompt_style=prompt_style)
    except FrankenscopeError as e:
        fail(e)
        return
    typer.echo(f"error rate per skipped layer ({len(result.records)} items, {result.wall_s:.1f} s):")
    typer.echo(_table(result.tasks, "error"))
    base = ", ".join(f"{t} {v['baseline_error']['rate']:.2f}" for t, v in result.tasks.items())
    typer.echo(f"error with no layer skipped: {base}")
    typer.echo(f"wrote {path}" + (f" and {fig}" if fig else ""))


def attention_cmd(
    models: tuple[str, str] = typer.Option(..., "--models", help="Two models, e.g. the IN and the RL checkpoint."),
    out: Path = typer.Option(..., help="Output folder: attention.json and fig3_attention.png."),
    labels: str = typer.Option("IN,RL", help="Comma-separated labels of the two models."),
    dataset: str = typer.Option("organism", help="Items with images: a suite, task folder or jsonl file; a "
                                "paper dataset by name (e.g. mathvista under --data-root, or mathvista:PATH); or "
                                f"'organism' (tasks {', '.join(ATTENTION_TASKS)} drawn into OUT/suite)."),
    data_root: str = typer.Option("data", help="Folder holding the paper datasets named by --dataset."),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks to keep."),
    n: int | None = typer.Option(None, help="Items per task (organism default 50; files: the first N)."),
    layers: str | None = typer.Option(None, help="Layers to measure (default: all)."),
    max_new_tokens: int = typer.Option(80, help="Greedy decoding budget of the responses."),
    batch_size: str = typer.Option("16", help="Generation batch size, or auto (as many items as fit in free GPU "
                                   "memory with both models loaded; 16 on the CPU)."),
    prompt_style: str = typer.Option("plain", help="Prompt style: a built-in name or a .json style file."),
    system: str | None = typer.Option(None, help="System prompt, replacing the style's (default: the style's)."),
    seed: int = typer.Option(0, help="Seed of the organism suite and of the bootstrap CIs."),
    dtype: str = typer.Option("float32"), device: str | None = typer.Option(None),
    plots: bool = typer.Option(True, "--plots/--no-plots"), progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Attention from response (reasoning) tokens to image tokens per layer, per model and the difference (Fig. 3)."""
    from frankenscope.probes.run import run_attention

    names = [x.strip() for x in labels.split(",")]
    try:
        if len(names) != len(models) or len(set(names)) != len(names):
            raise FrankenscopeError(f"--labels needs {len(models)} distinct names, got {labels!r}")
        result, path, fig = run_attention(
            dict(zip(names, models, strict=True)), out, dataset=dataset, tasks=_tasks(tasks), n=n,
            data_root=data_root, layers=layers,
            max_new_tokens=max_new_tokens, batch_size=batch_size, system=system, seed=seed, dtype=dtype,
            device=device, plots=plots, progress=progress, prompt_style=prompt_style)
    except FrankenscopeError as e:
        fail(e)
        return
    n_items = len(next(iter(result.records.values())))
    typer.echo(f"attention mass (response -> image tokens) per layer, {n_items} items, {result.wall_s:.1f} s:")
    lines = ["| layer | " + " | ".join(names) + " | " + " | ".join(result.summary["differences"]) + " |",
             "|---:|" + "---:|" * (len(names) + len(result.summary["differences"]))]
    for i, layer in enumerate(result.layers):
        cells = [f"{result.summary['models'][nm]['per_layer'][i]['mass']['mean']:.4f}" for nm in names]
        for d in result.summary["differences"].values():
            r = d["per_layer"][i]["mass"]
            cells.append(f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    typer.echo("\n".join(lines))
    typer.echo(f"wrote {path}" + (f" and {fig}" if fig else ""))
