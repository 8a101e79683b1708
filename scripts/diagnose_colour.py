"""Diagnostic for the organism's colour blindness (issue 3).

SFT a fresh small organism on the `attribute` task alone (colour or shape of the largest object) and
print held-out accuracy after every 150 steps. Chance is about 0.25; a model that uses colour should
climb well above it. Usage: python scripts/diagnose_colour.py [LR]
"""

from __future__ import annotations

import sys
import time

import torch
from PIL import Image

from frankenscope.adapters import get_adapter
from frankenscope.data.schema import Item
from frankenscope.evaluate.extract import grade
from frankenscope.evaluate.runner import HFGenerator
from frankenscope.organism.model import build_organism
from frankenscope.organism.sft import Example, train_sft
from frankenscope.organism.tasks import generate_items


def train_rounds(train: list[tuple[Item, Image.Image]], heldout: list[tuple[Item, Image.Image]], *, steps: int,
                 lr: float, max_new_tokens: int, label: str, rounds: int = 3) -> None:
    """SFT a fresh small organism (initializer range 0.02) for `rounds` x `steps` steps on `train`, printing
    the held-out accuracy (and the first answers) after each round."""
    model, proc = build_organism("small")
    adapter = get_adapter(model)
    examples = [Example(it.prompt, it.answer, img) for it, img in train]
    gen = HFGenerator(model, proc, adapter, batch_size=32, max_new_tokens=max_new_tokens, progress=False)
    for rnd in range(rounds):
        t0 = time.time()
        train_sft(model, proc, adapter, examples, steps=steps, lr=lr, progress=False, seed=rnd, warmup=20)
        outs = gen([it for it, _ in heldout], images=[img for _, img in heldout])
        acc = sum(grade(o, it) for (it, _), o in zip(heldout, outs, strict=True)) / len(heldout)
        print(f"{label} round {rnd}: {time.time() - t0:.0f}s, held-out accuracy {acc:.2f}, answers {outs[:6]}",
              flush=True)


def main(lr: float) -> None:
    torch.set_num_threads(1)
    train_rounds(generate_items("attribute", 2000, 5), generate_items("attribute", 100, 9000), steps=150, lr=lr,
                 max_new_tokens=10, label=f"lr {lr}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3e-4)
