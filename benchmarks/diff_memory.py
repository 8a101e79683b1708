"""Peak memory and wall time of `frankenscope diff` against the obvious in-memory approach.

Builds two synthetic checkpoints with the real tensor shapes and on-disk names of Qwen2.5-VL-3B
(hidden 2048, intermediate 11008, 16 heads, 2 KV heads, head_dim 128, vocab 151936; vision depth
32, hidden 1280, intermediate 3420, out_hidden 2048; tied lm_head, so not stored), bf16 like the
released weights, with a slice of the 36 LLM layers and 32 vision blocks (`--layers`, `--vision-blocks`;
embeddings, projector and patch embedding are always full size, so the largest tensor is the real one).
B = A + small noise. Each approach runs in its own subprocess; peak RSS comes from that child's
rusage (os.wait4), wall time from the parent (both include interpreter start and imports):

  * streaming: `frankenscope.weights.diff.diff_pair(A, B)` (tensor by tensor from safetensors);
  * obvious:   `from_pretrained` both checkpoints (bf16), subtract the state dicts into a dict of
               float32 deltas, then compute the same per-tensor numbers from that dict;
  * idle:      a child that only imports torch, transformers and frankenscope (the floor).

Usage: .venv/bin/python benchmarks/diff_memory.py [--layers 4] [--vision-blocks 4] [--spectral]
Target (issue): streaming peak RSS <= 1 GB + 4 x the largest tensor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_LAYERS, FULL_BLOCKS = 36, 32


def config_3b(layers: int, blocks: int):
    from transformers import Qwen2_5_VLConfig

    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=layers,
                         num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=128000, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=blocks, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[i for i in (7, 15, 23, 31) if i < blocks] or [blocks - 1]),
        tie_word_embeddings=True,
    )
    cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return cfg


def disk_name(name: str) -> str:
    """In-memory (transformers 5) name -> the on-disk name of the released checkpoints."""
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    if name.startswith("model.visual."):
        return name[len("model."):]
    return name


def tensor_specs(cfg) -> list[tuple[str, tuple[int, ...]]]:
    """(on-disk name, shape) of every stored tensor, from a model built on the meta device."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    return sorted((disk_name(n), tuple(t.shape)) for n, t in model.state_dict().items() if n != "lm_head.weight")


def _write_header(f, specs, metadata) -> None:
    header = {"__metadata__": metadata}
    off = 0
    for name, shape in specs:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)


def build_pair(root: Path, layers: int, blocks: int, shard_bytes: int, seed: int) -> tuple[Path, Path, dict]:
    """Write checkpoints A and B (= A + noise) tensor by tensor, sharded with an index like HF."""
    import torch

    cfg = config_3b(layers, blocks)
    specs = tensor_specs(cfg)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in specs:
        nbytes = 2 * int(torch.Size(shape).numel())
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    dirs = (root / "A", root / "B")
    for d in dirs:
        d.mkdir(parents=True)
        cfg.save_pretrained(d)
    g = torch.Generator().manual_seed(seed)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        with open(dirs[0] / fname, "wb") as fa, open(dirs[1] / fname, "wb") as fb:
            for f in (fa, fb):
                _write_header(f, shard, {"format": "pt"})
            for name, shape in shard:
                a = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
                b = (a.float() + torch.randn(shape, generator=g) * 1e-3).to(torch.bfloat16)
                fa.write(a.reshape(-1).view(torch.uint8).numpy().tobytes())
                fb.write(b.reshape(-1).view(torch.uint8).numpy().tobytes())
                weight_map[name] = fname
                del a, b
    index = {"metadata": {"total_size": sum(2 * int(torch.Size(s).numel()) for _, s in specs)},
             "weight_map": weight_map}
    for d in dirs:
        (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    largest = max(specs, key=lambda s: int(torch.Size(s[1]).numel()))
    full = tensor_specs(config_3b(FULL_LAYERS, FULL_BLOCKS))
    info = {"a": str(dirs[0]), "b": str(dirs[1]), "n_tensors": len(specs),
            "bytes_per_checkpoint": index["metadata"]["total_size"], "n_shards": len(shards),
            "largest": largest[0], "largest_shape": list(largest[1]),
            "largest_bytes": 2 * int(torch.Size(largest[1]).numel()),
            "full_3b_bytes": sum(2 * int(torch.Size(shape).numel()) for _, shape in full)}
    (root / "info.json").write_text(json.dumps(info))
    return dirs[0], dirs[1], info


# ------------------------------------------------------------------------------------------
# children
# ------------------------------------------------------------------------------------------
def child_idle() -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import frankenscope.weights.diff  # noqa: F401


def child_diff(a: str, b: str, out: str, spectral: bool, svd_method: str) -> None:
    from frankenscope.weights.diff import diff_pair

    diff_pair(a, b, out, spectral=spectral, svd_method=svd_method, plots=False, progress=False)


def child_obvious(a: str, b: str, out: str, spectral: bool, svd_method: str) -> None:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging

    from frankenscope.weights.diff import DEFAULT_MAX_SVD_ELEMENTS, frobenius, is_selected, spectral_metrics

    logging.disable_progress_bar()
    ma = Qwen2_5_VLForConditionalGeneration.from_pretrained(a, dtype=torch.bfloat16)
    mb = Qwen2_5_VLForConditionalGeneration.from_pretrained(b, dtype=torch.bfloat16)
    sa, sb = ma.state_dict(), mb.state_dict()
    seen, deltas = set(), {}
    for k in sa:
        if sa[k].data_ptr() in seen:  # tied lm_head: the same tensor as the embeddings
            continue
        seen.add(sa[k].data_ptr())
        deltas[k] = sb[k].float() - sa[k].float()
    rows = {}
    for k, d in deltas.items():
        row = {"fro": frobenius(d), "fro_ref": frobenius(sa[k].float())}
        if spectral and is_selected(k) and d.dim() >= 2 and d.numel() <= DEFAULT_MAX_SVD_ELEMENTS:
            row.update(spectral_metrics(d, method=svd_method, fro=row["fro"]))
        rows[k] = row
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "obvious.json").write_text(json.dumps(rows))


def run_child(args: list[str]) -> tuple[float, float]:
    """Run this script as a child; return (wall seconds, peak RSS in MiB) of that child alone."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, __file__, *args])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4, help=f"LLM layers to build (of {FULL_LAYERS}).")
    ap.add_argument("--vision-blocks", type=int, default=4, help=f"Vision blocks to build (of {FULL_BLOCKS}).")
    ap.add_argument("--spectral", action="store_true", help="Also compute the SVD metrics in both approaches.")
    ap.add_argument("--svd-method", default="svd", choices=["svd", "gram"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the measured children.")
    ap.add_argument("--shard-gb", type=float, default=1.0, help="Shard size of the synthetic checkpoints.")
    ap.add_argument("--workdir", type=Path, default=None, help="Where to build (default: a temp folder).")
    ap.add_argument("--keep", action="store_true", help="Keep the synthetic checkpoints.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=["build", "idle", "diff", "obvious"], help=argparse.SUPPRESS)
    ap.add_argument("--a", help=argparse.SUPPRESS)
    ap.add_argument("--b", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "build":
        build_pair(Path(args.out), args.layers, args.vision_blocks, int(args.shard_gb * 1024**3), args.seed)
        return None
    if args.child == "idle":
        return child_idle()
    if args.child in ("diff", "obvious"):
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        fn = child_diff if args.child == "diff" else child_obvious
        return fn(args.a, args.b, args.out, args.spectral, args.svd_method)

    if not (1 <= args.layers <= FULL_LAYERS and 1 <= args.vision_blocks <= FULL_BLOCKS):
        ap.error(f"--layers must be in 1..{FULL_LAYERS} and --vision-blocks in 1..{FULL_BLOCKS}")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="fs-diff-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        # every step runs in a child, so this parent stays small: a child's peak RSS starts from its
        # parent's RSS at fork time on Linux, so a parent that had built tensors would inflate them all
        build_s, _ = run_child(["--child", "build", "--out", str(root / "ckpt"), "--layers", str(args.layers),
                                "--vision-blocks", str(args.vision_blocks), "--shard-gb", str(args.shard_gb),
                                "--seed", str(args.seed)])
        info = json.loads((root / "ckpt" / "info.json").read_text())
        a, b = info["a"], info["b"]
        print(f"slice: {args.layers}/{FULL_LAYERS} LLM layers, {args.vision_blocks}/{FULL_BLOCKS} vision blocks, "
              f"full embeddings + projector + patch embedding; {info['n_tensors']} tensors, "
              f"{info['bytes_per_checkpoint'] / 2**30:.2f} GiB bf16 per checkpoint in {info['n_shards']} shard(s); "
              f"built in {build_s:.1f} s")
        print(f"spectral metrics: {'on (' + args.svd_method + ')' if args.spectral else 'off (Frobenius energy only)'}"
              f"; torch threads: {args.threads or 'default'}")
        common = ["--a", str(a), "--b", str(b)] + (["--spectral"] if args.spectral else []) + \
                 ["--svd-method", args.svd_method] + (["--threads", str(args.threads)] if args.threads else [])
        results = {"idle (imports only)": run_child(["--child", "idle"])}
        results["streaming diff"] = run_child(["--child", "diff", *common, "--out", str(root / "diff")])
        results["from_pretrained x2 + subtract"] = run_child(["--child", "obvious", *common, "--out",
                                                              str(root / "obvious")])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    largest_mib = info["largest_bytes"] / 2**20
    target = 1024 + 4 * largest_mib
    print(f"largest tensor: {info['largest']} {info['largest_shape']} bf16 = {largest_mib:.0f} MiB; "
          f"target peak RSS <= 1024 + 4 x {largest_mib:.0f} = {target:.0f} MiB")
    print(f"\n{'approach':<34} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, (wall, rss) in results.items():
        print(f"{name:<34} {wall:>8.1f} {rss:>13.0f}")
    sw, sr = results["streaming diff"]
    ow, orss = results["from_pretrained x2 + subtract"]
    print(f"\nratios obvious / streaming: wall {ow / sw:.2f}x, peak RSS {orss / sr:.2f}x")
    print(f"streaming peak RSS {sr:.0f} MiB vs target {target:.0f} MiB: {'OK' if sr <= target else 'ABOVE TARGET'}")
    print(f"(the obvious approach holds both checkpoints: {info['bytes_per_checkpoint'] / 2**30:.2f} GiB each here, "
          f"{info['full_3b_bytes'] / 2**30:.2f} GiB each for the full 3B; the streaming peak is set by the largest "
          f"tensor)")

if __name__ == "__main__":
    main()
