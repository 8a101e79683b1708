"""Typer commands of the causal probes; the main app registers them as `localize vision`,
`localize reasoning` and `attention`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from frankenscope.data.io import first_n_per_task
from frankenscope.errors import FrankenscopeError

localize_app = typer.Typer(no_args_is_help=True,
                           help="Functional localization: visual-token swapping and layer skipping (paper Fig. 4).")

#: Default organism tasks of each analysis.
REASONING_TASKS = ("word_problem", "more_than", "digit_sum")
ATTENTION_TASKS = ("more_than", "digit_sum")


def _fail(e: Exception) -> None:
    """Print the error and exit: 2 for usage and input errors, 1 for runtime failures."""
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=getattr(e, "exit_code", 1))


def _check_inputs(models: list[str], n: int | None, layers: str | None = None) -> None:
    """Validate what a probe needs before anything is written or loaded: n >= 1, every model, and the
    layer spec against each local model's config (text_config.num_hidden_layers)."""
    import json

    from frankenscope.loading import check_model_source

    if n is not None and n < 1:
        raise FrankenscopeError(f"n must be >= 1, got {n}")
    for model in models:
        check_model_source(model)
        cfg_file = Path(model) / "config.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            n_layers = (cfg.get("text_config") or {}).get("num_hidden_layers") or cfg.get("num_hidden_layers")
            if isinstance(n_layers, int):
                _layers(layers, n_layers)


def _tasks(spec: str | None) -> list[str] | None:
    return [t.strip() for t in spec.split(",") if t.strip()] if spec else None


def _layers(spec: str | None, n_layers: int) -> list[int]:
    from frankenscope.weights.partition import parse_layers

    if spec is None or spec.strip().lower() == "all":
        return list(range(n_layers))
    return parse_layers(spec, n_layers)


def _fingerprint(model: str) -> str | None:
    from frankenscope.evaluate.runner import model_fingerprint

    return model_fingerprint(model) if (Path(model) / "config.json").is_file() else None


def load_dataset_items(dataset: str, out: Path, *, tasks: list[str] | None, default_tasks: tuple[str, ...],
                       n: int | None, seed: int, data_root: str | None = None) -> tuple[list, str]:
    """Items of a probe's dataset. `dataset` is one of:

    * ``organism``: the organism's tasks, drawn into OUT/suite;
    * a suite folder, task folder or jsonl file (an existing path);
    * a paper dataset by name (``math500``, ``gsm8k``, ``mathvista``, ...; data/datasets.py), found under
      `data_root` (default ``data``), or ``name:PATH`` with its folder or file; several joined by commas
      (``gsm8k,math500``, the paper's layer-skipping data), each keeping its own task name.

    n is the number of items per task (the first n; for a paper dataset its file order).
    """
    from frankenscope.data.datasets import DATASETS, dataset_folder
    from frankenscope.data.datasets import load_dataset_items as load_named
    from frankenscope.data.io import load_items, write_suite

    if dataset == "organism":
        wanted = tasks or list(default_tasks)
        suite = out / "suite"
        write_suite(suite, tasks=wanted, n_per_task=n or 50, n_pairs=0, seed=seed)
        items, source = load_items(suite), f"organism suite (seed {seed}) at {suite}"
    elif Path(dataset).exists():
        items, source = load_items(dataset), dataset
    else:
        items, parts = [], []
        for entry in (e.strip() for e in dataset.split(",") if e.strip()):
            key, _, path = entry.partition(":")
            if key.lower().replace("-", "").replace("_", "") not in DATASETS:
                raise FrankenscopeError(
                    f"dataset {entry!r} is neither an existing file or folder nor a known dataset name "
                    f"({', '.join(DATASETS)}, optionally as name:PATH), nor 'organism'")
            where = Path(path) if path else dataset_folder(data_root or "data", key)
            items += load_named(key, where)
            parts.append(f"{key}:{where}")
        source = ",".join(parts)
    if tasks:
        missing = sorted(set(tasks) - {it.task for it in items})
        if missing:
            raise FrankenscopeError(f"{dataset}: no items of task(s) {missing}")
        items = [it for it in items if it.task in set(tasks)]
    return first_n_per_task(items, n), source


def _rate_cell(s: dict[str, Any]) -> str:
    return f"{s['rate']:.2f}"


def _table(tasks: dict[str, Any], key: str) -> str:
    names = list(tasks)
    layers = [r["layer"] for r in tasks[names[0]]["per_layer"]]
    lines = ["| layer | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for i, layer in enumerate(layers):
        lines.append(f"| {layer} | " + " | ".join(_rate_cell(tasks[t]["per_layer"][i][key]) for t in names) + " |")
    return "\n".join(lines)


def run_localize_vision(model: str, out: str | Path, *, pairs: str = "organism", tasks: list[str] | None = None,
                        n: int | None = None, mode: str = "cumulative", layers: str | None = None,
                        engine: str = "fast", resize_source: bool = False, max_new_tokens: int = 24,
                        change_rule: str = "exact", system: str | None = None, seed: int = 0,
                        dtype: str = "float32", device: str | None = None, attn: str = "sdpa", plots: bool = True,
                        progress: bool = True) -> tuple[Any, Path, Path | None]:
    """`localize vision` as a function: (VisionLocalization, path of localize_vision.json, figure or None)."""
    from frankenscope.loading import load_model
    from frankenscope.probes.plots import plot_vision
    from frankenscope.probes.swap import (
        file_probe_inputs,
        localize_vision,
        organism_probe_inputs,
        write_localize_vision,
    )

    out = Path(out)
    _check_inputs([model], n, layers)
    if pairs == "organism":
        inputs = organism_probe_inputs(tasks, n or 50, seed)
        source = f"organism probe pairs (n={n or 50} per task, seed {seed})"
    else:
        inputs, source = file_probe_inputs(pairs, tasks, n), pairs
    loaded = load_model(model, dtype=dtype, device=device, attn_implementation=attn)
    layer_list = _layers(layers, loaded.adapter.num_layers(loaded.model))
    result = localize_vision(loaded.model, loaded.processor, loaded.adapter, inputs, layers=layer_list, mode=mode,
                             engine=engine, max_new_tokens=max_new_tokens, resize_source=resize_source,
                             change_rule=change_rule, system=system, seed=seed, progress=progress)
    path = write_localize_vision(result, out, model_source=model, model_fingerprint=_fingerprint(model),
                                 pairs_source=source, seed=seed)
    return result, path, plot_vision(path, out) if plots else None


def run_localize_reasoning(model: str, out: str | Path, *, dataset: str = "organism", tasks: list[str] | None = None,
                           n: int | None = None, data_root: str | None = None, layers: str | None = None,
                           max_new_tokens: int = 80,
                           batch_items: int | None = None, system: str | None = None, seed: int = 0,
                           dtype: str = "float32", device: str | None = None, plots: bool = True,
                           progress: bool = True) -> tuple[Any, Path, Path | None]:
    """`localize reasoning` as a function: (ReasoningLocalization, path of localize_reasoning.json, figure or None)."""
    from frankenscope.loading import load_model
    from frankenscope.probes.plots import plot_reasoning
    from frankenscope.probes.skip import localize_reasoning, write_localize_reasoning

    out = Path(out)
    _check_inputs([model], n, layers)
    items, source = load_dataset_items(dataset, out, tasks=tasks, default_tasks=REASONING_TASKS, n=n, seed=seed,
                                       data_root=data_root)
    loaded = load_model(model, dtype=dtype, device=device)
    layer_list = _layers(layers, loaded.adapter.num_layers(loaded.model))
    result = localize_reasoning(loaded.model, loaded.processor, loaded.adapter, items, layers=layer_list,
                                max_new_tokens=max_new_tokens, batch_items=batch_items, system=system, seed=seed,
                                progress=progress)
    path = write_localize_reasoning(result, out, model_source=model, model_fingerprint=_fingerprint(model),
                                    data_source=source, seed=seed)
    return result, path, plot_reasoning(path, out) if plots else None


def run_attention(models: dict[str, str], out: str | Path, *, dataset: str = "organism",
                  tasks: list[str] | None = None, n: int | None = None, data_root: str | None = None,
                  layers: str | None = None, max_new_tokens: int = 80, batch_size: int = 16, system: str | None = None, seed: int = 0,
                  dtype: str = "float32", device: str | None = None, plots: bool = True,
                  progress: bool = True) -> tuple[Any, Path, Path | None]:
    """`attention` as a function; models: label -> path, e.g. {"IN": ..., "RL": ...} (differences are to the
    first). Returns (AttentionShift, path of attention.json, figure or None)."""
    from frankenscope.loading import load_model
    from frankenscope.probes.attention import attention_shift, write_attention
    from frankenscope.probes.plots import plot_attention

    out = Path(out)
    if not models:
        raise FrankenscopeError("no models given")
    _check_inputs(list(models.values()), n, layers)
    items, source = load_dataset_items(dataset, out, tasks=tasks, default_tasks=ATTENTION_TASKS, n=n, seed=seed,
                                       data_root=data_root)
    loaded = {}
    for name, path in models.items():
        m = load_model(path, dtype=dtype, device=device, attn_implementation="eager")
        loaded[name] = (m.model, m.processor, m.adapter)
    model0, _, adapter0 = next(iter(loaded.values()))
    result = attention_shift(loaded, items, layers=_layers(layers, adapter0.num_layers(model0)),
                             max_new_tokens=max_new_tokens, batch_size=batch_size, system=system, seed=seed,
                             progress=progress)
    path = write_attention(result, out, models={nm: {"source": p, "fingerprint": _fingerprint(p)}
                                                for nm, p in models.items()}, data_source=source, seed=seed)
    return result, path, plot_attention(path, out) if plots else None


@localize_app.command("vision")
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
    system: str | None = typer.Option(None, help="System prompt (default: none, the template's default)."),
    seed: int = typer.Option(0, help="Seed of the organism pairs and of the bootstrap CIs."),
    dtype: str = typer.Option("float32"), device: str | None = typer.Option(None),
    attn: str = typer.Option("sdpa", help="Attention implementation (sdpa or eager)."),
    plots: bool = typer.Option(True, "--plots/--no-plots"), progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Visual-token swapping per layer (Fig. 4a, Eq. 2): change rate, flip-to-source rate, unswapped accuracy."""
    try:
        result, path, fig = run_localize_vision(
            model, out, pairs=pairs, tasks=_tasks(tasks), n=n, mode=mode, layers=layers, engine=engine,
            resize_source=resize_source, max_new_tokens=max_new_tokens, change_rule=change_rule, system=system,
            seed=seed, dtype=dtype, device=device, attn=attn, plots=plots, progress=progress)
    except FrankenscopeError as e:
        _fail(e)
        return
    typer.echo(f"change rate per layer ({mode}, {engine} engine, {len(result.records)} pairs, {result.wall_s:.1f} s):")
    typer.echo(_table(result.tasks, "change"))
    acc = ", ".join(f"{t} {v['unswapped_accuracy']['rate']:.2f}" for t, v in result.tasks.items())
    typer.echo(f"unswapped accuracy: {acc}")
    typer.echo(f"wrote {path}" + (f" and {fig}" if fig else ""))


@localize_app.command("reasoning")
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
    batch_items: int | None = typer.Option(None, help="Items per generate call (each adds 1 + #layers rows)."),
    system: str | None = typer.Option(None, help="System prompt (default: none)."),
    seed: int = typer.Option(0, help="Seed of the organism suite and of the bootstrap CIs."),
    dtype: str = typer.Option("float32"), device: str | None = typer.Option(None),
    plots: bool = typer.Option(True, "--plots/--no-plots"), progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Layer skipping (Fig. 4b): error rate with each decoder layer skipped, and its increase over no skip."""
    try:
        result, path, fig = run_localize_reasoning(
            model, out, dataset=dataset, tasks=_tasks(tasks), n=n, data_root=data_root, layers=layers,
            max_new_tokens=max_new_tokens,
            batch_items=batch_items, system=system, seed=seed, dtype=dtype, device=device, plots=plots,
            progress=progress)
    except FrankenscopeError as e:
        _fail(e)
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
    batch_size: int = typer.Option(16, help="Generation batch size."),
    system: str | None = typer.Option(None, help="System prompt (default: none)."),
    seed: int = typer.Option(0, help="Seed of the organism suite and of the bootstrap CIs."),
    dtype: str = typer.Option("float32"), device: str | None = typer.Option(None),
    plots: bool = typer.Option(True, "--plots/--no-plots"), progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Attention from response (reasoning) tokens to image tokens per layer, per model and the difference (Fig. 3)."""
    names = [x.strip() for x in labels.split(",")]
    try:
        if len(names) != len(models) or len(set(names)) != len(names):
            raise FrankenscopeError(f"--labels needs {len(models)} distinct names, got {labels!r}")
        result, path, fig = run_attention(
            dict(zip(names, models, strict=True)), out, dataset=dataset, tasks=_tasks(tasks), n=n,
            data_root=data_root, layers=layers,
            max_new_tokens=max_new_tokens, batch_size=batch_size, system=system, seed=seed, dtype=dtype,
            device=device, plots=plots, progress=progress)
    except FrankenscopeError as e:
        _fail(e)
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
