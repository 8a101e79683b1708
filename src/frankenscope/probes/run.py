"""The causal probes as library functions (`run_localize_vision`, `run_localize_reasoning`, `run_attention`):
load the data and the model(s), run the probe, write its result file and figure. The CLI (`probes/cli.py`)
and the study call these.

Each probe is prepared first (`prepare_localize_vision`, `prepare_localize_reasoning`, `prepare_attention`:
inputs checked, items loaded and styled, layers resolved from the model's config) into a `ShardedProbe`
(probes/shards.py) that computes the records of any of its batches and finishes a run from the records of
all of them. `run_*` runs it whole (`shards.run_probe`); the study's Ray executor runs it in shards
(`shards.run_probe_shard`, `shards.combine_probe_shards`) through the same methods, so both write the same
result file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from frankenscope.data.io import first_n_per_task
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.prompts import PromptStyle, get_prompt_style
from frankenscope.layers import layers_from_spec
from frankenscope.probes.shards import ShardedProbe, run_probe
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


def model_depth(model: str) -> int:
    """Decoder layers of a model, from its config (`text_config.num_hidden_layers`; local folder or hub id)."""
    from transformers import AutoConfig

    try:
        n = AutoConfig.from_pretrained(model).get_text_config().num_hidden_layers
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise FrankenscopeError(f"{model}: cannot read the number of decoder layers from its config "
                                f"({type(e).__name__}: {e})") from e
    if not isinstance(n, int) or n < 1:
        raise FrankenscopeError(f"{model}: its config gives no number of decoder layers (num_hidden_layers)")
    return n


def _check_depth(model: str, loaded: Any, depth: int) -> None:
    """The loaded model has the depth its config said when the probe was prepared (its layers were resolved
    from it)."""
    n = loaded.adapter.num_layers(loaded.model)
    if n != depth:
        raise FrankenscopeError(f"{model}: the config says {depth} decoder layers but the loaded model has {n}")


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


@dataclass
class _Load:
    """How a probe loads its model(s) (`loading.load_model`'s placement and precision)."""

    dtype: str = "float32"
    device: str | None = None
    device_map: str | None = None
    attn: str = "sdpa"

    def __call__(self, model: str) -> Any:
        from frankenscope.loading import load_model

        return load_model(model, dtype=self.dtype, device=self.device, device_map=self.device_map,
                          attn_implementation=self.attn)


@dataclass
class VisionProbe(ShardedProbe):
    """`localize vision` prepared: the styled probe inputs, one batch per pair (each pair is swept alone)."""

    kind: ClassVar[str] = "localize_vision"
    model: str
    out: Path
    inputs: list[Any]  # swap.ProbeInput, prompts rendered through `style`
    source: str
    style: PromptStyle
    depth: int
    layers: list[int]
    options: dict[str, Any]  # vision_records' mode, engine, max_new_tokens, resize_source, change_rule
    load: _Load
    seed: int
    fingerprint: str | None
    plots: bool = True
    progress: bool = True

    def batches(self) -> list[list[int]]:
        return [[i] for i in range(len(self.inputs))]

    def key(self) -> dict[str, Any]:
        return {"model": self.model, "fingerprint": self.fingerprint, "source": self.source,
                "style": self.style.to_dict(), "layers": self.layers, "options": self.options,
                "load": asdict(self.load), "seed": self.seed}

    def item_key(self, index: int) -> Any:
        return asdict(self.inputs[index].pair)

    def compute(self, batches: list[list[int]]) -> tuple[list[Any], dict[str, Any]]:
        from frankenscope.probes.swap import vision_records

        loaded = self.load(self.model)
        _check_depth(self.model, loaded, self.depth)
        inputs = [self.inputs[i] for i in sorted(i for b in batches for i in b)]
        return vision_records(loaded.model, loaded.processor, loaded.adapter, inputs, layers=self.layers,
                              system=self.style.system, progress=self.progress, **self.options)

    def finish(self, records: list[Any], settings: dict[str, Any], wall_s: float) -> tuple[Any, Path, Path | None]:
        from frankenscope.probes.plots import plot_vision
        from frankenscope.probes.swap import vision_result, write_localize_vision

        result = vision_result(records, {**settings, "prompt_style": self.style.to_dict()}, self.seed, wall_s)
        path = write_localize_vision(result, self.out, model_source=self.model, model_fingerprint=self.fingerprint,
                                     pairs_source=self.source, seed=self.seed)
        return result, path, plot_vision(path, self.out) if self.plots else None

    def encode(self, record: Any) -> Any:
        return asdict(record)

    def decode(self, value: Any) -> Any:
        from frankenscope.probes.swap import PairRecord

        return PairRecord(**value)


def prepare_localize_vision(model: str, out: str | Path, *, pairs: str = "organism", tasks: list[str] | None = None,
                            n: int | None = None, mode: str = "cumulative", layers: str | None = None,
                            engine: str = "fast", resize_source: bool = False, max_new_tokens: int = 24,
                            change_rule: str = "exact", system: str | None = None, seed: int = 0,
                            dtype: str = "float32", device: str | None = None, attn: str = "sdpa",
                            plots: bool = True, progress: bool = True, prompt_style: str | PromptStyle = "plain",
                            device_map: str | None = None) -> VisionProbe:
    """`localize vision` prepared (see `run_localize_vision` for the arguments); nothing is loaded yet."""
    from frankenscope.probes.swap import file_probe_inputs

    out = Path(out)
    _check_inputs([model], n, layers)
    if pairs == "organism":
        inputs = suite_provider("organism").probe_inputs(tasks, n or 50, seed)
        source = f"organism probe pairs (n={n or 50} per task, seed {seed})"
    else:
        inputs, source = file_probe_inputs(pairs, tasks, n), pairs
    style = probe_style(prompt_style, system)
    inputs = [replace(inp, pair=replace(inp.pair, prompt=style.render(inp.pair.prompt))) for inp in inputs]
    depth = model_depth(model)
    return VisionProbe(model, out, inputs, source, style, depth, layers_from_spec(layers, depth),
                       {"mode": mode, "engine": engine, "max_new_tokens": max_new_tokens,
                        "resize_source": resize_source, "change_rule": change_rule},
                       _Load(dtype, device, device_map, attn), seed, _fingerprint(model), plots, progress)


def run_localize_vision(model: str, out: str | Path, **kwargs: Any) -> tuple[Any, Path, Path | None]:
    """`localize vision` as a function: (VisionLocalization, path of localize_vision.json, figure or None).

    Arguments: model, out, pairs ("organism" or a jsonl file / folder), tasks, n (pairs per task), mode,
    layers, engine, resize_source, max_new_tokens, change_rule, system, seed, dtype, device, attn, plots,
    progress, prompt_style, device_map (`prepare_localize_vision`). Each pair's question is rendered through
    `prompt_style` (as in evaluation); `system` overrides its system prompt. The style is recorded in the
    result's settings."""
    return run_probe(prepare_localize_vision(model, out, **kwargs))


@dataclass
class ReasoningProbe(ShardedProbe):
    """`localize reasoning` prepared: the styled items, batched as `skip.skip_batches` batches them."""

    kind: ClassVar[str] = "localize_reasoning"
    model: str
    out: Path
    items: list[Item]  # prompts rendered through `style`
    source: str
    style: PromptStyle
    depth: int
    layers: list[int]
    max_new_tokens: int
    batch_items: int  # items per generate call (resolved)
    load: _Load
    seed: int
    fingerprint: str | None
    plots: bool = True
    progress: bool = True

    def batches(self) -> list[list[int]]:
        from frankenscope.probes.skip import skip_batches

        return skip_batches(self.items, self.batch_items)

    def key(self) -> dict[str, Any]:
        return {"model": self.model, "fingerprint": self.fingerprint, "source": self.source,
                "style": self.style.to_dict(), "layers": self.layers, "max_new_tokens": self.max_new_tokens,
                "batch_items": self.batch_items, "load": asdict(self.load), "seed": self.seed}

    def item_key(self, index: int) -> Any:
        return self.items[index].to_dict()

    def compute(self, batches: list[list[int]]) -> tuple[list[Any], dict[str, Any]]:
        from frankenscope.probes.skip import reasoning_records

        loaded = self.load(self.model)
        _check_depth(self.model, loaded, self.depth)
        return reasoning_records(loaded.model, loaded.processor, loaded.adapter, self.items, layers=self.layers,
                                 max_new_tokens=self.max_new_tokens, batch_items=self.batch_items, batches=batches,
                                 system=self.style.system, progress=self.progress)

    def finish(self, records: list[Any], settings: dict[str, Any], wall_s: float) -> tuple[Any, Path, Path | None]:
        from frankenscope.probes.plots import plot_reasoning
        from frankenscope.probes.skip import reasoning_result, write_localize_reasoning

        result = reasoning_result(records, {**settings, "prompt_style": self.style.to_dict()}, self.seed, wall_s)
        path = write_localize_reasoning(result, self.out, model_source=self.model,
                                        model_fingerprint=self.fingerprint, data_source=self.source, seed=self.seed)
        return result, path, plot_reasoning(path, self.out) if self.plots else None

    def encode(self, record: Any) -> Any:
        return asdict(record)

    def decode(self, value: Any) -> Any:
        from frankenscope.probes.skip import SkipRecord

        return SkipRecord(**value)


def prepare_localize_reasoning(model: str, out: str | Path, *, dataset: str = "organism",
                               tasks: list[str] | None = None, n: int | None = None, data_root: str | None = None,
                               layers: str | None = None, max_new_tokens: int = 80,
                               batch_items: int | str | None = None,
                               system: str | None = None, seed: int = 0, dtype: str = "float32",
                               device: str | None = None, plots: bool = True, progress: bool = True,
                               prompt_style: str | PromptStyle = "plain", device_map: str | None = None,
                               attn: str = "sdpa", dataset_prompts: dict[str, str] | None = None) -> ReasoningProbe:
    """`localize reasoning` prepared (see `run_localize_reasoning` for the arguments); nothing is loaded yet (the
    organism's items are written to OUT/suite)."""
    from frankenscope.evaluate.backends import AUTO, batch_for_free_memory, parse_batch_size
    from frankenscope.probes.skip import default_batch_items

    out = Path(out)
    _check_inputs([model], n, layers)
    batch = None if batch_items is None else parse_batch_size(batch_items)
    items, source = load_dataset_items(dataset, out, tasks=tasks, default_tasks=REASONING_TASKS, n=n, seed=seed,
                                       data_root=data_root, prompts=dataset_prompts)
    if not items:
        raise FrankenscopeError("no items to run")
    style = probe_style(prompt_style, system)
    depth = model_depth(model)
    layer_list = layers_from_spec(layers, depth)
    if batch is None or batch == AUTO:  # auto: the rows (1 + layers per item) that fit in free GPU memory
        default = default_batch_items(len(layer_list))
        batch = default if batch is None else batch_for_free_memory(
            [model], rows_per_item=1 + len(layer_list), max_new_tokens=max_new_tokens, dtype=dtype, device=device,
            device_map=device_map, default=default)
    return ReasoningProbe(model, out, _styled_items(items, style), source, style, depth, layer_list, max_new_tokens,
                          int(batch), _Load(dtype, device, device_map, attn),
                          seed, _fingerprint(model), plots, progress)


def run_localize_reasoning(model: str, out: str | Path, **kwargs: Any) -> tuple[Any, Path, Path | None]:
    """`localize reasoning` as a function: (ReasoningLocalization, path of localize_reasoning.json, figure or None).

    Arguments: model, out, dataset (`load_dataset_items`), tasks, n (items per task), data_root, layers,
    max_new_tokens, batch_items, system, seed, dtype, device, plots, progress, prompt_style, device_map, attn,
    dataset_prompts (`prepare_localize_reasoning`). Prompts are rendered through `prompt_style` (as in
    evaluation); `system` overrides its system prompt."""
    return run_probe(prepare_localize_reasoning(model, out, **kwargs))


@dataclass
class AttentionProbe(ShardedProbe):
    """`attention` prepared: the styled items, batched in generation chunks of `batch_size` items with an
    image (`attention.attention_batches`); every model runs on every shard. A record is one item's
    {label: ItemAttention}."""

    kind: ClassVar[str] = "attention"
    models: dict[str, str]  # label -> path; differences are to the first
    out: Path
    items: list[Item]  # prompts rendered through `style`
    source: str
    style: PromptStyle
    depth: int
    layers: list[int]
    max_new_tokens: int
    batch_size: int
    load: _Load
    seed: int
    fingerprints: dict[str, str | None] = field(default_factory=dict)
    plots: bool = True
    progress: bool = True

    def batches(self) -> list[list[int]]:
        from frankenscope.probes.attention import attention_batches

        return attention_batches(self.items, self.batch_size)

    def key(self) -> dict[str, Any]:
        return {"models": self.models, "fingerprints": self.fingerprints, "source": self.source,
                "style": self.style.to_dict(), "layers": self.layers, "max_new_tokens": self.max_new_tokens,
                "batch_size": self.batch_size, "load": asdict(self.load), "seed": self.seed}

    def item_key(self, index: int) -> Any:
        return self.items[index].to_dict()

    def compute(self, batches: list[list[int]]) -> tuple[list[Any], dict[str, Any]]:
        from frankenscope.probes.attention import attention_records

        loaded = {}
        for k, (name, path) in enumerate(self.models.items()):
            m = self.load(path)
            if k == 0:  # the layers were resolved from its config; attention_records compares the others to it
                _check_depth(path, m, self.depth)
            loaded[name] = (m.model, m.processor, m.adapter)
        items = [self.items[i] for i in sorted(i for b in batches for i in b)]
        per_model, settings = attention_records(loaded, items, layers=self.layers, max_new_tokens=self.max_new_tokens,
                                                batch_size=self.batch_size, system=self.style.system,
                                                progress=self.progress)
        return [{label: recs[k] for label, recs in per_model.items()} for k in range(len(items))], settings

    def finish(self, records: list[Any], settings: dict[str, Any], wall_s: float) -> tuple[Any, Path, Path | None]:
        from frankenscope.probes.attention import attention_result, write_attention
        from frankenscope.probes.plots import plot_attention

        per_model = {label: [r[label] for r in records] for label in self.models}
        result = attention_result(per_model, {**settings, "prompt_style": self.style.to_dict()}, self.seed, wall_s)
        path = write_attention(result, self.out, models={nm: {"source": p, "fingerprint": self.fingerprints[nm]}
                                                         for nm, p in self.models.items()},
                               data_source=self.source, seed=self.seed)
        return result, path, plot_attention(path, self.out) if self.plots else None

    def encode(self, record: Any) -> Any:
        return {label: asdict(r) for label, r in record.items()}

    def decode(self, value: Any) -> Any:
        from frankenscope.probes.attention import ItemAttention

        return {label: ItemAttention(**r) for label, r in value.items()}


def prepare_attention(models: dict[str, str], out: str | Path, *, dataset: str = "organism",
                      tasks: list[str] | None = None, n: int | None = None, data_root: str | None = None,
                      layers: str | None = None, max_new_tokens: int = 80, batch_size: int | str = 16,
                      system: str | None = None, seed: int = 0, dtype: str = "float32", device: str | None = None,
                      plots: bool = True, progress: bool = True, prompt_style: str | PromptStyle = "plain",
                      device_map: str | None = None, dataset_prompts: dict[str, str] | None = None) -> AttentionProbe:
    """`attention` prepared (see `run_attention` for the arguments); nothing is loaded yet (the organism's items
    are written to OUT/suite). The models load with eager attention (the probe needs the weights);
    batch_size "auto": the items whose responses fit in free GPU memory with every model loaded."""
    from frankenscope.evaluate.backends import AUTO, batch_for_free_memory, parse_batch_size

    out = Path(out)
    if not models:
        raise FrankenscopeError("no models given")
    batch = parse_batch_size(batch_size)
    _check_inputs(list(models.values()), n, layers)
    if batch == AUTO:
        batch = batch_for_free_memory(list(models.values()), rows_per_item=1, max_new_tokens=max_new_tokens,
                                      dtype=dtype, device=device, device_map=device_map, default=16)
    items, source = load_dataset_items(dataset, out, tasks=tasks, default_tasks=ATTENTION_TASKS, n=n, seed=seed,
                                       data_root=data_root, prompts=dataset_prompts)
    style = probe_style(prompt_style, system)
    depth = model_depth(next(iter(models.values())))
    return AttentionProbe(dict(models), out, _styled_items(items, style), source, style, depth,
                          layers_from_spec(layers, depth), max_new_tokens, int(batch),
                          _Load(dtype, device, device_map, "eager"), seed,
                          {nm: _fingerprint(p) for nm, p in models.items()}, plots, progress)


def run_attention(models: dict[str, str], out: str | Path, **kwargs: Any) -> tuple[Any, Path, Path | None]:
    """`attention` as a function; models: label -> path, e.g. {"IN": ..., "RL": ...} (differences are to the
    first). Returns (AttentionShift, path of attention.json, figure or None).

    Arguments: models, out, dataset (`load_dataset_items`), tasks, n (items per task), data_root, layers,
    max_new_tokens, batch_size (items per generation batch), system, seed, dtype, device, plots, progress,
    prompt_style, device_map, dataset_prompts (`prepare_attention`). Prompts are rendered through
    `prompt_style` (one style for all models, so their attention is compared on the same text)."""
    return run_probe(prepare_attention(models, out, **kwargs))
