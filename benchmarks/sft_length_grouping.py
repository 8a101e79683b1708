"""Training throughput of the organism's SFT loop with and without length grouping.

For the Base and the IN data of the small recipe (a 1/20 sample of each), trains a fresh small organism
for `--steps` steps with `length_group` 1 (plain shuffling) and 16 (the recipe's default), alternating
the order per repetition, and prints seconds per step, the padding factor (padded / real tokens) and
the ratio. Same seed and examples for both settings.

Usage: .venv/bin/python benchmarks/sft_length_grouping.py [--steps 60] [--reps 2] [--threads 2]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = recipe_for("small")
    r = r.__class__(**{**r.to_dict(), **{k: {t: max(20, n // 20) for t, n in getattr(r, k).items()}
                                         for k in ("base_items", "in_items", "in_replay")}})
    for stage in ("base", "in"):
        examples = stage_examples(stage, r, 0)
        times: dict[int, list[float]] = {1: [], 16: []}
        padding: dict[int, float] = {}
        for rep in range(args.reps):
            for group in ((1, 16) if rep % 2 == 0 else (16, 1)):
                model, processor = build_organism("small", seed=0, initializer_range=0.06)
                t0 = time.perf_counter()
                stats = train_sft(model, processor, get_adapter(model), examples, steps=args.steps,
                                  batch_size=r.batch_size, length_group=group, seed=rep, progress=False)
                times[group].append((time.perf_counter() - t0) / args.steps)
                padding[group] = stats["padding"]
        t1, t16 = statistics.median(times[1]), statistics.median(times[16])
        print(f"{stage:4s} ({len(examples)} examples, batch {r.batch_size}, {args.threads} threads): "
              f"plain {t1 * 1000:.0f} ms/step (padding x{padding[1]:.2f}), grouped {t16 * 1000:.0f} ms/step "
              f"(padding x{padding[16]:.2f}); grouped/plain = {t16 / t1:.2f}", flush=True)


if __name__ == "__main__":
    main()
