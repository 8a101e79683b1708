"""Layer skipping (reasoning localization, paper §3.1, Fig. 4b).

Skipping decoder layer k means the layer returns its input: h_{k+1} = h_k (attention and MLP removed,
residual kept), at every position and every decoding step. Err(k) = 1 - Acc(model with layer k
skipped); the importance of layer k is Err(k) - Err(none), reported with a paired bootstrap CI.

All ablations of an item run in one batch: row 0 is the unablated baseline and row 1 + i skips
`layers[i]` (a per-row gate on each layer's forward hook, `hooks.skip_layers`), so one `generate`
call decodes them together; several items can share a batch (left padding).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from frankenscope.adapters import VLMAdapter
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.extract import grade
from frankenscope.evaluate.metrics import paired_difference, proportion_summary
from frankenscope.generation import left_padding, load_image, model_device, pad_token_id
from frankenscope.layers import check_layers
from frankenscope.probes.hooks import skip_layers
from frankenscope.probes.results import localization_payload, write_probe_result

REASONING_SCHEMA_VERSION = 1


def row_gates(n_items: int, layers: Sequence[int], device: torch.device | None = None) -> dict[int, torch.Tensor]:
    """Per-layer row gates for a batch of n_items x (1 + len(layers)) rows, item-major: row
    item * (1 + len(layers)) + 1 + i skips layers[i]; row item * (1 + len(layers)) is the baseline."""
    width = 1 + len(layers)
    gates = {}
    for i, layer in enumerate(layers):
        g = torch.zeros(n_items * width, dtype=torch.bool, device=device)
        g[1 + i::width] = True
        gates[layer] = g
    return gates


def skip_generate(model: nn.Module, processor: Any, adapter: VLMAdapter, items: Sequence[Item],
                  layers: Sequence[int], *, images: Sequence[Image.Image | None] | None = None,
                  max_new_tokens: int = 80, system: str | None = None) -> list[list[str]]:
    """Greedy responses of one batch of items under every single-layer skip.

    Returns, per item, [baseline response, response with layers[0] skipped, ...]. All items must either
    all have an image or all be text-only. `images` optionally gives the images in memory.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    width = 1 + len(layers)
    imgs = list(images) if images is not None else [None if it.image is None else load_image(it.image)
                                                    for it in items]
    has_image = {im is not None for im in imgs}
    if len(has_image) != 1:
        raise FrankenscopeError("skip_generate: a batch must be all image items or all text-only items")
    n_img = 1 if has_image == {True} else 0
    prompts = [adapter.build_prompt(processor, it.prompt, n_img, system) for it in items for _ in range(width)]
    kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
    if n_img:
        kwargs["images"] = adapter.processor_images([im for im in imgs for _ in range(width)])
    with left_padding(tokenizer):
        enc = processor(**kwargs)
    device = model_device(model)
    enc = {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
    gen = {"do_sample": False, "max_new_tokens": max_new_tokens, "repetition_penalty": 1.0,
           "pad_token_id": pad_token_id(model, tokenizer)}
    with torch.inference_mode(), skip_layers(model, adapter, row_gates(len(items), layers, device)):
        out = model.generate(**enc, **gen)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [texts[i * width:(i + 1) * width] for i in range(len(items))]


@dataclass
class SkipRecord:
    id: str
    task: str
    answer: str
    answer_type: str
    baseline: str
    baseline_correct: bool
    responses: list[str]
    correct: list[bool]


@dataclass
class ReasoningLocalization:
    layers: list[int]
    settings: dict[str, Any]
    tasks: dict[str, Any]
    records: list[SkipRecord]
    wall_s: float


def summarize_skip(records: Sequence[SkipRecord], layers: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """Per task (and "all"): baseline error and, per layer, the error with that layer skipped and its
    increase over the baseline, paired over items: mean of err_skip - err_base with its Newcombe interval and
    exact McNemar p (`metrics.paired_difference`), and the discordant counts n_broken (right -> wrong when
    skipped) and n_fixed (wrong -> right)."""
    groups: dict[str, list[SkipRecord]] = {}
    for r in records:
        groups.setdefault(r.task, []).append(r)
    if len(groups) > 1:
        groups["all"] = list(records)
    out: dict[str, Any] = {}
    for task, rs in groups.items():
        base_err = [not r.baseline_correct for r in rs]
        per_layer = []
        for i, layer in enumerate(layers):
            err = [not r.correct[i] for r in rs]
            d = paired_difference(base_err, err, seed=seed)
            per_layer.append({"layer": layer, "error": proportion_summary(err, value_key="rate"),
                              "increase": {"diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                                           "p": d.get("p"), "n_broken": d.get("n_b_only"),
                                           "n_fixed": d.get("n_a_only")}})
        out[task] = {"n_items": len(rs), "baseline_error": proportion_summary(base_err, value_key="rate"), "per_layer": per_layer}
    return out


def default_batch_items(n_skipped: int) -> int:
    """Items per generate call when none is given: a batch near 32 rows of 1 + `n_skipped` rows per item."""
    return max(1, 32 // (1 + n_skipped))


def skip_batches(items: Sequence[Item], batch_items: int) -> list[list[int]]:
    """The generate calls of a run over `items`, as item indices in run order: the items with an image first,
    then the text-only ones (a batch must be one or the other), each in item order, `batch_items` per batch."""
    batches: list[list[int]] = []
    for group in ([i for i, it in enumerate(items) if it.image is not None],
                  [i for i, it in enumerate(items) if it.image is None]):
        batches += [group[s:s + batch_items] for s in range(0, len(group), batch_items)]
    return batches


def localize_reasoning(model: nn.Module, processor: Any, adapter: VLMAdapter, items: Sequence[Item], *,
                       layers: Sequence[int] | None = None, max_new_tokens: int = 80, batch_items: int | None = None,
                       system: str | None = None, seed: int = 0, progress: bool = True) -> ReasoningLocalization:
    """Error rate per skipped layer (Fig. 4b) over `items`, graded with `evaluate.extract.grade`:
    `reasoning_records` over every item, then `summarize_skip`.

    batch_items: items per generate call (each contributes 1 + len(layers) rows); default keeps a batch
    near 32 rows. `seed` only seeds the bootstrap CIs.
    """
    t0 = time.time()
    records, settings = reasoning_records(model, processor, adapter, items, layers=layers,
                                          max_new_tokens=max_new_tokens, batch_items=batch_items, system=system,
                                          progress=progress)
    return reasoning_result(records, settings, seed, round(time.time() - t0, 3))


def reasoning_records(model: nn.Module, processor: Any, adapter: VLMAdapter, items: Sequence[Item], *,
                      layers: Sequence[int] | None = None, max_new_tokens: int = 80, batch_items: int | None = None,
                      batches: Sequence[Sequence[int]] | None = None, system: str | None = None,
                      progress: bool = True) -> tuple[list[SkipRecord], dict[str, Any]]:
    """(records, the run's settings) of layer skipping on `items`.

    batches: the generate calls to make, as indices into `items` (default: `skip_batches` of every item with
    `batch_items` per batch). Records come back for the items in `batches`, in item order; a run given some of
    the default batches decodes exactly those batches, so its records are the full run's for those items.
    """
    if not items:
        raise FrankenscopeError("no items to run")
    n_layers = adapter.num_layers(model)
    layer_list = check_layers(layers, n_layers, "skip")
    per_batch = batch_items or default_batch_items(len(layer_list))
    planned = [list(b) for b in batches] if batches is not None else skip_batches(items, per_batch)
    responses: dict[int, list[str]] = {}
    for batch in tqdm(planned, desc="layer skip", unit="batch", disable=not progress):
        outs = skip_generate(model, processor, adapter, [items[i] for i in batch], layer_list,
                             max_new_tokens=max_new_tokens, system=system)
        responses.update(zip(batch, outs, strict=True))
    records = []
    for i in sorted(responses):
        it = items[i]
        base, *rest = responses[i]
        records.append(SkipRecord(id=it.id, task=it.task, answer=it.answer, answer_type=it.answer_type,
                                  baseline=base, baseline_correct=grade(base, it), responses=rest,
                                  correct=[grade(r, it) for r in rest]))
    settings = {"layers": layer_list, "n_layers": n_layers, "max_new_tokens": max_new_tokens,
                "batch_items": per_batch, "system": system, "skip": "decoder layer returns its input",
                "decoding": "greedy, repetition_penalty 1.0",
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    return records, settings


def reasoning_result(records: Sequence[SkipRecord], settings: dict[str, Any], seed: int, wall_s: float
                     ) -> ReasoningLocalization:
    """The localization of `records` (every item, in item order) run with `settings` (`reasoning_records`)."""
    layers = list(settings["layers"])
    return ReasoningLocalization(layers=layers, settings=settings, tasks=summarize_skip(records, layers, seed),
                                 records=list(records), wall_s=wall_s)


def write_localize_reasoning(result: ReasoningLocalization, out_dir: str | Path, *, model_source: str,
                             model_fingerprint: str | None, data_source: str, seed: int | None) -> Path:
    """Write `out_dir/localize_reasoning.json` (kind "localize_reasoning", schema_version 1); see the README."""
    sources = {"model_source": model_source, "model_fingerprint": model_fingerprint, "data_source": data_source}
    return write_probe_result(out_dir, "localize_reasoning", REASONING_SCHEMA_VERSION, localization_payload(result),
                              sources=sources, ids=[r.id for r in result.records], unit="item", seed=seed)
