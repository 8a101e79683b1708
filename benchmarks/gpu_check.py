"""GPU checks in one script: frankenscope's probes, generation and weight tools on random-weight models
with the real Qwen2.5-VL-7B / 3B shapes. Nothing is downloaded: the organism tokenizer serves as the
offline processor, and the images are the organism's probe images resized to 392 px (196 image tokens).

Parts (each calls the library's public functions and records status ok / skipped / error):
  swap       `sweep_pair`, fast vs naive engine over all layers: s/pair, ratio, identical generated ids
  skip       `localize_reasoning` with every layer skipped (one batch of 1 + L rows per item): s/item
  attention  `attention_profile` (eager attention): s/item
  hf         `HFGenerator` batched greedy generation: generated tokens/s
  weights    `diff_pair` and `merge` of two synthetic bf16 checkpoints (a slice of layers at the real tensor
             shapes), each in a child process: wall time, peak RSS (and CUDA peak for the diff's SVDs)
  vllm       vLLM on the hf part's prompts: tokens/s and greedy agreement with HF (only if vLLM imports)

Every number is measured unless its key or table cell says "extrapolated" (with the formula in the JSON).
Usage: python benchmarks/gpu_check.py [--shape 7b|3b|tiny | --tiny] [--out FILE.json] [--skip PART ...]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PARTS = ("swap", "skip", "attention", "hf", "weights", "vllm")  # run order: vllm last (it frees the HF model)
VISION = dict(v_depth=32, v_hidden=1280, v_heads=16, v_inter=3420, fullatt=[7, 15, 23, 31])
SHAPES: dict[str, dict[str, Any]] = {  # the released configs' sizes
    "7b": dict(layers=28, hidden=3584, heads=28, kv=4, inter=18944, vocab=152064, tie=False, theta=1e6,
               mrope=[16, 24, 24], side=392, **VISION),
    "3b": dict(layers=36, hidden=2048, heads=16, kv=2, inter=11008, vocab=151936, tie=True, theta=1e6,
               mrope=[16, 24, 24], side=392, **VISION),
    "tiny": dict(layers=4, hidden=64, heads=4, kv=2, inter=128, vocab=512, tie=True, theta=1e4, mrope=[2, 3, 3],
                 side=112, v_depth=2, v_hidden=32, v_heads=2, v_inter=64, fullatt=[1]),
}
#: pairs, items, prompts, batch, new tokens (probes / eval) and a per-part time budget in seconds
SIZES = {"gpu": dict(pairs=4, skip_items=2, attn_items=4, prompts=32, batch=16, tokens=32, eval_tokens=64,
                     budget=90),
         "tiny": dict(pairs=2, skip_items=2, attn_items=2, prompts=4, batch=2, tokens=4, eval_tokens=8, budget=20)}
GAIN = 3.2  # init std x sqrt(fan-in width) of benchmarks/swap_sweep.py's random model (0.2 at hidden 256)
VLLM_MISSING = "vLLM not installed: skipped (pip install vllm on a CUDA machine)"


def init_std(width: int) -> float:
    """Init std that gives each matmul swap_sweep.py's gain, so random outputs depend on the image."""
    return GAIN / math.sqrt(width)


def make_config(shape: str, tok: Any, layers: int | None = None, blocks: int | None = None) -> Any:
    """Qwen2.5-VL config with the shape's sizes (optionally only `layers` LLM layers / `blocks` vision blocks)."""
    from transformers import Qwen2_5_VLConfig

    s = SHAPES[shape]
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>", "<|im_end|>", "<pad>")}
    special = dict(bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<pad>"])
    depth = blocks or s["v_depth"]
    rope = {"rope_type": "default", "rope_theta": s["theta"], "mrope_section": s["mrope"]}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["inter"],
                         num_hidden_layers=layers or s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["kv"], max_position_embeddings=32768, rms_norm_eps=1e-6,
                         tie_word_embeddings=s["tie"], initializer_range=init_std(s["hidden"]),
                         rope_parameters=rope, **special),
        vision_config=dict(depth=depth, hidden_size=s["v_hidden"], intermediate_size=s["v_inter"],
                           num_heads=s["v_heads"], out_hidden_size=s["hidden"], patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=112, initializer_range=init_std(s["v_hidden"]),
                           fullatt_block_indexes=[i for i in s["fullatt"] if i < depth] or [depth - 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s["tie"], initializer_range=init_std(s["hidden"]), **special)
    cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return cfg


def make_processor(side: int) -> Any:
    """The organism's processor with images fixed to side x side pixels: (side / 28)^2 image tokens."""
    from transformers import Qwen2VLImageProcessorPil

    from frankenscope.organism.processor import OrganismProcessor
    from frankenscope.organism.tokenizer import CHAT_TEMPLATE, build_tokenizer

    ip = Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=side * side, patch_size=14,
                                  temporal_patch_size=2, merge_size=2)
    return OrganismProcessor(image_processor=ip, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE)


def build_model(shape: str, proc: Any, device: str, dtype: torch.dtype, seed: int) -> Any:
    """Random weights initialised directly on `device` in `dtype` (a 7B never passes through the CPU)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg = make_config(shape, proc.tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa", dtype=dtype)
    g = model.generation_config
    g.pad_token_id, g.eos_token_id, g.bos_token_id, g.do_sample = cfg.pad_token_id, cfg.eos_token_id, None, False
    return model.eval()


def on_cuda(device: str) -> bool:
    return device.startswith("cuda")


def timed(device: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), wall seconds), synchronising CUDA on both sides."""
    if on_cuda(device):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if on_cuda(device):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


class Ctx:
    """What the parts share: settings, model, processor, adapter, probe pairs, items (images on disk)."""

    def __init__(self, args: argparse.Namespace, model: Any, proc: Any, inputs: list[Any], items: list[Any],
                 images: list[Any]) -> None:
        from frankenscope.adapters import get_adapter
        from frankenscope.probes.swap import eos_token_ids

        self.args, self.model, self.proc, self.inputs, self.items, self.images = (args, model, proc, inputs,
                                                                                  items, images)
        self.ad = get_adapter(model)
        self.n_layers = self.ad.num_layers(model)
        self.eos = eos_token_ids(model, proc.tokenizer)
        self.hf_ids: list[list[int]] = []  # the hf part's greedy ids, compared with vLLM's
        self.hf_tokens_per_s: float | None = None

    def cut(self, ids: list[int]) -> list[int]:
        """Ids before the first EOS."""
        return next((ids[:i] for i, t in enumerate(ids) if t in self.eos), ids)

    def over_budget(self, t_start: float) -> bool:
        return time.perf_counter() - t_start > self.args.budget


def fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:.3g}{unit}"


def part_swap(ctx: Ctx) -> dict[str, Any]:
    """Fast vs naive swap sweep of every layer per pair (order alternated); agreement: same ids per row."""
    from frankenscope.probes.swap import encode_pair, sweep_pair

    a, side, layers = ctx.args, (ctx.args.side, ctx.args.side), list(range(ctx.n_layers))
    eps = [encode_pair(ctx.model, ctx.proc, ctx.ad, inp.pair, *(im.resize(side) for im in inp.images()))
           for inp in ctx.inputs[:a.pairs]]

    def sweep(ep: Any, engine: str) -> Any:
        return sweep_pair(ctx.model, ctx.proc, ctx.ad, ep, layers, engine=engine, max_new_tokens=a.tokens,
                          keep_logits=True)

    sweep(eps[0], "fast")  # warm-up, not timed
    times: dict[str, list[float]] = {"fast": [], "naive": []}
    rows = same = 0
    distinct, logit_diff, t_part = [], 0.0, time.perf_counter()
    for i, ep in enumerate(eps):
        out = {}
        for e in ("fast", "naive")[:: 1 if i % 2 == 0 else -1]:
            out[e], dt = timed(a.device, lambda ep=ep, e=e: sweep(ep, e))
            times[e].append(dt)
        rows += len(out["fast"].tokens)
        same += sum(x == y for x, y in zip(out["fast"].tokens, out["naive"].tokens, strict=True))
        distinct.append(len({tuple(t) for t in out["fast"].tokens}))
        fl, nl = out["fast"].first_logits.float(), out["naive"].first_logits.float()
        logit_diff = max(logit_diff, float((fl - nl).abs().max() / nl.std().clamp_min(1e-12)))
        if ctx.over_budget(t_part):
            break
    fast, naive = (sum(times[e]) / len(times[e]) for e in ("fast", "naive"))
    n_img = eps[0].span[1] - eps[0].span[0]
    return {"pairs_measured": len(times["fast"]), "layers": ctx.n_layers, "image_tokens": n_img,
            "prompt_tokens": eps[0].prompt_len, "max_new_tokens": a.tokens, "fast_s_per_pair": fast,
            "naive_s_per_pair": naive, "naive_over_fast": naive / fast, "rows_compared": rows,
            "rows_agree": same, "agree": same == rows, "max_first_logit_diff_in_stds": logit_diff,
            "distinct_answers_per_pair": sum(distinct) / len(distinct),
            "note": "agreement in the run dtype: bf16 rounding may split near-ties, fp32 should not",
            "rows": [[f"swap sweep ({ctx.n_layers} layers, {n_img} img tok, {len(times['fast'])} pairs)",
                      f"fast {fmt(fast, ' s/pair')}", f"naive {fmt(naive, ' s/pair')}",
                      f"naive/fast {fmt(naive / fast, 'x')}", f"same ids {same}/{rows}"]]}


def part_skip(ctx: Ctx) -> dict[str, Any]:
    """Every-layer skipping per item at 1 and at T new tokens; a two-point fit extrapolates to --target-tokens."""
    from frankenscope.probes.skip import localize_reasoning

    a = ctx.args
    per: dict[int, list[float]] = {1: [], a.tokens: []}
    t_part = time.perf_counter()
    for it in ctx.items[:a.skip_items]:
        for n_tok in per:
            per[n_tok].append(localize_reasoning(ctx.model, ctx.proc, ctx.ad, [it], max_new_tokens=n_tok,
                                                 progress=False).wall_s)
        if ctx.over_budget(t_part):
            break
    t1, tt = (sum(v) / len(v) for v in per.values())
    est = t1 + (a.target_tokens - 1) * max(0.0, tt - t1) / max(1, a.tokens - 1)
    return {"items_measured": len(per[1]), "rows_per_item": 1 + ctx.n_layers, "max_new_tokens": a.tokens,
            "s_per_item": tt, "s_per_item_1_token": t1,
            "extrapolated": {"s_per_item_at_target": est, "target_tokens": a.target_tokens,
                             "formula": "t(1) + (target - 1) (t(T) - t(1)) / (T - 1): every row decodes to the "
                                        "target (no EOS), per-step cost as measured (context growth ignored)"},
            "rows": [[f"layer skip ({1 + ctx.n_layers} rows/item)", f"{fmt(tt, ' s/item')} at {a.tokens} tok",
                      f"{fmt(est, ' s/item')} at {a.target_tokens} tok (extrapolated)", "", ""]]}


def part_attention(ctx: Ctx) -> dict[str, Any]:
    """Response-to-image attention per item: a greedy answer, then one eager teacher-forced pass."""
    from frankenscope.probes.attention import attention_profile

    a, times, t_part = ctx.args, [], time.perf_counter()
    ctx.model.set_attn_implementation("eager")  # the weights exist only with eager attention
    try:
        for it in ctx.items[:a.attn_items]:
            times.append(timed(a.device, lambda it=it: attention_profile(
                ctx.model, ctx.proc, ctx.ad, [it], max_new_tokens=a.tokens, progress=False))[1])
            if ctx.over_budget(t_part):
                break
    finally:
        ctx.model.set_attn_implementation("sdpa")
    per = sum(times) / len(times)
    return {"items_measured": len(times), "layers": ctx.n_layers, "max_new_tokens": a.tokens, "s_per_item": per,
            "rows": [[f"attention ({ctx.n_layers} layers)", f"{fmt(per, ' s/item')} at {a.tokens} tok", "", "", ""]]}


def part_hf(ctx: Ctx) -> dict[str, Any]:
    """HFGenerator throughput; the generated ids are captured by wrapping the model's generate."""
    from frankenscope.evaluate.runner import HFGenerator

    a, model, outs = ctx.args, ctx.model, []
    orig = model.generate

    def capturing(*args: Any, **kwargs: Any) -> Any:
        out = orig(*args, **kwargs)
        outs.extend(out[:, kwargs["input_ids"].shape[1]:].tolist())
        return out

    gen = HFGenerator(model, ctx.proc, ctx.ad, batch_size=a.batch, max_new_tokens=a.eval_tokens, progress=False)
    items = ctx.items[:a.prompts]
    model.generate = capturing  # an instance attribute: HFGenerator calls self.model.generate
    try:
        gen(items[:1], images=ctx.images[:1])  # warm-up
        outs.clear()
        _, wall = timed(a.device, lambda: gen(items, images=ctx.images[:len(items)]))
    finally:
        del model.generate
    ctx.hf_ids = [ctx.cut(o) for o in outs]
    tokens = sum(min(len(o), len(c) + 1) for o, c in zip(outs, ctx.hf_ids, strict=True))  # up to EOS, included
    ctx.hf_tokens_per_s = tokens / wall
    return {"prompts": len(items), "batch_size": a.batch, "max_new_tokens": a.eval_tokens, "generated_tokens": tokens,
            "wall_s": wall, "tokens_per_s": tokens / wall,
            "rows": [[f"HF generate ({len(items)} prompts, batch {a.batch})", fmt(tokens / wall, " tok/s"),
                      f"{tokens} tok in {fmt(wall, ' s')}", "", ""]]}


def save_for_vllm(ctx: Ctx, folder: Path) -> str:
    """Save the model and a stock Qwen2.5-VL processor (its video processor needs torchvision, which vLLM
    installs); without torchvision the organism processor is saved instead. Returns which."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    ctx.model.save_pretrained(folder)
    px = ctx.args.side ** 2
    try:
        from transformers import Qwen2VLVideoProcessor

        ip = Qwen2VLImageProcessor(min_pixels=px, max_pixels=px, patch_size=14, temporal_patch_size=2, merge_size=2)
        Qwen2_5_VLProcessor(image_processor=ip, tokenizer=ctx.proc.tokenizer, video_processor=Qwen2VLVideoProcessor(),
                            chat_template=ctx.proc.chat_template).save_pretrained(folder)
        return "Qwen2_5_VLProcessor"
    except ImportError:
        ctx.proc.save_pretrained(folder)
        return "OrganismProcessor (no torchvision)"


def part_vllm(ctx: Ctx) -> dict[str, Any]:
    """vLLM greedy generation of the hf part's prompts (same weights, saved): tokens/s, agreement with HF ids."""
    a = ctx.args
    if importlib.util.find_spec("vllm") is None:
        print(VLLM_MISSING, flush=True)
        return {"status": "skipped", "reason": VLLM_MISSING}
    if not on_cuda(a.device):
        return {"status": "skipped", "reason": "vLLM needs a CUDA device"}
    import vllm

    folder = a.tmp / "vllm-model"
    saved, save_s = timed(a.device, lambda: save_for_vllm(ctx, folder))
    prompts = [{"prompt": ctx.ad.build_prompt(ctx.proc, it.prompt, 1), "multi_modal_data": {"image": im}}
               for it, im in zip(ctx.items[:a.prompts], ctx.images, strict=False)]
    ctx.model.to("meta")  # free the GPU for vLLM's copy (nothing uses the HF model after this part)
    gc.collect()
    torch.cuda.empty_cache()
    llm, start_s = timed(a.device, lambda: vllm.LLM(
        model=str(folder), dtype=a.dtype_name, max_model_len=4096, gpu_memory_utilization=0.85, seed=a.seed,
        limit_mm_per_prompt={"image": 1}, enforce_eager=a.vllm_eager))
    # detokenize=False: a random model emits ids beyond the organism tokenizer's vocabulary
    sp = vllm.SamplingParams(temperature=0.0, max_tokens=a.eval_tokens, detokenize=False)
    llm.generate(prompts[:1], sp, use_tqdm=False)  # warm-up
    res, wall = timed(a.device, lambda: llm.generate(prompts, sp, use_tqdm=False))
    ids = [list(r.outputs[0].token_ids) for r in res]
    tokens = sum(len(x) for x in ids)
    pairs = list(zip([ctx.cut(x) for x in ids], ctx.hf_ids, strict=False))
    same = sum(x == y for x, y in pairs)
    prefix = [next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
              / max(1, len(x), len(y)) for x, y in pairs]
    ratio = tokens / wall / ctx.hf_tokens_per_s if ctx.hf_tokens_per_s else None
    return {"prompts": len(prompts), "max_new_tokens": a.eval_tokens, "save_s": save_s, "startup_s": start_s,
            "generated_tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "vllm_over_hf": ratio,
            "greedy_agree": same, "greedy_compared": len(pairs), "enforce_eager": a.vllm_eager,
            "mean_common_prefix": sum(prefix) / max(1, len(prefix)), "processor": saved,
            "vllm_version": vllm.__version__,
            "rows": [["vLLM generate (same prompts)", fmt(tokens / wall, " tok/s"),
                      f"startup {fmt(start_s, ' s')}", f"vLLM/HF {fmt(ratio, 'x')}",
                      f"same ids {same}/{len(pairs)}"]]}


def disk_name(name: str) -> str:
    """transformers-5 in-memory name -> the released checkpoints' on-disk name."""
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    return name[len("model."):] if name.startswith("model.visual.") else name


def tensor_specs(cfg: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(on-disk name, shape) of every stored tensor, from a model on the meta device (nothing allocated)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        m = Qwen2_5_VLForConditionalGeneration(cfg)
    tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    return sorted((disk_name(n), tuple(t.shape)) for n, t in m.state_dict().items() if n not in tied)


def write_pair(root: Path, specs: list[tuple[str, tuple[int, ...]]], cfg: Any, device: str, seed: int) -> None:
    """Checkpoints root/A and root/B = A + noise (bf16, one model.safetensors each), numbers drawn on `device`."""
    from safetensors.torch import save_file

    g = torch.Generator(device).manual_seed(seed)
    ta, tb = {}, {}
    for name, shape in specs:
        w = torch.randn(shape, generator=g, device=device) * 0.02
        ta[name] = w.to(torch.bfloat16).cpu()
        tb[name] = (w + torch.randn(shape, generator=g, device=device) * 1e-3).to(torch.bfloat16).cpu()
    for d, tensors in (("A", ta), ("B", tb)):
        cfg.save_pretrained(root / d)
        save_file(tensors, str(root / d / "model.safetensors"), metadata={"format": "pt"})


def peak_rss_mib() -> float:
    """Peak RSS of this process since exec (VmHWM; ru_maxrss would carry the parent's peak over a vfork)."""
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(ln.split()[1]) / 1024 for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
    import resource  # not Linux: ru_maxrss (may include the parent's peak)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def child(op: str, a: str, b: str, out: str, report: str, device: str, svd_method: str) -> None:
    """One diff (spectral, SVDs on `device`) or merge in this fresh process; its costs go to `report`."""
    from frankenscope.weights.diff import diff_pair
    from frankenscope.weights.merge import merge

    floor = peak_rss_mib()
    if op == "diff":
        run = lambda: diff_pair(a, b, out, spectral=True, device=device, svd_method=svd_method,  # noqa: E731
                                plots=False, progress=False)
    else:
        run = lambda: merge({"IN": a, "RL": b}, "IN:RL:RL", out, progress=False)  # noqa: E731
    _, wall = timed(device, run)
    cuda = torch.cuda.max_memory_allocated() / 2**20 if on_cuda(device) else None
    Path(report).write_text(json.dumps({"wall_s": wall, "peak_rss_mib": peak_rss_mib(),
                                        "rss_after_imports_mib": floor, "cuda_peak_mib": cuda}))


def part_weights(ctx: Ctx) -> dict[str, Any]:
    """Streaming diff and merge of a slice: real tensor shapes (embeddings full), fewer layers and blocks."""
    a, s, tok = ctx.args, SHAPES[ctx.args.shape], ctx.proc.tokenizer
    n_l, n_b = min(a.slice_layers, s["layers"]), min(a.slice_layers, s["v_depth"])
    cfg = make_config(a.shape, tok, layers=n_l, blocks=n_b)
    specs = tensor_specs(cfg)

    def nbytes(sp: list[tuple[str, tuple[int, ...]]], layers_only: bool = False) -> int:
        return sum(2 * math.prod(x) for n, x in sp if not layers_only or ".layers." in n or ".blocks." in n)

    full_specs = tensor_specs(make_config(a.shape, tok))
    part, full = nbytes(specs), nbytes(full_specs)
    k = nbytes(full_specs, True) / nbytes(specs, True)  # full-model layer bytes per slice layer byte
    low = (part - nbytes(specs, True) + k * nbytes(specs, True)) / part
    root = a.tmp / "weights"
    _, build_s = timed(a.device, lambda: write_pair(root, specs, cfg, a.device, a.seed))
    res: dict[str, Any] = {
        "slice": f"{n_l}/{s['layers']} LLM layers, {n_b}/{s['v_depth']} vision blocks, full embeddings, projector "
                 "and patch embedding", "bytes_per_checkpoint": part, "full_bytes_per_checkpoint": full,
        "build_s": build_s, "svd_method": a.svd_method, "svd_device": a.device,
        "extrapolated": "full-model wall from the slice's: merge x full bytes / slice bytes (it copies bytes); diff "
                        "between that and x layer bytes (full / slice): exact if a non-layer byte costs as much as "
                        "a layer byte, resp. nothing (no SVD of the embeddings). Peak memory is set by the largest "
                        "tensor (the embeddings, in the slice), so the slice's peak stands for the full model's",
        "rows": []}
    for op in ("diff", "merge"):
        rep = root / f"{op}.json"
        dev = a.device if op == "diff" else "cpu"  # the merge copies bytes: no CUDA context in its RSS
        subprocess.run([sys.executable, __file__, "--child", op, str(root / "A"), str(root / "B"), str(root / op),
                        str(rep), "--device", dev, "--svd-method", a.svd_method], check=True)
        r = res[op] = json.loads(rep.read_text())
        est = r["extrapolated_full_wall_s"] = [r["wall_s"] * low, r["wall_s"] * (k if op == "diff" else low)]
        gpu = f", SVD GPU peak {fmt(r['cuda_peak_mib'], ' MiB')}" if r["cuda_peak_mib"] is not None else ""
        res["rows"].append([f"{op} (slice: {part / 2**20:.4g} of {full / 2**20:.4g} MiB bf16)",
                            f"{fmt(r['wall_s'], ' s')}, peak RSS {fmt(r['peak_rss_mib'], ' MiB')}",
                            f"{'-'.join(dict.fromkeys(fmt(x) for x in est))} s full model (extrapolated)", "",
                            f"RSS after imports {fmt(r['rss_after_imports_mib'], ' MiB')}{gpu}"])
    return res


def table(parts: dict[str, dict[str, Any]]) -> str:
    """Markdown summary of every part (the rows the parts return, plus their peak GPU memory)."""
    out = ["| part | measured | measured or *extrapolated* | ratio | check | GPU peak MiB |", "|---|---|---|---|---|---|"]
    for name, r in parts.items():
        rows = r.get("rows") if r["status"] == "ok" else [[name, r["status"], r.get("reason") or r.get("error"), "", ""]]
        out += [f"| {' | '.join(row)} | {fmt(r.get('cuda_peak_mib'))} |" for row in rows]
    return "\n".join(out)


def prepare(args: argparse.Namespace, proc: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """Organism probe pairs (tasks interleaved), and their target images as items with PNG files."""
    from frankenscope.data.schema import Item
    from frankenscope.organism.suite import probe_inputs as organism_probe_inputs

    need = max(args.pairs, args.skip_items, args.attn_items, args.prompts)
    per_task = math.ceil(need / 4)
    inputs = organism_probe_inputs(n=per_task, seed=args.seed)
    inputs = [inputs[t * per_task + j] for j in range(per_task) for t in range(len(inputs) // per_task)][:need]
    items, images = [], []
    for inp in inputs:
        images.append(inp.images()[0].resize((args.side, args.side)))
        path = args.tmp / f"{inp.pair.id}.png"
        images[-1].save(path)
        items.append(Item(id=inp.pair.id, task=inp.pair.task, prompt=inp.pair.prompt, answer=inp.pair.target_answer,
                          answer_type=inp.pair.answer_type, image=str(path)))
    return inputs, items, images


def run(args: argparse.Namespace) -> int:
    """Build inputs and model, run every part not skipped, write the JSON after each, print the table."""
    import transformers

    from frankenscope.io import write_json_atomic

    t_start, s = time.perf_counter(), SHAPES[args.shape]
    dev_name = torch.cuda.get_device_name(args.device) if on_cuda(args.device) else platform.processor() or "cpu"
    doc: dict[str, Any] = {
        "kind": "gpu_check", "argv": sys.argv[1:], "shape": args.shape, "shape_spec": s, "device": args.device,
        "device_name": dev_name, "dtype": args.dtype_name, "seed": args.seed, "torch_threads": torch.get_num_threads(),
        "init_std": {"text": init_std(s["hidden"]), "vision": init_std(s["v_hidden"])},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
                     "python": platform.python_version()},
        "sizes": {k: getattr(args, k) for k in SIZES["gpu"]},
        "numbers": "measured, except those under keys containing 'extrapolated' (formula alongside)", "parts": {}}
    proc = make_processor(args.side)
    inputs, items, images = prepare(args, proc)
    model, doc["build_s"] = timed(args.device, lambda: build_model(args.shape, proc, args.device,
                                                                   getattr(torch, args.dtype_name), args.seed))
    doc["n_params"] = sum(p.numel() for p in model.parameters())
    print(f"{args.shape}: {doc['n_params'] / 1e9:.3f} B params on {dev_name} ({args.dtype_name}), "
          f"built in {doc['build_s']:.1f} s", flush=True)
    ctx = Ctx(args, model, proc, inputs, items, images)
    for name in PARTS:
        if name in args.skip:
            doc["parts"][name] = {"status": "skipped", "reason": "--skip"}
            continue
        if on_cuda(args.device):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            r = globals()[f"part_{name}"](ctx)
            r.setdefault("status", "ok")
        except Exception as e:  # recorded; the other parts still run
            r = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        r["part_wall_s"] = time.perf_counter() - t0
        r["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if on_cuda(args.device) else None
        doc["parts"][name] = r
        print(f"[{name}] {r['status']} in {r['part_wall_s']:.1f} s {r.get('error', '')}", flush=True)
        doc["total_s"] = time.perf_counter() - t_start
        if args.out:
            write_json_atomic(args.out, doc)
    doc["table"] = table(doc["parts"])
    print(f"\n{doc['table']}\n\ntotal {doc['total_s']:.1f} s (GPU peak includes the model's weights)", flush=True)
    if args.out:
        write_json_atomic(args.out, doc)
    return int(any(p["status"] == "error" for p in doc["parts"].values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=list(SHAPES), default="7b")
    ap.add_argument("--tiny", action="store_true", help="same as --shape tiny (the CPU smoke test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on GPU, else fp32")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (written atomically after every part)")
    ap.add_argument("--skip", action="append", choices=PARTS, default=[], help="skip a part (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-tokens", type=int, default=2048, help="skipping budget of the extrapolation")
    ap.add_argument("--slice-layers", type=int, default=4, help="LLM layers and vision blocks in the weights slice (>= 3)")
    ap.add_argument("--svd-method", choices=["svd", "gram"], default="svd", help="the diff's SVD method")
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM enforce_eager (faster start, slower decode)")
    ap.add_argument("--workdir", default=None, help="parent of the temporary folder (default: the system's)")
    for k, v in SIZES["gpu"].items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=None,
                        help=f"default {v} ({SIZES['tiny'][k]} with --tiny)")
    ap.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)  # OP A B OUT REPORT
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child, args.device, args.svd_method)
        return 0
    args.shape = "tiny" if args.tiny else args.shape
    for k, v in SIZES["tiny" if args.shape == "tiny" else "gpu"].items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    if args.tokens < 2 or args.slice_layers < 3 or min(args.pairs, args.skip_items, args.attn_items, args.prompts,
                                                        args.batch) < 1:
        ap.error("--tokens must be >= 2 (the skipping fit needs two points), --slice-layers >= 3 (the merge's "
                 "three regions), the counts >= 1")
    args.dtype_name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[
        args.dtype or ("bf16" if on_cuda(args.device) else "fp32")]
    args.side = SHAPES[args.shape]["side"]
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.workdir) as tmp:
        args.tmp = Path(tmp)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
