"""The causal probes as library functions (`run_localize_vision`, `run_localize_reasoning`, `run_attention`):
load the data and the model(s), run the probe, write its result file and figure. The CLI (`probes/cli.py`)
and the study call these."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from frankenscope.data.io import first_n_per_task
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.prompts import PromptStyle, get_prompt_style
from frankenscope.layers import layers_from_spec
from frankenscope.providers import suite as suite_provider

#: Default organism tasks of each analysis.
REASONING_TASKS = ("word_problem", "more_than", "digit_sum")
ATTENTION_TASKS = ("more_than", "digit_sum")


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
                layers_from_spec(layers, n_layers)


def probe_style(prompt_style: str | PromptStyle | None = "plain", system: str | None = None) -> PromptStyle:
    """The prompt style of a probe: a style name or .json file (as in evaluation); `system`, when given,
    replaces the style's system prompt (the older `--system` option)."""
    style = get_prompt_style(prompt_style or "plain")
    return replace(style, system=system) if system is not None else style


def _styled_items(items: list[Item], style: PromptStyle) -> list[Item]:
    """Items whose prompts are rendered through `style` (prefix + question + suffix), as evaluation does."""
    return [style.apply(it) for it in items]


def _fingerprint(model: str) -> str | None:
    from frankenscope.evaluate.runner import model_fingerprint

    return model_fingerprint(model) if (Path(model) / "config.json").is_file() else None


def load_dataset_items(dataset: str, out: Path, *, tasks: list[str] | None, default_tasks: tuple[str, ...],
                       n: int | None, seed: int, data_root: str | None = None,
                       prompts: dict[str, str] | None = None) -> tuple[list, str]:
    """Items of a probe's dataset. `dataset` is one of:

    * ``organism``: the organism's tasks, drawn into OUT/suite;
    * a suite folder, task folder or jsonl file (an existing path);
    * a paper dataset by name (``math500``, ``gsm8k``, ``mathvista``, ...; data/datasets.py), found under
      `data_root` (default ``data``), or ``name:PATH`` with its folder or file; several joined by commas
      (``gsm8k,math500``, the paper's layer-skipping data), each keeping its own task name.

    n is the number of items per task (the first n; for a paper dataset its file order). prompts: the prompt
    mode of MathVista / MathVerse, as in evaluation (`evaluate.run.resolve_dataset_prompts`).
    """
    from frankenscope.data.datasets import DATASETS, dataset_folder
    from frankenscope.data.datasets import load_dataset_items as load_named
    from frankenscope.data.io import load_items

    if dataset == "organism":
        wanted = tasks or list(default_tasks)
        suite = out / "suite"
        suite_provider("organism").write_suite(suite, tasks=wanted, n_per_task=n or 50, n_pairs=0, seed=seed)
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
            items += load_named(key, where, prompts=prompts)
            parts.append(f"{key}:{where}")
        source = ",".join(parts)
    if tasks:
        missing = sorted(set(tasks) - {it.task for it in items})
        if missing:
            raise FrankenscopeError(f"{dataset}: no items of task(s) {missing}")
        items = [it for it in items if it.task in set(tasks)]
    return first_n_per_task(items, n), source


def run_localize_vision(model: str, out: str | Path, *, pairs: str = "organism", tasks: list[str] | None = None,
                        n: int | None = None, mode: str = "cumulative", layers: str | None = None,
                        engine: str = "fast", resize_source: bool = False, max_new_tokens: int = 24,
                        change_rule: str = "exact", system: str | None = None, seed: int = 0,
                        dtype: str = "float32", device: str | None = None, attn: str = "sdpa", plots: bool = True,
                        progress: bool = True, prompt_style: str | PromptStyle = "plain",
                        device_map: str | None = None) -> tuple[Any, Path, Path | None]:
    """`localize vision` as a function: (VisionLocalization, path of localize_vision.json, figure or None).

    Each pair's question is rendered through `prompt_style` (as in evaluation); `system` overrides its
    system prompt. The style is recorded in the result's settings."""
    from frankenscope.loading import load_model
    from frankenscope.probes.plots import plot_vision
    from frankenscope.probes.swap import (
        file_probe_inputs,
        localize_vision,
        write_localize_vision,
    )

    out = Path(out)
    _check_inputs([model], n, layers)
    if pairs == "organism":
        inputs = suite_provider("organism").probe_inputs(tasks, n or 50, seed)
        source = f"organism probe pairs (n={n or 50} per task, seed {seed})"
    else:
        inputs, source = file_probe_inputs(pairs, tasks, n), pairs
    style = probe_style(prompt_style, system)
    inputs = [replace(inp, pair=replace(inp.pair, prompt=style.render(inp.pair.prompt))) for inp in inputs]
    loaded = load_model(model, dtype=dtype, device=device, device_map=device_map, attn_implementation=attn)
    layer_list = layers_from_spec(layers, loaded.adapter.num_layers(loaded.model))
    result = localize_vision(loaded.model, loaded.processor, loaded.adapter, inputs, layers=layer_list, mode=mode,
                             engine=engine, max_new_tokens=max_new_tokens, resize_source=resize_source,
                             change_rule=change_rule, system=style.system, seed=seed, progress=progress)
    result.settings["prompt_style"] = style.to_dict()
    path = write_localize_vision(result, out, model_source=model, model_fingerprint=_fingerprint(model),
                                 pairs_source=source, seed=seed)
    return result, path, plot_vision(path, out) if plots else None


def run_localize_reasoning(model: str, out: str | Path, *, dataset: str = "organism", tasks: list[str] | None = None,
                           n: int | None = None, data_root: str | None = None, layers: str | None = None,
                           max_new_tokens: int = 80,
                           batch_items: int | None = None, system: str | None = None, seed: int = 0,
                           dtype: str = "float32", device: str | None = None, plots: bool = True,
                           progress: bool = True, prompt_style: str | PromptStyle = "plain",
                           device_map: str | None = None, attn: str = "sdpa",
                           dataset_prompts: dict[str, str] | None = None) -> tuple[Any, Path, Path | None]:
    """`localize reasoning` as a function: (ReasoningLocalization, path of localize_reasoning.json, figure or None).

    Prompts are rendered through `prompt_style` (as in evaluation); `system` overrides its system prompt."""
    from frankenscope.loading import load_model
    from frankenscope.probes.plots import plot_reasoning
    from frankenscope.probes.skip import localize_reasoning, write_localize_reasoning

    out = Path(out)
    _check_inputs([model], n, layers)
    items, source = load_dataset_items(dataset, out, tasks=tasks, default_tasks=REASONING_TASKS, n=n, seed=seed,
                                       data_root=data_root, prompts=dataset_prompts)
    style = probe_style(prompt_style, system)
    loaded = load_model(model, dtype=dtype, device=device, device_map=device_map, attn_implementation=attn)
    layer_list = layers_from_spec(layers, loaded.adapter.num_layers(loaded.model))
    result = localize_reasoning(loaded.model, loaded.processor, loaded.adapter, _styled_items(items, style),
                                layers=layer_list, max_new_tokens=max_new_tokens, batch_items=batch_items,
                                system=style.system, seed=seed, progress=progress)
    result.settings["prompt_style"] = style.to_dict()
    path = write_localize_reasoning(result, out, model_source=model, model_fingerprint=_fingerprint(model),
                                    data_source=source, seed=seed)
    return result, path, plot_reasoning(path, out) if plots else None


def run_attention(models: dict[str, str], out: str | Path, *, dataset: str = "organism",
                  tasks: list[str] | None = None, n: int | None = None, data_root: str | None = None,
                  layers: str | None = None, max_new_tokens: int = 80, batch_size: int = 16, system: str | None = None,
                  seed: int = 0, dtype: str = "float32", device: str | None = None, plots: bool = True,
                  progress: bool = True, prompt_style: str | PromptStyle = "plain",
                  device_map: str | None = None,
                  dataset_prompts: dict[str, str] | None = None) -> tuple[Any, Path, Path | None]:
    """`attention` as a function; models: label -> path, e.g. {"IN": ..., "RL": ...} (differences are to the
    first). Returns (AttentionShift, path of attention.json, figure or None). Prompts are rendered through
    `prompt_style` (one style for all models, so their attention is compared on the same text)."""
    from frankenscope.loading import load_model
    from frankenscope.probes.attention import attention_shift, write_attention
    from frankenscope.probes.plots import plot_attention

    out = Path(out)
    if not models:
        raise FrankenscopeError("no models given")
    _check_inputs(list(models.values()), n, layers)
    items, source = load_dataset_items(dataset, out, tasks=tasks, default_tasks=ATTENTION_TASKS, n=n, seed=seed,
                                       data_root=data_root, prompts=dataset_prompts)
    style = probe_style(prompt_style, system)
    items = _styled_items(items, style)
    loaded = {}
    for name, path in models.items():
        m = load_model(path, dtype=dtype, device=device, device_map=device_map, attn_implementation="eager")
        loaded[name] = (m.model, m.processor, m.adapter)
    model0, _, adapter0 = next(iter(loaded.values()))
    result = attention_shift(loaded, items, layers=layers_from_spec(layers, adapter0.num_layers(model0)),
                             max_new_tokens=max_new_tokens, batch_size=batch_size, system=style.system, seed=seed,
                             progress=progress)
    result.settings["prompt_style"] = style.to_dict()
    path = write_attention(result, out, models={nm: {"source": p, "fingerprint": _fingerprint(p)}
                                                for nm, p in models.items()}, data_source=source, seed=seed)
    return result, path, plot_attention(path, out) if plots else None
