"""Attention from reasoning tokens to the image (paper §2.2, Fig. 3, Eq. 1).

For each item the model first answers greedily; then one teacher-forced pass over prompt + its own
response (eager attention) measures, per decoder layer l,

    mass(l)     = 1/(|H| |R|) * sum_h sum_{i in R} sum_{j in V} A^(l,h)_{ij}
    per_token(l) = mass(l) / |V|                     (Eq. 1 as printed)

where R are the positions of the generated response tokens (up to, not including, the first EOS),
V the image-token positions (the adapter's `image_token_mask`: the tokens that carry image features;
start/end/row markers are text) and A^(l,h) the softmax attention of head h. The paper's Fig. 3 scale
(0.02-0.10) fits the mass, which is what the plot shows; both are recorded. The weights are reduced
inside a forward hook on each attention module, so at most one layer's weights are alive at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from frankenscope.adapters import VLMAdapter
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.metrics import bootstrap_ci, paired_difference
from frankenscope.generation import left_padding, load_image, model_device, pad_token_id, rgb_image
from frankenscope.layers import check_layers
from frankenscope.probes.decode import eos_token_ids
from frankenscope.probes.hooks import capture_attention
from frankenscope.probes.results import write_probe_result

ATTENTION_SCHEMA_VERSION = 1


@dataclass
class ItemAttention:
    """One item's per-layer attention from its response tokens to its image tokens."""

    id: str
    task: str
    response: str
    n_response_tokens: int
    n_image_tokens: int
    mass: list[float]
    per_token: list[float]


def generate_ids(model: nn.Module, processor: Any, adapter: VLMAdapter, items: Sequence[Item],
                 images: Sequence[Image.Image], *, max_new_tokens: int = 80, batch_size: int = 16,
                 system: str | None = None) -> list[list[int]]:
    """Greedy response ids per item (left-padded batches), cut before the first EOS or image token.

    A response that emits an image token (or an image start/end marker) is cut there: teacher-forcing it
    would ask the model for image features that no image supplies."""
    tokenizer = getattr(processor, "tokenizer", processor)
    image_ids = {adapter.image_token_id(model), *adapter.image_marker_ids(model)} - {None}
    eos = set(eos_token_ids(model, tokenizer)) | image_ids
    device = model_device(model)
    out: list[list[int]] = []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        prompts = [adapter.build_prompt(processor, it.prompt, 1, system) for it in chunk]
        with left_padding(tokenizer):
            enc = processor(text=prompts, images=adapter.processor_images(list(images[s:s + batch_size])),
                            return_tensors="pt", padding=True)
        enc = {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
        with torch.inference_mode():
            gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                                 pad_token_id=pad_token_id(model, tokenizer))
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            ids = []
            for t in row:
                if t in eos:
                    break
                ids.append(t)
            out.append(ids)
    return out


def response_attention(model: nn.Module, processor: Any, adapter: VLMAdapter, prompt_text: str,
                       image: Image.Image, response_ids: Sequence[int], layers: Sequence[int],
                       system: str | None = None) -> tuple[list[float], list[float], int]:
    """(mass per layer, per-token mean per layer, |V|) for one teacher-forced prompt + response pass."""
    device = model_device(model)
    prompt = adapter.build_prompt(processor, prompt_text, 1, system)
    enc = processor(text=[prompt], images=[rgb_image(image, "attention item")], return_tensors="pt")
    enc = {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
    n_prompt = enc["input_ids"].shape[1]
    resp = torch.tensor([list(response_ids)], dtype=enc["input_ids"].dtype, device=device)
    full = adapter.append_text_tokens({k: v for k, v in enc.items() if k != "attention_mask"}, resp)
    positions = adapter.position_ids(model, full)
    img = adapter.image_token_mask(model, full["input_ids"])[0]  # V: the image tokens (markers are text)
    img[n_prompt:] = False
    n_img = int(img.sum())
    if not n_img:
        raise FrankenscopeError(f"the {adapter.spec.name} prompt has no image tokens")
    mass: dict[int, float] = {}

    def reduce(layer: int, weights: torch.Tensor) -> None:
        rows = weights[0, :, n_prompt:, :].float()  # [heads, |R|, T]
        mass[layer] = float(rows[..., img].sum(-1).mean())

    with torch.inference_mode(), capture_attention(model, adapter, layers, reduce):
        model(**full, position_ids=positions, use_cache=False, logits_to_keep=1)
    m = [mass[j] for j in layers]
    return m, [x / n_img for x in m], n_img


def attention_profile(model: nn.Module, processor: Any, adapter: VLMAdapter, items: Sequence[Item], *,
                      layers: Sequence[int] | None = None, max_new_tokens: int = 80, batch_size: int = 16,
                      system: str | None = None, progress: bool = True) -> list[ItemAttention]:
    """Per item and layer: response-to-image attention mass and per-token mean (module docstring).

    Items need an image; an item whose response is empty gets NaN values (no reasoning tokens).
    """
    imaged = [it for it in items if it.image is not None]
    if not imaged:
        raise FrankenscopeError("attention needs items with images; none of the given items has one")
    layer_list = check_layers(layers, adapter.num_layers(model), "attention")
    tokenizer = getattr(processor, "tokenizer", processor)
    images = [load_image(it.image) for it in imaged]  # type: ignore[arg-type]
    ids = generate_ids(model, processor, adapter, imaged, images, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, system=system)
    out = []
    for it, img, resp in tqdm(list(zip(imaged, images, ids, strict=True)), desc="attention", unit="item",
                              disable=not progress):
        text = tokenizer.decode(resp, skip_special_tokens=True)
        if not resp:
            nan = [math.nan] * len(layer_list)
            out.append(ItemAttention(it.id, it.task, text, 0, 0, nan, nan))
            continue
        m, pt, n_img = response_attention(model, processor, adapter, it.prompt, img, resp, layer_list, system)
        out.append(ItemAttention(it.id, it.task, text, len(resp), n_img, m, pt))
    return out


def _mean_ci(values: Sequence[float], seed: int) -> dict[str, float]:
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    lo, hi = bootstrap_ci(x, seed=seed, bounds=(0.0, 1.0))  # attention mass and per-token mean lie in [0, 1]
    return {"n": int(x.size), "mean": float(x.mean()) if x.size else math.nan, "ci_low": lo, "ci_high": hi}


def summarize_attention(per_model: dict[str, list[ItemAttention]], layers: Sequence[int],
                        seed: int = 0) -> dict[str, Any]:
    """Per model and layer: mean mass and per-token mean with 95% bootstrap CIs over items; and, for
    every model after the first, its paired difference to the first (same items, each model with its
    own response; items without a response in either model are left out)."""
    labels = list(per_model)
    models = {}
    for label, recs in per_model.items():
        models[label] = {"n_items": len(recs), "per_layer": [
            {"layer": layer, "mass": _mean_ci([r.mass[i] for r in recs], seed),
             "per_token": _mean_ci([r.per_token[i] for r in recs], seed)} for i, layer in enumerate(layers)]}
    differences = {}
    base = {r.id: r for r in per_model[labels[0]]}
    for label in labels[1:]:
        pairs = [(base[r.id], r) for r in per_model[label] if r.id in base
                 and r.n_response_tokens > 0 and base[r.id].n_response_tokens > 0]
        rows = []
        for i, layer in enumerate(layers):
            row: dict[str, Any] = {"layer": layer}
            for key in ("mass", "per_token"):
                d = paired_difference([getattr(a, key)[i] for a, _ in pairs], [getattr(b, key)[i] for _, b in pairs],
                                      seed=seed)
                row[key] = {"diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]}
            rows.append(row)
        differences[f"{label} - {labels[0]}"] = {"n_items": len(pairs), "per_layer": rows}
    return {"models": models, "differences": differences}


@dataclass
class AttentionShift:
    layers: list[int]
    settings: dict[str, Any]
    summary: dict[str, Any]
    records: dict[str, list[ItemAttention]]
    wall_s: float

    def payload(self) -> dict[str, Any]:
        return {"settings": self.settings, "layers": self.layers, **self.summary,
                "records": {k: [asdict(r) for r in v] for k, v in self.records.items()}, "wall_s": self.wall_s}


def attention_batches(items: Sequence[Item], batch_size: int) -> list[list[int]]:
    """The generation batches of a run over `items`, as item indices: the items with an image (the others are
    not measured) in item order, `batch_size` per batch (`generate_ids`'s chunks). FrankenscopeError when no
    item has an image."""
    imaged = [i for i, it in enumerate(items) if it.image is not None]
    if not imaged:
        raise FrankenscopeError("attention needs items with images; none of the given items has one")
    return [imaged[s:s + batch_size] for s in range(0, len(imaged), batch_size)]


def attention_shift(loaded: dict[str, tuple[nn.Module, Any, VLMAdapter]], items: Sequence[Item], *,
                    layers: Sequence[int] | None = None, max_new_tokens: int = 80, batch_size: int = 16,
                    system: str | None = None, seed: int = 0, progress: bool = True) -> AttentionShift:
    """Fig. 3 for several models (label -> (model, processor, adapter)), e.g. {"IN": ..., "RL": ...}:
    `attention_records` over every item, then `summarize_attention`."""
    t0 = time.time()
    per_model, settings = attention_records(loaded, items, layers=layers, max_new_tokens=max_new_tokens,
                                            batch_size=batch_size, system=system, progress=progress)
    return attention_result(per_model, settings, seed, round(time.time() - t0, 3))


def attention_records(loaded: dict[str, tuple[nn.Module, Any, VLMAdapter]], items: Sequence[Item], *,
                      layers: Sequence[int] | None = None, max_new_tokens: int = 80, batch_size: int = 16,
                      system: str | None = None, progress: bool = True
                      ) -> tuple[dict[str, list[ItemAttention]], dict[str, Any]]:
    """(label -> one record per item with an image, in item order; the run's settings). Responses are generated
    in chunks of `batch_size` from the first item with an image, so a run over whole consecutive chunks of a
    longer item list (`attention_batches`) decodes exactly the longer run's batches for those items."""
    if len(loaded) < 1:
        raise FrankenscopeError("attention_shift needs at least one model")
    n_layers = {label: a.num_layers(m) for label, (m, _, a) in loaded.items()}
    if len(set(n_layers.values())) != 1:
        raise FrankenscopeError(f"the models have different numbers of decoder layers: {n_layers}")
    n = next(iter(n_layers.values()))
    layer_list = check_layers(layers, n, "attention")
    per_model = {label: attention_profile(m, p, a, items, layers=layer_list, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, system=system, progress=progress)
                 for label, (m, p, a) in loaded.items()}
    settings = {"layers": layer_list, "n_layers": n, "max_new_tokens": max_new_tokens, "system": system,
                "reasoning_tokens": "the model's own greedy response tokens, EOS excluded",
                "mass": "sum over image tokens, mean over heads and response tokens (plotted)",
                "per_token": "mass / number of image tokens (Eq. 1 as printed)",
                "pass": "one teacher-forced pass over prompt + response, eager attention"}
    return per_model, settings


def attention_result(per_model: dict[str, list[ItemAttention]], settings: dict[str, Any], seed: int,
                     wall_s: float) -> AttentionShift:
    """The attention shift of `per_model` (every measured item, in item order) run with `settings`."""
    layers = list(settings["layers"])
    return AttentionShift(layers=layers, settings=settings, summary=summarize_attention(per_model, layers, seed),
                          records=per_model, wall_s=wall_s)


def write_attention(result: AttentionShift, out_dir: str | Path, *, models: dict[str, dict[str, Any]],
                    data_source: str, seed: int | None) -> Path:
    """Write `out_dir/attention.json` (kind "attention", schema_version 1); models: label -> {source, fingerprint}."""
    ids = [r.id for r in next(iter(result.records.values()))]
    return write_probe_result(out_dir, "attention", ATTENTION_SCHEMA_VERSION, result.payload(),
                              sources={"models": models, "data_source": data_source}, ids=ids, unit="item", seed=seed)
