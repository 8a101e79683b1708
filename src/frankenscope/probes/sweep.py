"""The two prompt-pass engines of the visual-token swap sweep (`probes/swap.py` says what a swap is).

Both return, for every requested swap layer plus the unswapped run, the first-step logits and a
batched prompt cache (`PromptVariants`) that `decode.greedy_decode` continues from:

* ``naive``: one full prompt pass per layer with `swap_projections` hooks on k_proj/v_proj. It is the
  oracle. (The vision tower runs once per image; the paper-style loop that also re-runs the vision
  tower and `generate` per layer lives in benchmarks/swap_sweep.py.)
* ``fast`` (docs/analyses.md, "Engines"): layers below l are identical to the clean target run, and positions before
  the swapped span are identical in every layer, so per pair it needs one source pass over
  [0, image end), one clean target pass that records every layer's input at the positions that can
  change, and then a single triangular walk over the layers in which the variant "swap from l" joins
  the batch at layer l with the recorded clean input. Only the text after the image (cumulative) or
  the image plus the text after it (single) is recomputed; the cache prefix of layer j is the source's
  post-RoPE K/V on [0, image end) (cumulative) or the target's on [0, image start) (single). The
  variants are then decoded together as one batch.

Both engines are exact: they compute the same function (tests compare them in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import create_causal_mask

from frankenscope.adapters import VLMAdapter
from frankenscope.errors import FrankenscopeError
from frankenscope.probes.decode import BufferLayer, cache_of, kv_buffers
from frankenscope.probes.hooks import (
    Span,
    capture_projections,
    record_layer_inputs,
    record_layer_outputs,
    swap_projections,
)

MODES = ("cumulative", "single")


@dataclass
class EncodedPair:
    """Processor outputs of target and source (batch 1, on the model's device) and the swap geometry: the
    engines' input, made (and checked) by `swap.encode_pair`."""

    pair_id: str
    target: dict[str, torch.Tensor]
    source: dict[str, torch.Tensor]
    span: Span
    prompt_len: int
    positions: torch.Tensor  # [3, 1, P] (M-RoPE) or [1, P]


def _prefill(model: nn.Module, adapter: VLMAdapter, enc: dict[str, torch.Tensor], positions: torch.Tensor,
             cache: DynamicCache, end: int | None = None) -> torch.Tensor:
    """One prompt pass over positions [0, end) filling `cache`; returns the last position's logits [B, vocab].

    The adapter says which inputs run along the sequence (cut at `end`)."""
    kwargs = {k: v for k, v in enc.items() if k != "attention_mask"}
    if end is not None:
        kwargs = adapter.truncate_inputs(kwargs, end)
    pos = positions[..., :end] if end is not None else positions
    out = model(**kwargs, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1]


def _layer_output(out: Any) -> torch.Tensor:
    """A decoder layer's hidden states, whether it returns a tensor or a tuple."""
    return out[0] if isinstance(out, tuple) else out


@dataclass
class PromptVariants:
    """The prompt-pass result of a sweep: first-step logits and a batched prompt cache, one row per variant.

    Rows are the swap layers in ascending order, then the unswapped ("clean") target as the last row.
    """

    layers: list[int]
    first_logits: torch.Tensor  # [len(layers) + 1, vocab]
    cache: DynamicCache
    next_position: torch.Tensor  # position ids of the first generated token: [3, 1, 1] or [1, 1]


def _swap_layers(layer: int, n_layers: int, mode: str) -> list[int]:
    """The layers whose image K/V a variant "swap at `layer`" replaces: from it on (cumulative) or only it."""
    return list(range(layer, n_layers)) if mode == "cumulative" else [layer]


def naive_prompt_variants(model: nn.Module, adapter: VLMAdapter, ep: EncodedPair, layers: Sequence[int],
                          mode: str = "cumulative", decode_tokens: int = 0) -> PromptVariants:
    """The oracle: one full hooked prompt pass of the whole model per swap layer (k_proj/v_proj outputs
    replaced at the image span), from the processor's inputs, so everything the family does around the
    decoder layers (vision features, deepstack additions, bidirectional image masks, M-RoPE) happens as in
    a plain forward pass. The vision tower therefore runs once per variant.

    Each pass writes its cache straight into its row of the decode buffers (room for decode_tokens more).
    """
    n_layers = adapter.num_layers(model)
    i0, i1 = ep.span
    layers = sorted(layers)
    total = ep.prompt_len
    with capture_projections(model, adapter, range(layers[0], n_layers), span=ep.span) as src_kv:
        _prefill(model, adapter, ep.source, ep.positions, DynamicCache(), end=i1)
    # The clean target pass goes first into a plain cache: its keys give the buffer shapes.
    clean_cache = DynamicCache()
    clean_logits = _prefill(model, adapter, ep.target, ep.positions, clean_cache)
    n_rows = len(layers) + 1
    bufs = kv_buffers(clean_cache, n_rows, total + decode_tokens)
    for (bk, bv), layer in zip(bufs, clean_cache.layers, strict=True):
        bk[-1:, :, :total], bv[-1:, :, :total] = layer.keys, layer.values
    logits = []
    for r, layer in enumerate(layers):
        cache = cache_of([BufferLayer(bk[r:r + 1], bv[r:r + 1]) for bk, bv in bufs])
        with swap_projections(model, adapter, src_kv, (i0, i1), _swap_layers(layer, n_layers, mode), total):
            logits.append(_prefill(model, adapter, ep.target, ep.positions, cache))
    logits.append(clean_logits)
    return PromptVariants(layers=list(layers), first_logits=torch.cat(logits),
                          cache=cache_of([BufferLayer(bk, bv, total) for bk, bv in bufs]),
                          next_position=ep.positions[..., -1:] + 1)


def _suffix_mask(model: nn.Module, like: torch.Tensor, start: int, total: int) -> Any:
    """Causal mask for queries at positions [start, total) over keys [0, total), in the format of the model's
    attention implementation. Built by transformers from a cache that already holds `start` positions,
    so the diagonal is offset correctly (passing None would make sdpa align `is_causal` top-left:
    silently wrong: the first pitfall of the fast sweep)."""
    text_cfg = model.config.get_text_config(decoder=True)
    probe = DynamicCache()
    stub = like.new_zeros(1, 1, start, 1)
    probe.layers.append(BufferLayer(stub, stub, start))
    return create_causal_mask(config=text_cfg, inputs_embeds=like[:1], attention_mask=None, cache=probe,
                              layer_idx=0, allow_is_causal_skip=False)


def _layer_kwargs(recorded: dict[str, Any], start: int, total: int) -> dict[str, Any]:
    """A decoder layer's recorded call kwargs for a call on positions [start, total): the rotary (cos, sin) and
    any per-position tensor (last dimension == total, e.g. 1-D position ids) are sliced; mask and cache are
    dropped (the caller passes its own)."""
    skip = {"hidden_states", "attention_mask", "cache", "past_key_values", "use_cache", "position_embeddings"}
    out: dict[str, Any] = {}
    for k, v in recorded.items():
        if k in skip:
            continue
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[-1] == total:
            v = v[..., start:]
        out[k] = v
    pe = recorded.get("position_embeddings")
    if pe is None:
        raise FrankenscopeError("the decoder layers are not called with position_embeddings; the fast swap engine "
                                "does not support this architecture (use engine='naive')")
    out["position_embeddings"] = tuple(t[:, start:] for t in pe)
    return out


def _layer_mask(recorded: dict[str, Any], start: int, total: int, causal: Any) -> Any:
    """The attention mask of a decoder layer for queries [start, total): the rows of the mask that layer received
    in the clean target pass (so sliding windows and bidirectional image blocks are kept exactly), or the
    offset causal mask `causal` when the layer got none (sdpa's implicit causal mask)."""
    mask = recorded.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        return mask[:, :, start:total, :total]
    if mask is None:
        return causal
    raise FrankenscopeError(f"the decoder layers get an attention mask of type {type(mask).__name__}; the fast swap "
                            "engine needs a 4-D tensor mask or none (use engine='naive' or sdpa/eager attention)")


def fast_prompt_variants(model: nn.Module, adapter: VLMAdapter, ep: EncodedPair, layers: Sequence[int],
                         mode: str = "cumulative", decode_tokens: int = 0) -> PromptVariants:
    """The fast exact sweep (module docstring): same result as `naive_prompt_variants`.

    The returned cache has room for decode_tokens more positions per row.
    """
    n_layers = adapter.num_layers(model)
    i0, i1 = ep.span
    total = ep.prompt_len
    start = i1 if mode == "cumulative" else i0
    layers = sorted(layers)
    first = layers[0]
    joining = set(layers)

    # 1. Source: one pass over [0, i1) (nothing after the image matters for its K/V).
    src_cache = DynamicCache()
    if mode == "single":
        with capture_projections(model, adapter, layers, span=ep.span) as src_kv:
            _prefill(model, adapter, ep.source, ep.positions, src_cache, end=i1)
    else:
        src_kv = {}
        _prefill(model, adapter, ep.source, ep.positions, src_cache, end=i1)
    # 2. Clean target: record each layer's input and output at [start, P) and its call kwargs (from layer
    #    `first` on). What the model adds between one layer's output and the next layer's input (Qwen3-VL's
    #    deepstack features; zero elsewhere) is added back after that layer in the walk.
    walked = range(first, n_layers)
    clean_cache = DynamicCache()
    with record_layer_inputs(model, adapter, walked, positions=slice(start, total), keep_kwargs=walked) as rec, \
            record_layer_outputs(model, adapter, walked, positions=slice(start, total)) as out_rec:
        clean_logits = _prefill(model, adapter, ep.target, ep.positions, clean_cache)
    between = {j: rec.hidden[j + 1] - out_rec[j] for j in range(first, n_layers - 1)}
    between = {j: d for j, d in between.items() if bool(d.ne(0).any())}
    causal = _suffix_mask(model, rec.hidden[first], start, total)
    masks = {j: _layer_mask(rec.kwargs[j], start, total, causal) for j in walked}
    kwargs = {j: _layer_kwargs(rec.kwargs[j], start, total) for j in walked}

    # 3. Decode buffers, row l = "swap from layers[l]", last row = unswapped. In layer j the rows of the
    #    variants that joined at or before j come first; the others hold the clean target's K/V.
    n_rows = len(layers) + 1
    bufs = kv_buffers(clean_cache, n_rows, total + decode_tokens)
    joined = 0
    for j, (bk, bv) in enumerate(bufs):
        ck, cv = clean_cache.layers[j].keys, clean_cache.layers[j].values
        joined += j in joining
        bk[joined:, :, :total], bv[joined:, :, :total] = ck, cv
        if joined:
            if mode == "cumulative":
                pk, pv = src_cache.layers[j].keys, src_cache.layers[j].values
            else:
                pk, pv = ck[:, :, :i0], cv[:, :, :i0]
            bk[:joined, :, :start], bv[:joined, :, :start] = pk, pv
    del src_cache, clean_cache

    # 4. Triangular walk: variant l joins at layer l with the recorded clean input; each row recomputes only
    #    positions [start, P), writing its K/V into its rows of the decode buffers.
    decoder = adapter.decoder_layers(model)
    work = cache_of([DynamicLayer() for _ in range(n_layers)])
    h: torch.Tensor | None = None
    for j in range(first, n_layers):
        if j in joining:
            h = rec.hidden[j] if h is None else torch.cat([h, rec.hidden[j].to(h.device)])
        assert h is not None
        rows = h.shape[0]
        work.layers[j] = BufferLayer(bufs[j][0][:rows], bufs[j][1][:rows], start)
        if mode == "single" and j in joining:
            # Only the row that joined here swaps in this layer; its image span starts the recomputed block.
            with swap_projections(model, adapter, src_kv, (0, i1 - i0), [j], total - start, rows={j: [rows - 1]}):
                h = _layer_output(decoder[j](h, attention_mask=masks[j], cache=work, use_cache=True, **kwargs[j]))
        else:
            h = _layer_output(decoder[j](h, attention_mask=masks[j], cache=work, use_cache=True, **kwargs[j]))
        if j in between:
            h = h + between[j].to(h.device)
        work.layers[j] = DynamicLayer()
    assert h is not None
    logits = adapter.lm_head(model)(adapter.final_norm(model)(h[:, -1:]))[:, -1]
    return PromptVariants(layers=list(layers), first_logits=torch.cat([logits.to(clean_logits.dtype), clean_logits]),
                          cache=cache_of([BufferLayer(bk, bv, total) for bk, bv in bufs]),
                          next_position=ep.positions[..., -1:] + 1)
