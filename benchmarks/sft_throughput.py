"""Training throughput of the organism's SFT loop: length grouping, fused AdamW, patch embedding, encoding.

For the Base and the IN data of the small recipe (a 1/20 sample of each), trains a fresh small organism
for `--steps` steps in each setting, rotating the order of the settings per repetition (this machine's
speed drifts by ~15% between minutes, so settings are measured side by side), and prints the median
milliseconds per example, the padding factor (padded / real tokens) and the ratio to the first setting:

- `plain`:   batch 8, plain shuffling, torch's default AdamW (on CPU a per-tensor loop), Conv3d patch
             embedding, examples encoded by the processor;
- `grouped`: + length grouping 16;
- `fused`:   + fused AdamW;
- `matmul`:  + the patch embedding run as a matmul;
- `fast`:    + the organism's fast encoding (`OrganismProcessor.fast_call`): the recipe's SFT loop;
- `fast-b16`: the same at batch 16 (per example; half the steps cover the same data).

Usage: .venv/bin/python benchmarks/sft_throughput.py [--steps 40] [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from frankenscope.adapters import get_adapter
from frankenscope.organism.build import recipe_for, stage_examples
from frankenscope.organism.model import build_organism
from frankenscope.organism.sft import train_sft

SETTINGS: dict[str, dict[str, int | bool]] = {
    "plain": dict(batch_size=8, length_group=1, fused=False, matmul_patch_embed=False, fast_encode=False),
    "grouped": dict(batch_size=8, length_group=16, fused=False, matmul_patch_embed=False, fast_encode=False),
    "fused": dict(batch_size=8, length_group=16, fused=True, matmul_patch_embed=False, fast_encode=False),
    "matmul": dict(batch_size=8, length_group=16, fused=True, matmul_patch_embed=True, fast_encode=False),
    "fast": dict(batch_size=8, length_group=16, fused=True, matmul_patch_embed=True, fast_encode=True),
    "fast-b16": dict(batch_size=16, length_group=16, fused=True, matmul_patch_embed=True, fast_encode=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = recipe_for("small")
    r = r.__class__(**{**r.to_dict(), **{k: {t: max(20, n // 20) for t, n in getattr(r, k).items()}
                                         for k in ("base_items", "in_items", "in_replay")}})
    names = list(SETTINGS)
    for stage in ("base", "in"):
        examples = stage_examples(stage, r, 0)
        per_example: dict[str, list[float]] = {n: [] for n in names}
        padding: dict[str, float] = {}
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                kw = dict(SETTINGS[name])
                model, processor = build_organism("small", seed=0, initializer_range=0.06)
                if not kw.pop("fast_encode"):  # the processor's own path for every example
                    processor.fast_call = lambda text, image: None
                t0 = time.perf_counter()
                stats = train_sft(model, processor, get_adapter(model), examples, steps=args.steps,
                                  seed=rep, progress=False, **kw)  # type: ignore[arg-type]
                per_example[name].append((time.perf_counter() - t0) / (args.steps * int(kw["batch_size"])))
                padding[name] = stats["padding"]
        ref = statistics.median(per_example[names[0]])
        cells = [f"{n} {statistics.median(v) * 1000:.1f} ms/ex (x{padding[n]:.2f} pad, "
                 f"{statistics.median(v) / ref:.2f}x)" for n, v in per_example.items()]
        print(f"{stage:4s} ({len(examples)} examples, {args.threads} threads, {args.steps} steps x {args.reps}): "
              + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
