"""Diagnostic for issue 3: can a fresh small organism learn the colour of ONE circle of radius R?

Usage: python scripts/diagnose_colour_single.py RADIUS LR. Trains 3 x 100 steps on 1000 images and
prints held-out accuracy (100 images) after each round. Chance is 0.25.
"""

from __future__ import annotations

import random
import sys
import time

from PIL import Image, ImageDraw

from frankenscope.adapters import get_adapter
from frankenscope.data.schema import Item
from frankenscope.evaluate.extract import grade
from frankenscope.evaluate.runner import HFGenerator
from frankenscope.organism.model import build_organism
from frankenscope.organism.sft import Example, train_sft
from frankenscope.organism.tasks import BACKGROUND, COLOURS, IMAGE_SIZE


def make(n: int, seed: int, radius: int) -> list[tuple[Item, Image.Image]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        colour = rng.choice(list(COLOURS))
        img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
        x, y = rng.randint(radius, IMAGE_SIZE - 1 - radius), rng.randint(radius, IMAGE_SIZE - 1 - radius)
        ImageDraw.Draw(img).ellipse([x - radius, y - radius, x + radius, y + radius], fill=COLOURS[colour])
        out.append((Item(id=str(i), task="colour", prompt="What colour is the shape?", answer=colour,
                         answer_type="word"), img))
    return out


def main(radius: int, lr: float) -> None:
    model, proc = build_organism("small")
    adapter = get_adapter(model)
    train = [Example(it.prompt, it.answer, img) for it, img in make(1000, 1, radius)]
    heldout = make(100, 2, radius)
    gen = HFGenerator(model, proc, adapter, batch_size=32, max_new_tokens=6, progress=False)
    for rnd in range(3):
        t0 = time.time()
        train_sft(model, proc, adapter, train, steps=100, lr=lr, progress=False, seed=rnd, warmup=20)
        outs = gen([it for it, _ in heldout], images=[img for _, img in heldout])
        acc = sum(grade(o, it) for (it, _), o in zip(heldout, outs, strict=True)) / len(heldout)
        print(f"radius {radius} lr {lr} round {rnd}: {time.time() - t0:.0f}s, accuracy {acc:.2f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
