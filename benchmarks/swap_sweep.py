"""Wall time of a full visual-token swap sweep: fast engine vs naive oracle vs a paper-style loop.

Two shapes, every method on the same pairs in one run (method order rotated per repetition, medians):

* ``small``: the small organism (6 LLM layers, 16 image tokens per 112 px image). A trained base
  checkpoint is used when one exists (``--small-model``, default runs/demo/organism/base), else a random
  init with initializer_range 0.2.
* ``big``: a random-init Qwen2.5-VL with a realistic token structure: 28 LLM layers, hidden 256
  (4 heads, 2 KV heads, head_dim 64), 392 x 392 images -> 28 x 28 patches -> 196 image tokens,
  initializer_range 0.2 so that swaps change answers. The prompts are padded with a fixed instruction
  to the prototype's 44 tokens after the image (``--big-suffix``), so the ratios compare like for like.

Methods (all decode greedily up to ``--tokens`` new tokens, stopping a row at EOS):

* ``fast``: `sweep_pair(engine="fast")`, all layers.
* ``naive``: `sweep_pair(engine="naive")`: one hooked prompt pass per layer, same batched decode.
* ``paper``: the reference code's loop, with hooks instead of monkey-patching: one source forward,
  then per layer `model.generate` at batch 1 with `swap_projections` (re-running the vision tower),
  plus the unswapped `generate`.
* ``fast_first`` / ``naive_first``: the same sweeps with max_new_tokens=1 (prompt passes only).
* ``plain``: one plain greedy evaluation of the targets: `model.generate` per target at batch 1
  (``plain_b8``: the same targets in one left-padded batch of up to 8, as `frankenscope eval` does).

* ``families``: every registered family side by side (its tiny architecture deepened to
  ``--family-layers`` LLM layers, its largest test image with the family's own token layout:
  start/end markers, tiles, newlines), fast vs naive with the same decode, and whether every decoded
  token agrees. The image-token counts are the tiny processors' (4-20); the ``big`` shape is the
  realistic one for the ratio's dependence on the image length.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/swap_sweep.py [--pairs-small 8] [--pairs-big 4]
       [--reps-small 3] [--reps-big 2] [--tokens 8] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from frankenscope.adapters import get_adapter
from frankenscope.organism.suite import probe_inputs as organism_probe_inputs
from frankenscope.probes.hooks import capture_projections, swap_projections
from frankenscope.probes.swap import encode_pair, sweep_pair

BIG_SIDE = 392


def big_model(layers: int = 28, hidden: int = 256, init: float = 0.2) -> tuple[Any, Any]:
    """A random Qwen2.5-VL with 28 layers and a processor that maps a 392 px image to 196 tokens."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from frankenscope.organism.processor import OrganismProcessor
    from frankenscope.organism.tokenizer import CHAT_TEMPLATE, build_tokenizer

    tok = build_tokenizer()
    ip = Qwen2VLImageProcessorPil(min_pixels=BIG_SIDE * BIG_SIDE, max_pixels=BIG_SIDE * BIG_SIDE, patch_size=14,
                                  temporal_patch_size=2, merge_size=2)
    proc = OrganismProcessor(image_processor=ip, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>", "<|im_end|>", "<pad>")}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=2,
                         max_position_embeddings=4096, initializer_range=init,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<pad>"]),
        vision_config=dict(depth=2, hidden_size=128, intermediate_size=384, num_heads=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=hidden,
                           fullatt_block_indexes=[1], initializer_range=init),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<pad>"],
        tie_word_embeddings=True, initializer_range=init)
    cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.do_sample = False
    return model, proc


def small_model(path: str | None) -> tuple[Any, Any, str]:
    if path and (Path(path) / "config.json").is_file():
        from frankenscope.loading import load_model

        loaded = load_model(path)
        return loaded.model, loaded.processor, f"trained organism {path}"
    from frankenscope.organism.model import build_organism

    model, proc = build_organism("small", seed=0, initializer_range=0.2)
    return model, proc, "random small organism (initializer_range 0.2)"


def gen_kwargs(model: Any, tokens: int) -> dict[str, Any]:
    return {"do_sample": False, "max_new_tokens": tokens, "repetition_penalty": 1.0,
            "pad_token_id": model.generation_config.pad_token_id}


def _inputs(enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in enc.items() if k != "attention_mask"}


def paper_style(model: Any, proc: Any, ad: Any, ep: Any, tokens: int) -> list[list[int]]:
    """The reference loop: original generate, one source forward, then hooks + generate per layer."""
    n_layers = ad.num_layers(model)
    P = ep.prompt_len
    out = []
    with torch.inference_mode():
        original = model.generate(**ep.target, **gen_kwargs(model, tokens))[0, P:].tolist()
        with capture_projections(model, ad, range(n_layers), span=ep.span) as src:
            model(**_inputs(ep.source))
        for layer in range(n_layers):
            with swap_projections(model, ad, src, ep.span, range(layer, n_layers), P):
                out.append(model.generate(**ep.target, **gen_kwargs(model, tokens))[0, P:].tolist())
    return [*out, original]


def plain_eval(model: Any, eps: list[Any], tokens: int) -> None:
    with torch.inference_mode():
        for ep in eps:
            model.generate(**ep.target, **gen_kwargs(model, tokens))


def plain_eval_batched(model: Any, proc: Any, ad: Any, inputs: list[Any], images: list[Any], tokens: int) -> None:
    tok = proc.tokenizer
    tok.padding_side = "left"
    for s in range(0, len(inputs), 8):
        prompts = [ad.build_prompt(proc, inp.pair.prompt, 1) for inp in inputs[s:s + 8]]
        enc = proc(text=prompts, images=images[s:s + 8], return_tensors="pt", padding=True)
        with torch.inference_mode():
            model.generate(**enc, **gen_kwargs(model, tokens))


def _cut(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos) + 1] if eos in ids else ids


FILLER = " Please look at the whole picture carefully, then give the short final answer only, nothing else at all."


def pad_suffix(proc: Any, ad: Any, prompt: str, suffix: int) -> str:
    """`prompt` extended with a prefix of FILLER so that exactly `suffix` tokens follow the image span
    (the scratch prototype of the fast sweep had a 44-token suffix after 196 image tokens)."""
    tok = proc.tokenizer
    end = tok.convert_tokens_to_ids("<|vision_end|>")

    def length(p: str) -> int:
        ids = tok(ad.build_prompt(proc, p, 1))["input_ids"]
        return len(ids) - ids.index(end) - 1

    for k in range(len(FILLER) + 1):
        if length(prompt + FILLER[:k]) == suffix:
            return prompt + FILLER[:k]
    raise ValueError(f"cannot pad {prompt!r} to a {suffix}-token suffix")


def bench_shape(name: str, model: Any, proc: Any, inputs: list[Any], reps: int, tokens: int,
                resize: int | None, suffix: int | None = None) -> dict[str, Any]:
    ad = get_adapter(model)
    if suffix is not None:
        inputs = [replace(inp, pair=replace(inp.pair, prompt=pad_suffix(proc, ad, inp.pair.prompt, suffix)))
                  for inp in inputs]
    n_layers = ad.num_layers(model)
    layers = list(range(n_layers))
    pairs = []
    for inp in inputs:
        t, s = inp.images()
        if resize:
            t, s = t.resize((resize, resize)), s.resize((resize, resize))
        pairs.append((inp, t, s))
    eps = [encode_pair(model, proc, ad, inp.pair, t, s) for inp, t, s in pairs]
    eos = model.generation_config.eos_token_id
    results: dict[str, Any] = {}

    def fast() -> None:
        results["fast"] = [sweep_pair(model, proc, ad, ep, layers, engine="fast", max_new_tokens=tokens).tokens
                           for ep in eps]

    def naive() -> None:
        results["naive"] = [sweep_pair(model, proc, ad, ep, layers, engine="naive", max_new_tokens=tokens).tokens
                            for ep in eps]

    def paper() -> None:
        results["paper"] = [paper_style(model, proc, ad, ep, tokens) for ep in eps]

    def first_token(engine: str) -> Callable[[], None]:
        return lambda: [sweep_pair(model, proc, ad, ep, layers, engine=engine, max_new_tokens=1) for ep in eps]

    methods: dict[str, Callable[[], None]] = {
        "fast": fast, "naive": naive, "paper": paper,
        "fast_first": first_token("fast"), "naive_first": first_token("naive"),
        "plain": lambda: plain_eval(model, eps, tokens),
        "plain_b8": lambda: plain_eval_batched(model, proc, ad, [p[0] for p in pairs], [p[1] for p in pairs], tokens),
    }
    names = list(methods)
    times: dict[str, list[float]] = {m: [] for m in names}
    fast()  # warm-up (allocator, lazy imports); not timed
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for m in order:
            t0 = time.perf_counter()
            methods[m]()
            times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    same_naive = sum(a == b for fa, na in zip(results["fast"], results["naive"], strict=True)
                     for a, b in zip(fa, na, strict=True))
    same_paper = sum(_cut(a, eos) == _cut(b, eos) for fa, pa in zip(results["fast"], results["paper"], strict=True)
                     for a, b in zip(fa, pa, strict=True))
    total = len(eps) * (n_layers + 1)
    distinct = statistics.mean(len({tuple(t) for t in fa}) for fa in results["fast"])
    i0, i1 = eps[0].span
    return {"name": name, "layers": n_layers, "image_tokens": i1 - i0, "prompt_len": eps[0].prompt_len,
            "suffix_len": eps[0].prompt_len - i1, "pairs": len(eps), "reps": reps, "times": times, "median": med,
            "fast_eq_naive": f"{same_naive}/{total}", "fast_eq_paper": f"{same_paper}/{total}",
            "distinct_answers_per_pair": distinct}


def report(r: dict[str, Any]) -> str:
    m = r["median"]

    def ratio(a: str, b: str) -> str:
        per = [x / y for x, y in zip(r["times"][a], r["times"][b], strict=True)]
        return f"{m[a] / m[b]:.2f}x (per rep {min(per):.2f}-{max(per):.2f})"

    lines = [f"== {r['name']}: {r['layers']} layers, {r['image_tokens']} image tokens, prompt {r['prompt_len']} "
             f"tokens (suffix {r['suffix_len']}), {r['pairs']} pairs x {r['reps']} reps ==",
             "  median wall s: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()),
             f"  naive / fast        : {ratio('naive', 'fast')}",
             f"  paper-style / fast  : {ratio('paper', 'fast')}",
             f"  first token only, naive / fast: {ratio('naive_first', 'fast_first')}",
             f"  fast / plain (b1)   : {ratio('fast', 'plain')}",
             f"  fast / plain (b8)   : {ratio('fast', 'plain_b8')}",
             f"  answers fast==naive {r['fast_eq_naive']}, fast==paper-style (to EOS) {r['fast_eq_paper']}, "
             f"distinct answers per pair over the sweep {r['distinct_answers_per_pair']:.1f}"]
    return "\n".join(lines)


def _family_image(size: tuple[int, int], seed: int) -> Any:
    """A 4x4 grid of random colours (structured content, so swaps change answers)."""
    import numpy as np
    from PIL import Image

    w, h = size
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((-(-h // 4), -(-w // 4), 1), dtype=np.uint8))[:h, :w])


def bench_families(layers: int, pairs: int, reps: int, tokens: int, words: int = 0) -> list[str]:
    """fast/naive per registered family, side by side: each family's tiny architecture (frankenscope.testing.families)
    deepened to `layers` LLM layers, initializer_range 0.2, its largest test image (the processor's token
    layout: markers, tiles, newlines; the tiny processors cap the image at 4-18 tokens, so a real model's
    hundreds of image tokens are not reproduced), a one-line question with `words` more words of text after
    the image (a real prompt's suffix: ~45 tokens); all layers swapped (cumulative), greedy decoding."""
    from frankenscope.adapters import supported_architectures
    from frankenscope.data.schema import ProbePair
    from frankenscope.testing.families import FAMILIES

    lines = [f"== families: fast vs naive, {layers} LLM layers, {pairs} pairs x {reps} reps, {tokens} new tokens, "
             f"+{words} words after the image",
             f"{'family':<16} {'image tok':>9} {'prompt':>6} {'after image':>11} {'fast s':>7} {'naive s':>8} "
             f"{'naive/fast':>10}  same answers"]
    for name, fam in FAMILIES.items():
        if fam.facts.architecture not in supported_architectures():
            lines.append(f"{name:<16} (no adapter: not registered)")
            continue
        model, proc = fam.build(seed=1, initializer_range=0.2)
        cfg = model.config.get_text_config()
        cfg.num_hidden_layers = layers
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = [cfg.layer_types[i % len(cfg.layer_types)] for i in range(layers)]
        gen = model.generation_config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            model = type(model)(model.config).eval()
        model.generation_config = gen
        model.config.architectures = [fam.facts.architecture]
        ad = get_adapter(model)
        with torch.no_grad():  # projections transformers initialises to zero (Gemma 3) would blind the model
            for p in ad.projector(model).parameters():
                if p.dim() > 1 and not bool(p.any()):
                    p.normal_(0.0, 0.2)
        size = fam.image_sizes[-1]
        question = "How many shapes are there?" + " the image is" * (words // 3)
        eps = [encode_pair(model, proc, ad, ProbePair(f"p{i}", "count", "t", "s", question, "1",
                                                      "2", "number"), _family_image(size, 2 * i),
                           _family_image(size, 2 * i + 1)) for i in range(pairs)]
        all_layers = list(range(layers))
        times: dict[str, list[float]] = {"fast": [], "naive": []}
        answers: dict[str, list[Any]] = {}
        for rep in range(reps):
            for engine in (["fast", "naive"] if rep % 2 == 0 else ["naive", "fast"]):
                t = time.perf_counter()
                answers[engine] = [sweep_pair(model, proc, ad, ep, all_layers, engine=engine, max_new_tokens=tokens).tokens
                                   for ep in eps]
                times[engine].append(time.perf_counter() - t)
        fast, naive = statistics.median(times["fast"]), statistics.median(times["naive"])
        i0, i1 = eps[0].span
        same = answers["fast"] == answers["naive"]
        lines.append(f"{name:<16} {i1 - i0:>9} {eps[0].prompt_len:>6} {eps[0].prompt_len - i1:>11} {fast:>7.2f} "
                     f"{naive:>8.2f} {naive / fast:>10.2f}  {'yes' if same else 'NO'}")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs-small", type=int, default=8)
    ap.add_argument("--pairs-big", type=int, default=4)
    ap.add_argument("--reps-small", type=int, default=3)
    ap.add_argument("--reps-big", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=8, help="max new tokens per answer")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--small-model", default="runs/demo/organism/base")
    ap.add_argument("--big-suffix", type=int, default=44,
                    help="tokens after the image in the big shape's prompts (the prototype's: 44; 0: unpadded)")
    ap.add_argument("--only", choices=["small", "big", "families"], default=None)
    ap.add_argument("--family-layers", type=int, default=12, help="LLM layers of each family's model (families)")
    ap.add_argument("--pairs-family", type=int, default=2)
    ap.add_argument("--reps-family", type=int, default=1)
    ap.add_argument("--family-words", type=int, default=0, help="words of text added after the image (families)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, sdpa", flush=True)
    t0 = time.time()
    inputs = organism_probe_inputs(["counting", "ocr", "grounding", "recognition"], n=max(args.pairs_small,
                                                                                          args.pairs_big), seed=0)
    inputs = inputs[::max(1, len(inputs) // max(args.pairs_small, args.pairs_big))]
    if args.only in (None, "small"):
        model, proc, what = small_model(args.small_model)
        print(f"small: {what}", flush=True)
        print(report(bench_shape("small", model, proc, inputs[:args.pairs_small], args.reps_small, args.tokens,
                                 None)), flush=True)
    if args.only in (None, "big"):
        model, proc = big_model()
        print(report(bench_shape("big", model, proc, inputs[:args.pairs_big], args.reps_big, args.tokens,
                                 BIG_SIDE, args.big_suffix or None)), flush=True)
    if args.only in (None, "families"):
        print("\n".join(bench_families(args.family_layers, args.pairs_family, args.reps_family, args.tokens,
                                       args.family_words)),
              flush=True)
    print(f"total {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
