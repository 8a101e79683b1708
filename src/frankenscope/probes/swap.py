"""Visual-token swapping (paper §3.1, Fig. 4a, Eq. 2): the vision localization over probe pairs.

A probe pair is one prompt with two same-size images: the target T and the source S. "Swap at layer l"
means that, during the prompt (prefill) pass only, the keys and values at the image-token positions
come from the run on S instead of T:

* ``mode="cumulative"`` (the reference code's semantics): in every decoder layer >= l;
* ``mode="single"``: in layer l only (later layers see the target's own image keys/values, recomputed
  from hidden states that layer l's swapped attention has changed).

Decoding then continues from that prompt cache; the swap is never re-applied at decode steps (the
reference code re-appends source K/V at every step).

This module holds the analysis around the sweep: probe inputs and their encoding (`encode_pair`), one
pair's sweep (`sweep_pair`), scoring and summaries, `localize_vision` and its result file. The two
prompt-pass engines (fast exact sweep and naive oracle) live in `probes/sweep.py`, the greedy decoding
of their batched caches in `probes/decode.py`; their public names are re-exported here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

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
from frankenscope.evaluate.metrics import proportion_summary
from frankenscope.generation import load_image, model_device, rgb_image
from frankenscope.layers import check_layers
from frankenscope.probes.decode import BufferLayer, decode_text, eos_token_ids, greedy_decode
from frankenscope.probes.results import localization_payload, write_probe_result
from frankenscope.probes.sweep import (
    MODES,
    EncodedPair,
    PromptVariants,
    fast_prompt_variants,
    naive_prompt_variants,
)

__all__ = [
    "CHANGE_RULES", "ENGINES", "MODES", "VISION_SCHEMA_VERSION", "BufferLayer", "EncodedPair", "PairRecord",
    "PairSweep", "ProbeInput", "PromptVariants", "VisionLocalization", "answers_differ", "decode_text",
    "encode_pair", "eos_token_ids", "fast_prompt_variants", "file_probe_inputs", "greedy_decode",
    "localize_vision", "naive_prompt_variants", "normalize_answer", "resolve_engine", "scale_box",
    "score_pair", "seen_scale", "summarize_vision", "sweep_pair", "vision_records", "vision_result",
    "write_localize_vision",
]

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


def _encode(processor: Any, prompt: str, image: Image.Image, device: torch.device) -> dict[str, torch.Tensor]:
    enc = processor(text=[prompt], images=[image], return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}


def encode_pair(model: nn.Module, processor: Any, adapter: VLMAdapter, pair: ProbePair,
                target_image: Image.Image, source_image: Image.Image, *, resize_source: bool = False,
                system: str | None = None) -> EncodedPair:
    """Encode target and source with the same prompt and check that a swap is well defined.

    The swap span is the adapter's `swap_span` (the hull of the image's feature tokens). Both images must
    give the same image-token layout (hence identical token ids, spans and positions). Otherwise FrankenscopeError names the pair,
    unless resize_source is set: then the source image is resized (bicubic) to the target's pixel size
    before encoding. Pixels are never interpolated in token space (the reference's broken path).
    """
    device = model_device(model)
    target_image = rgb_image(target_image, f"probe pair {pair.id!r} (target image)")
    source_image = rgb_image(source_image, f"probe pair {pair.id!r} (source image)")
    prompt = adapter.build_prompt(processor, pair.prompt, 1, system)
    if resize_source and source_image.size != target_image.size:
        source_image = source_image.resize(target_image.size, Image.Resampling.BICUBIC)
    enc_t = _encode(processor, prompt, target_image, device)
    enc_s = _encode(processor, prompt, source_image, device)
    span_t = adapter.swap_span(model, enc_t["input_ids"][0])
    span_s = adapter.swap_span(model, enc_s["input_ids"][0])
    if span_t is None:
        raise FrankenscopeError(f"probe pair {pair.id!r}: the {adapter.spec.name} prompt has no image tokens; a swap "
                                "needs one image")
    mask_t = adapter.image_token_mask(model, enc_t["input_ids"])
    mask_s = adapter.image_token_mask(model, enc_s["input_ids"])
    n_t, n_s = int(mask_t.sum()), int(mask_s.sum())
    if (n_t != n_s or span_t != span_s or not torch.equal(mask_t, mask_s)
            or not adapter.same_image_layout(enc_t, enc_s)):
        gt, gs = _layout_note(adapter, enc_t), _layout_note(adapter, enc_s)
        hint = ("" if resize_source else "; pass --resize-source (resize_source=True) to resize the source image "
                "to the target's size before encoding")
        raise FrankenscopeError(
            f"probe pair {pair.id!r}: the target image ({target_image.width}x{target_image.height}) gives {n_t} image "
            f"tokens{gt} but the source image ({source_image.width}x{source_image.height}) gives {n_s}{gs}; a "
            f"{adapter.spec.name} visual-token swap needs the same token layout{hint}")
    if not torch.equal(enc_t["input_ids"], enc_s["input_ids"]):
        raise FrankenscopeError(f"probe pair {pair.id!r}: target and source prompts tokenize differently")
    return EncodedPair(pair_id=pair.id, target=enc_t, source=enc_s, span=span_t,
                       prompt_len=int(enc_t["input_ids"].shape[1]), positions=adapter.position_ids(model, enc_t))


def _layout_note(adapter: VLMAdapter, enc: dict[str, torch.Tensor]) -> str:
    """' (grid 1x4x4)': the image layout values of one encoding (its first image), for error messages."""
    vals = ["x".join(map(str, enc[k][0].tolist())) for k in adapter.image_layout_keys if enc.get(k) is not None]
    return f" (grid {', '.join(vals)})" if vals else ""


# --------------------------------------------------------------------------- one pair's sweep


@dataclass
class PairSweep:
    """Answers of one pair: unswapped, and per swap layer (same order as `layers`)."""

    pair_id: str
    layers: list[int]
    clean: str
    swapped: list[str]
    first_logits: torch.Tensor | None = None  # [len(layers) + 1, vocab], last row unswapped (kept on request)
    tokens: list[list[int]] = field(default_factory=list)  # per row, same order as first_logits


def resolve_engine(adapter: VLMAdapter, engine: str) -> tuple[str, str | None]:
    """(engine to run, note): "fast" becomes "naive" when the family's spec says the fast engine is not exact
    for it; the note says so and why (None when the requested engine runs)."""
    if engine not in ENGINES:
        raise FrankenscopeError(f"unknown swap engine {engine!r}; choose one of {', '.join(ENGINES)}")
    blocker = adapter.fast_sweep_blocker()
    if engine == "fast" and blocker:
        return "naive", (f"{adapter.spec.name}: the fast swap engine is not exact for this family ({blocker}); "
                         "running the naive engine instead")
    return engine, None


def sweep_pair(model: nn.Module, processor: Any, adapter: VLMAdapter, ep: EncodedPair, layers: Sequence[int], *,
               mode: str = "cumulative", engine: str = "fast", max_new_tokens: int = 24,
               keep_logits: bool = False) -> PairSweep:
    """Swap sweep of one encoded pair: greedy answers with the swap at each layer, plus the unswapped answer.

    engine "fast" on a family whose fast engine is not exact runs "naive" and warns (`resolve_engine`)."""
    if mode not in MODES:
        raise FrankenscopeError(f"unknown swap mode {mode!r}; choose one of {', '.join(MODES)}")
    engine, note = resolve_engine(adapter, engine)
    if note:
        warnings.warn(note, stacklevel=2)
    if not layers:
        raise FrankenscopeError("no swap layers given")
    layers = check_layers(layers, adapter.num_layers(model), "swap")
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


def seen_scale(encoded: dict[str, torch.Tensor], processor: Any, image: Image.Image,
               adapter: VLMAdapter) -> tuple[float, float]:
    """(sx, sy): gold boxes in original-image pixels to the coordinates the model answers in, as the adapter
    says (`VLMAdapter.box_scale`; Qwen-VL: the resized image it sees)."""
    return adapter.box_scale(encoded, processor, image)


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
                "change": proportion_summary([r.changed[i] for r in rs], value_key="rate"),
                "flip_to_source": proportion_summary([r.flipped[i] for r in rs], value_key="rate"),
                "kept_target": proportion_summary([r.kept[i] for r in rs], value_key="rate"),
                # Among pairs answered correctly without the swap: a flip here is caused by the swap.
                "flip_to_source_if_unswapped_correct": proportion_summary([r.flipped[i] for r in right], value_key="rate"),
            })
        out[task] = {"n_pairs": len(rs), "unswapped_accuracy": proportion_summary([r.unswapped_correct for r in rs], value_key="rate"),
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

    `vision_records` over every pair, then `summarize_vision`. `seed` only seeds the bootstrap CIs; decoding
    is greedy.
    """
    t0 = time.time()
    records, settings = vision_records(model, processor, adapter, inputs, layers=layers, mode=mode, engine=engine,
                                       max_new_tokens=max_new_tokens, resize_source=resize_source,
                                       change_rule=change_rule, system=system, progress=progress, on_pair=on_pair)
    return vision_result(records, settings, seed, round(time.time() - t0, 3))


def vision_records(model: nn.Module, processor: Any, adapter: VLMAdapter, inputs: Sequence[ProbeInput], *,
                   layers: Sequence[int] | None = None, mode: str = "cumulative", engine: str = "fast",
                   max_new_tokens: int = 24, resize_source: bool = False, change_rule: str = "exact",
                   system: str | None = None, progress: bool = True,
                   on_pair: Callable[[PairRecord], None] | None = None) -> tuple[list[PairRecord], dict[str, Any]]:
    """(one record per pair, in input order; the run's settings): each pair is encoded (a pair with mismatched
    token grids fails, naming it), swept and scored on its own, so the records of any subset of the pairs are
    the records a run over all of them gives for that subset."""
    if not inputs:
        raise FrankenscopeError("no probe pairs to run")
    if change_rule not in CHANGE_RULES:
        raise FrankenscopeError(f"unknown change rule {change_rule!r}; choose one of {', '.join(CHANGE_RULES)}")
    n_layers = adapter.num_layers(model)
    layer_list = check_layers(layers, n_layers, "swap")
    requested = engine
    engine, note = resolve_engine(adapter, engine)
    if note:
        warnings.warn(note, stacklevel=2)
    records = []
    for inp in tqdm(inputs, desc=f"swap sweep ({engine}, {mode})", unit="pair", disable=not progress):
        img_t, img_s = inp.images()
        ep = encode_pair(model, processor, adapter, inp.pair, img_t, img_s, resize_source=resize_source,
                         system=system)
        sweep = sweep_pair(model, processor, adapter, ep, layer_list, mode=mode, engine=engine,
                           max_new_tokens=max_new_tokens)
        rec = score_pair(inp.pair, sweep, change_rule, box_scale=seen_scale(ep.target, processor, img_t, adapter))
        records.append(rec)
        if on_pair is not None:
            on_pair(rec)
    settings = {"mode": mode, "engine": engine, "engine_requested": requested, "engine_note": note,
                "layers": layer_list, "n_layers": n_layers,
                "max_new_tokens": max_new_tokens, "resize_source": resize_source, "change_rule": change_rule,
                "system": system, "decoding": "greedy, swap in the prompt pass only",
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    return records, settings


def vision_result(records: Sequence[PairRecord], settings: dict[str, Any], seed: int, wall_s: float
                  ) -> VisionLocalization:
    """The localization of `records` (every pair, in input order) swept with `settings` (`vision_records`)."""
    layers = list(settings["layers"])
    return VisionLocalization(layers=layers, settings=settings, tasks=summarize_vision(records, layers, seed),
                              records=list(records), wall_s=wall_s)


def write_localize_vision(result: VisionLocalization, out_dir: str | Path, *, model_source: str,
                          model_fingerprint: str | None, pairs_source: str, seed: int | None) -> Path:
    """Write `out_dir/localize_vision.json` (kind "localize_vision", schema_version 1); see the README."""
    sources = {"model_source": model_source, "model_fingerprint": model_fingerprint, "pairs_source": pairs_source}
    return write_probe_result(out_dir, "localize_vision", VISION_SCHEMA_VERSION, localization_payload(result),
                              sources=sources, ids=[r.id for r in result.records], unit="pair", seed=seed)
