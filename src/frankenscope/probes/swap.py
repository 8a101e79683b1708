"""Visual-token swapping (paper §3.1, Fig. 4a, Eq. 2): a fast exact layer sweep and the naive oracle.

A probe pair is one prompt with two same-size images: the target T and the source S. "Swap at layer l"
means that, during the prompt (prefill) pass only, the keys and values at the image-token positions
come from the run on S instead of T:

* ``mode="cumulative"`` (the reference code's semantics): in every decoder layer >= l;
* ``mode="single"``: in layer l only (later layers see the target's own image keys/values, recomputed
  from hidden states that layer l's swapped attention has changed).

Decoding then continues from that prompt cache; the swap is never re-applied at decode steps (the
reference code re-appends source K/V at every step).

Engines (both return, for every requested layer plus the unswapped run, the same greedy decode):

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

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import create_causal_mask

from frankenscope.adapters import VLMAdapter
from frankenscope.data.io import first_n_per_task, load_probe_pairs
from frankenscope.data.schema import Item, ProbePair
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.extract import (
    IOU_THRESHOLD,
    Box,
    extract_answer,
    grade,
    iou,
    normalize_text,
    parse_box,
)
from frankenscope.evaluate.metrics import wilson_interval
from frankenscope.generation import load_image, model_device
from frankenscope.io import sha256_text, write_result
from frankenscope.probes.hooks import (
    Span,
    capture_projections,
    record_layer_inputs,
    swap_projections,
)

MODES = ("cumulative", "single")
ENGINES = ("fast", "naive")
CHANGE_RULES = ("exact", "reference")
VISION_SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- inputs


@dataclass
class ProbeInput:
    """A probe pair plus, optionally, its images in memory (otherwise they are read from the pair's paths)."""

    pair: ProbePair
    target_image: Image.Image | None = None
    source_image: Image.Image | None = None

    def images(self) -> tuple[Image.Image, Image.Image]:
        t = self.target_image if self.target_image is not None else load_image(self.pair.target_image)
        s = self.source_image if self.source_image is not None else load_image(self.pair.source_image)
        return t, s


def file_probe_inputs(path: str, tasks: Sequence[str] | None = None, n: int | None = None) -> list[ProbeInput]:
    """Pairs from a jsonl file or folder in the paper's format (`data.io.load_probe_pairs`), optionally the
    first n of each task (the reference uses the first 50 rows)."""
    pairs = load_probe_pairs(path)
    if tasks:
        missing = sorted(set(tasks) - {p.task for p in pairs})
        if missing:
            raise FrankenscopeError(f"{path}: no probe pairs of task(s) {missing}")
        pairs = [p for p in pairs if p.task in set(tasks)]
    return [ProbeInput(p) for p in first_n_per_task(pairs, n)]


@dataclass
class EncodedPair:
    """Processor outputs of target and source (batch 1, on the model's device) and the swap geometry."""

    pair_id: str
    target: dict[str, torch.Tensor]
    source: dict[str, torch.Tensor]
    span: Span
    prompt_len: int
    positions: torch.Tensor  # [3, 1, P] (M-RoPE) or [1, P]


def _encode(processor: Any, prompt: str, image: Image.Image, device: torch.device) -> dict[str, torch.Tensor]:
    enc = processor(text=[prompt], images=[image], return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}


def encode_pair(model: nn.Module, processor: Any, adapter: VLMAdapter, pair: ProbePair,
                target_image: Image.Image, source_image: Image.Image, *, resize_source: bool = False,
                system: str | None = None) -> EncodedPair:
    """Encode target and source with the same prompt and check that a swap is well defined.

    The prompt must contain exactly one image span, and both images must give the same image-token
    grid (hence identical token ids and M-RoPE positions). Otherwise FrankenscopeError names the pair,
    unless resize_source is set: then the source image is resized (bicubic) to the target's pixel size
    before encoding. Pixels are never interpolated in token space (the reference's broken path).
    """
    device = model_device(model)
    prompt = adapter.build_prompt(processor, pair.prompt, 1, system)
    if resize_source and source_image.size != target_image.size:
        source_image = source_image.resize(target_image.size, Image.Resampling.BICUBIC)
    enc_t = _encode(processor, prompt, target_image, device)
    enc_s = _encode(processor, prompt, source_image, device)
    image_id = adapter.image_token_id(model)
    spans_t = adapter.image_spans(enc_t["input_ids"], image_id)[0]
    spans_s = adapter.image_spans(enc_s["input_ids"], image_id)[0]
    if len(spans_t) != 1:
        raise FrankenscopeError(f"probe pair {pair.id!r}: the prompt has {len(spans_t)} image spans; a swap needs "
                                "exactly one image")
    n_t = spans_t[0][1] - spans_t[0][0]
    n_s = sum(e - s for s, e in spans_s)
    if n_t != n_s or not adapter.same_image_layout(enc_t, enc_s) or spans_t != spans_s:
        gt, gs = _layout_note(adapter, enc_t), _layout_note(adapter, enc_s)
        hint = ("" if resize_source else "; pass --resize-source (resize_source=True) to resize the source image "
                "to the target's size before encoding")
        raise FrankenscopeError(
            f"probe pair {pair.id!r}: the target image ({target_image.width}x{target_image.height}) gives {n_t} image "
            f"tokens{gt} but the source image ({source_image.width}x{source_image.height}) gives {n_s}{gs}; a "
            f"visual-token swap needs the same token grid{hint}")
    if not torch.equal(enc_t["input_ids"], enc_s["input_ids"]):
        raise FrankenscopeError(f"probe pair {pair.id!r}: target and source prompts tokenize differently")
    return EncodedPair(pair_id=pair.id, target=enc_t, source=enc_s, span=spans_t[0],
                       prompt_len=int(enc_t["input_ids"].shape[1]), positions=adapter.position_ids(model, enc_t))


def _layout_note(adapter: VLMAdapter, enc: dict[str, torch.Tensor]) -> str:
    """' (grid 1x4x4)': the image layout values of one encoding (its first image), for error messages."""
    vals = ["x".join(map(str, enc[k][0].tolist())) for k in adapter.image_layout_keys if enc.get(k) is not None]
    return f" (grid {', '.join(vals)})" if vals else ""


# --------------------------------------------------------------------------- prompt passes


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


class BufferLayer(DynamicLayer):
    """A cache layer over preallocated [batch, kv_heads, capacity, head_dim] key/value buffers.

    `update` writes the new positions in place (a DynamicLayer concatenates, copying the whole cache
    at every decoding step) and exposes views of the filled part as `keys` / `values`. The buffers may
    be row slices of larger buffers, so a prompt pass can write straight into the decode cache.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int = 0) -> None:
        super().__init__()
        self._k, self._v, self._len = keys, values, length
        self.is_initialized = True
        self.device = keys.device
        self._sync()

    def _sync(self) -> None:
        self.keys, self.values = self._k[:, :, :self._len], self._v[:, :, :self._len]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        if self._len + n > self._k.shape[2]:
            raise FrankenscopeError(f"cache buffer of {self._k.shape[2]} positions is full")
        self._k[:, :, self._len:self._len + n] = key_states
        self._v[:, :, self._len:self._len + n] = value_states
        self._len += n
        self._sync()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._len

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._sync()


def _buffers(cache: DynamicCache, rows: int, capacity: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Empty per-layer K/V buffers [rows, kv_heads, capacity, head_dim] with the dtype and device of each
    layer's keys in `cache` (layers may sit on different devices under a device_map)."""
    out = []
    for layer in cache.layers:
        k, v = layer.keys, layer.values
        out.append((k.new_empty((rows, k.shape[1], capacity, k.shape[3])),
                    v.new_empty((rows, v.shape[1], capacity, v.shape[3]))))
    return out


def _cache_of(layers: Sequence[BufferLayer | DynamicLayer]) -> DynamicCache:
    cache = DynamicCache()
    cache.layers.extend(layers)
    return cache


def _layer_output(out: Any) -> torch.Tensor:
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
    return list(range(layer, n_layers)) if mode == "cumulative" else [layer]


def naive_prompt_variants(model: nn.Module, adapter: VLMAdapter, ep: EncodedPair, layers: Sequence[int],
                          mode: str = "cumulative", decode_tokens: int = 0) -> PromptVariants:
    """The oracle: one full hooked prompt pass per swap layer (k_proj/v_proj outputs replaced at the image span).

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
    with record_layer_inputs(model, adapter, [0]) as rec:
        clean_logits = _prefill(model, adapter, ep.target, ep.positions, clean_cache)
    n_rows = len(layers) + 1
    bufs = _buffers(clean_cache, n_rows, total + decode_tokens)
    for (bk, bv), layer in zip(bufs, clean_cache.layers, strict=True):
        bk[-1:, :, :total], bv[-1:, :, :total] = layer.keys, layer.values
    embeds = rec.hidden[0]
    logits = []
    for r, layer in enumerate(layers):
        cache = _cache_of([BufferLayer(bk[r:r + 1], bv[r:r + 1]) for bk, bv in bufs])
        with swap_projections(model, adapter, src_kv, (i0, i1), _swap_layers(layer, n_layers, mode), total):
            out = model(inputs_embeds=embeds, position_ids=ep.positions, cache=cache, use_cache=True, logits_to_keep=1)
        logits.append(out.logits[:, -1])
    logits.append(clean_logits)
    return PromptVariants(layers=list(layers), first_logits=torch.cat(logits),
                          cache=_cache_of([BufferLayer(bk, bv, total) for bk, bv in bufs]),
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
    # 2. Clean target: record each swap layer's input at [start, P) and layer `first`'s call kwargs.
    clean_cache = DynamicCache()
    with record_layer_inputs(model, adapter, layers, positions=slice(start, total), keep_kwargs=[first]) as rec:
        clean_logits = _prefill(model, adapter, ep.target, ep.positions, clean_cache)
    kwargs = _layer_kwargs(rec.kwargs[first], start, total)
    mask = _suffix_mask(model, rec.hidden[first], start, total)

    # 3. Decode buffers, row l = "swap from layers[l]", last row = unswapped. In layer j the rows of the
    #    variants that joined at or before j come first; the others hold the clean target's K/V.
    n_rows = len(layers) + 1
    bufs = _buffers(clean_cache, n_rows, total + decode_tokens)
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
    work = _cache_of([DynamicLayer() for _ in range(n_layers)])
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
                h = _layer_output(decoder[j](h, attention_mask=mask, cache=work, use_cache=True, **kwargs))
        else:
            h = _layer_output(decoder[j](h, attention_mask=mask, cache=work, use_cache=True, **kwargs))
        work.layers[j] = DynamicLayer()
    assert h is not None
    logits = adapter.lm_head(model)(adapter.final_norm(model)(h[:, -1:]))[:, -1]
    return PromptVariants(layers=list(layers), first_logits=torch.cat([logits.to(clean_logits.dtype), clean_logits]),
                          cache=_cache_of([BufferLayer(bk, bv, total) for bk, bv in bufs]),
                          next_position=ep.positions[..., -1:] + 1)


# --------------------------------------------------------------------------- decoding


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """End-of-sequence ids: the generation config's, else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return []
    return [int(x) for x in (eos if isinstance(eos, (list, tuple)) else [eos])]


def greedy_decode(model: nn.Module, cache: DynamicCache, first_logits: torch.Tensor, next_position: torch.Tensor,
                  max_new_tokens: int, eos_ids: Sequence[int]) -> list[list[int]]:
    """Greedy decoding of a batch of prompt caches (all of the same length, no padding).

    Returns the generated ids per row, each ending at its first EOS (included) or after
    max_new_tokens. Rows that finished are dropped from the batch (and the cache) as they finish.
    Position ids of step t are next_position + t (for M-RoPE the text positions after the prompt
    advance together in all three rows).
    """
    n = first_logits.shape[0]
    tokens: list[list[int]] = [[] for _ in range(n)]
    active = torch.arange(n)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=first_logits.device)
    logits = first_logits
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)
        for row, tok in zip(active.tolist(), nxt.tolist(), strict=True):
            tokens[row].append(tok)
        done = torch.isin(nxt, eos) if eos.numel() else torch.zeros_like(nxt, dtype=torch.bool)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            cache.batch_select_indices(keep)
            active, nxt = active[keep.cpu()], nxt[keep]
        rows = nxt.shape[0]
        pos = next_position + step
        pos = pos.expand(*pos.shape[:-2], rows, 1) if pos.dim() == 3 else pos.expand(rows, 1)
        out = model(input_ids=nxt[:, None], position_ids=pos, cache=cache, use_cache=True)
        logits = out.logits[:, -1]
    return tokens


def decode_text(tokenizer: Any, ids: Sequence[int], eos_ids: Sequence[int]) -> str:
    """Generated ids to text: cut at the first EOS, special tokens skipped (as HFGenerator does)."""
    ids = list(ids)
    for i, t in enumerate(ids):
        if t in eos_ids:
            ids = ids[:i]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)


@dataclass
class PairSweep:
    """Answers of one pair: unswapped, and per swap layer (same order as `layers`)."""

    pair_id: str
    layers: list[int]
    clean: str
    swapped: list[str]
    first_logits: torch.Tensor | None = None  # [len(layers) + 1, vocab], last row unswapped (kept on request)
    tokens: list[list[int]] = field(default_factory=list)  # per row, same order as first_logits


def sweep_pair(model: nn.Module, processor: Any, adapter: VLMAdapter, ep: EncodedPair, layers: Sequence[int], *,
               mode: str = "cumulative", engine: str = "fast", max_new_tokens: int = 24,
               keep_logits: bool = False) -> PairSweep:
    """Swap sweep of one encoded pair: greedy answers with the swap at each layer, plus the unswapped answer."""
    if mode not in MODES:
        raise FrankenscopeError(f"unknown swap mode {mode!r}; choose one of {', '.join(MODES)}")
    if engine not in ENGINES:
        raise FrankenscopeError(f"unknown swap engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not layers:
        raise FrankenscopeError("no swap layers given")
    if max_new_tokens < 1:
        raise FrankenscopeError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    tokenizer = getattr(processor, "tokenizer", processor)
    eos = eos_token_ids(model, tokenizer)
    build = fast_prompt_variants if engine == "fast" else naive_prompt_variants
    with torch.inference_mode():
        pv = build(model, adapter, ep, layers, mode, decode_tokens=max_new_tokens)
        ids = greedy_decode(model, pv.cache, pv.first_logits, pv.next_position, max_new_tokens, eos)
    texts = [decode_text(tokenizer, t, eos) for t in ids]
    return PairSweep(pair_id=ep.pair_id, layers=pv.layers, clean=texts[-1], swapped=texts[:-1],
                     first_logits=pv.first_logits if keep_logits else None, tokens=ids)


# --------------------------------------------------------------------------- scoring

_TRAILING = ".,!?;:"


def normalize_answer(text: str) -> str:
    """The comparison form of a response for the change rate: `extract_answer`, lower case, whitespace
    collapsed, trailing `.,!?;:` removed."""
    return normalize_text(extract_answer(text)).rstrip(_TRAILING).strip()


def answers_differ(a: str, b: str, rule: str = "exact") -> bool:
    """Did the answer change?

    exact (default): the normalised answers (`normalize_answer`) differ.
    reference: the reference code's rule on the raw responses: lower case, strip, strip trailing
        `.,!?;:`; if both are shorter than 20 characters they differ iff unequal, otherwise they count
        as the same when one contains the other.
    """
    if rule == "exact":
        return normalize_answer(a) != normalize_answer(b)
    if rule == "reference":
        x, y = (s.lower().strip().rstrip(_TRAILING) for s in (a, b))
        if len(x) < 20 and len(y) < 20:
            return x != y
        return not (x in y or y in x)
    raise FrankenscopeError(f"unknown change rule {rule!r}; choose one of {', '.join(CHANGE_RULES)}")


def _as_item(pair: ProbePair, answer: str) -> Item:
    return Item(id=pair.id, task=pair.task, prompt=pair.prompt, answer=answer, answer_type=pair.answer_type)


def rate_summary(flags: Sequence[bool], seed: int = 0) -> dict[str, Any]:
    """{n, count, rate, ci_low, ci_high}: the share of True with its Wilson 95% interval (`seed` unused)."""
    n = len(flags)
    lo, hi = wilson_interval(int(sum(flags)), n)
    return {"n": n, "count": int(sum(flags)), "rate": (sum(flags) / n) if n else float("nan"),
            "ci_low": lo, "ci_high": hi}


@dataclass
class PairRecord:
    id: str
    task: str
    answer_type: str
    target_answer: str
    source_answer: str
    unswapped: str
    unswapped_correct: bool
    swapped: list[str]
    changed: list[bool]
    flipped: list[bool]
    kept: list[bool]


def seen_scale(encoded: dict[str, torch.Tensor], processor: Any, image: Image.Image) -> tuple[float, float]:
    """(sx, sy) = the size of the image the model sees (the processor's resize, from `image_grid_thw` x the
    patch size) over the original image size; (1, 1) when the processor reports no grid."""
    grid = encoded.get("image_grid_thw")
    patch = getattr(getattr(processor, "image_processor", None), "patch_size", None)
    if grid is None or not patch:
        return (1.0, 1.0)
    _, h, w = (int(x) for x in grid.reshape(-1, 3)[0])
    return (w * patch / image.size[0], h * patch / image.size[1])


def scale_box(box: Box, scale: tuple[float, float]) -> Box:
    """A box (x1, y1, x2, y2) in original-image pixels, in the pixels of the image the model sees."""
    sx, sy = scale
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _box_hit(pred: str, gold: str, scale: tuple[float, float]) -> bool:
    """IoU(predicted box, gold box rescaled to the image the model sees) > IOU_THRESHOLD."""
    p, g = parse_box(extract_answer(pred)), parse_box(gold)
    if g is None:
        raise FrankenscopeError(f"gold box {gold!r} is not four numbers")
    return p is not None and iou(p, scale_box(g, scale)) > IOU_THRESHOLD


def _box_changed(clean: str, swapped: str, rule: str) -> bool:
    """A box answer changed when IoU(clean box, swapped box) <= IOU_THRESHOLD (one pixel of jitter is no
    change); when either is not a box, the text rule decides."""
    a, b = parse_box(extract_answer(clean)), parse_box(extract_answer(swapped))
    if a is None or b is None:
        return answers_differ(clean, swapped, rule)
    return iou(a, b) <= IOU_THRESHOLD


def score_pair(pair: ProbePair, sweep: PairSweep, change_rule: str = "exact",
               box_scale: tuple[float, float] = (1.0, 1.0)) -> PairRecord:
    """Per layer: changed (vs the unswapped answer), flipped (equals the source's ground truth) and kept
    (still equals the target's ground truth).

    Box answers (grounding): changed = IoU(unswapped box, swapped box) <= 0.5; flipped / kept = IoU with
    the source / target gold box > 0.5, the gold boxes rescaled by `box_scale` to the image the model
    sees (`seen_scale`; the model answers in those pixels).
    """
    tgt, src = _as_item(pair, pair.target_answer), _as_item(pair, pair.source_answer)
    if pair.answer_type == "box":
        def right(s: str, gold: str) -> bool:
            return _box_hit(s, gold, box_scale)

        changed = [_box_changed(sweep.clean, s, change_rule) for s in sweep.swapped]
        return PairRecord(
            id=pair.id, task=pair.task, answer_type=pair.answer_type, target_answer=pair.target_answer,
            source_answer=pair.source_answer, unswapped=sweep.clean,
            unswapped_correct=right(sweep.clean, pair.target_answer), swapped=sweep.swapped, changed=changed,
            flipped=[right(s, pair.source_answer) for s in sweep.swapped],
            kept=[right(s, pair.target_answer) for s in sweep.swapped])
    return PairRecord(
        id=pair.id, task=pair.task, answer_type=pair.answer_type, target_answer=pair.target_answer,
        source_answer=pair.source_answer, unswapped=sweep.clean, unswapped_correct=grade(sweep.clean, tgt),
        swapped=sweep.swapped, changed=[answers_differ(sweep.clean, s, change_rule) for s in sweep.swapped],
        flipped=[grade(s, src) for s in sweep.swapped], kept=[grade(s, tgt) for s in sweep.swapped])


def summarize_vision(records: Sequence[PairRecord], layers: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """Per task (and "all"): unswapped accuracy and, per layer, change / flip-to-source / kept rates with CIs
    (flip-to-source also among the pairs whose unswapped answer was right)."""
    groups: dict[str, list[PairRecord]] = {}
    for r in records:
        groups.setdefault(r.task, []).append(r)
    if len(groups) > 1:
        groups["all"] = list(records)
    out: dict[str, Any] = {}
    for task, rs in groups.items():
        per_layer = []
        right = [r for r in rs if r.unswapped_correct]
        for i, layer in enumerate(layers):
            per_layer.append({
                "layer": layer,
                "change": rate_summary([r.changed[i] for r in rs], seed),
                "flip_to_source": rate_summary([r.flipped[i] for r in rs], seed),
                "kept_target": rate_summary([r.kept[i] for r in rs], seed),
                # Among pairs answered correctly without the swap: a flip here is caused by the swap.
                "flip_to_source_if_unswapped_correct": rate_summary([r.flipped[i] for r in right], seed),
            })
        out[task] = {"n_pairs": len(rs), "unswapped_accuracy": rate_summary([r.unswapped_correct for r in rs], seed),
                     "per_layer": per_layer}
    return out


# --------------------------------------------------------------------------- the analysis


@dataclass
class VisionLocalization:
    layers: list[int]
    settings: dict[str, Any]
    tasks: dict[str, Any]
    records: list[PairRecord]
    wall_s: float


def localize_vision(model: nn.Module, processor: Any, adapter: VLMAdapter, inputs: Sequence[ProbeInput], *,
                    layers: Sequence[int] | None = None, mode: str = "cumulative", engine: str = "fast",
                    max_new_tokens: int = 24, resize_source: bool = False, change_rule: str = "exact",
                    system: str | None = None, seed: int = 0, progress: bool = True,
                    on_pair: Callable[[PairRecord], None] | None = None) -> VisionLocalization:
    """Visual-token swapping over probe pairs (Eq. 2 and more): see the module docstring for the semantics.

    Every pair is encoded and checked first (a pair with mismatched token grids fails before any model
    work, naming the pair). `seed` only seeds the bootstrap CIs; decoding is greedy.
    """
    if not inputs:
        raise FrankenscopeError("no probe pairs to run")
    if change_rule not in CHANGE_RULES:
        raise FrankenscopeError(f"unknown change rule {change_rule!r}; choose one of {', '.join(CHANGE_RULES)}")
    n_layers = adapter.num_layers(model)
    layer_list = sorted(set(range(n_layers) if layers is None else layers))
    bad = [x for x in layer_list if not 0 <= x < n_layers]
    if bad or not layer_list:
        raise FrankenscopeError(f"swap layers {bad or '[]'} are not in 0..{n_layers - 1}")
    t0 = time.time()
    records = []
    for inp in tqdm(inputs, desc=f"swap sweep ({engine}, {mode})", unit="pair", disable=not progress):
        img_t, img_s = inp.images()
        ep = encode_pair(model, processor, adapter, inp.pair, img_t, img_s, resize_source=resize_source,
                         system=system)
        sweep = sweep_pair(model, processor, adapter, ep, layer_list, mode=mode, engine=engine,
                           max_new_tokens=max_new_tokens)
        rec = score_pair(inp.pair, sweep, change_rule, box_scale=seen_scale(ep.target, processor, img_t))
        records.append(rec)
        if on_pair is not None:
            on_pair(rec)
    settings = {"mode": mode, "engine": engine, "layers": layer_list, "n_layers": n_layers,
                "max_new_tokens": max_new_tokens, "resize_source": resize_source, "change_rule": change_rule,
                "system": system, "decoding": "greedy, swap in the prompt pass only",
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    return VisionLocalization(layers=layer_list, settings=settings, tasks=summarize_vision(records, layer_list, seed),
                              records=records, wall_s=round(time.time() - t0, 3))


def write_localize_vision(result: VisionLocalization, out_dir: str | Path, *, model_source: str,
                          model_fingerprint: str | None, pairs_source: str, seed: int | None) -> Path:
    """Write `out_dir/localize_vision.json` (kind "localize_vision", schema_version 1); see the README."""
    ids = [r.id for r in result.records]
    inputs = {"model_source": model_source, "model_fingerprint": model_fingerprint, "pairs_source": pairs_source,
              "n_pairs": len(ids), "pair_ids_sha256": sha256_text(json.dumps(ids))}
    payload = {"settings": result.settings, "layers": result.layers, "tasks": result.tasks,
               "records": [asdict(r) for r in result.records], "wall_s": result.wall_s}
    return write_result(Path(out_dir) / "localize_vision.json", kind="localize_vision",
                        schema_version=VISION_SCHEMA_VERSION, payload=payload, seed=seed, inputs=inputs)
