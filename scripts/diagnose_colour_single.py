"""Diagnostic for issue 3: can a fresh small organism learn the colour of ONE circle of radius R?

Usage: python scripts/diagnose_colour_single.py RADIUS LR. Trains 3 x 100 steps on 1000 images and
prints held-out accuracy (100 images) after each round (initializer range 0.02, as first diagnosed;
the recipe now uses 0.06). Chance is 0.25.
"""

from __future__ import annotations

import random
import sys

from diagnose_colour import train_rounds  # scripts/ is on sys.path when a script in it runs
from PIL import Image, ImageDraw

from frankenscope.data.schema import Item
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
    train_rounds(make(1000, 1, radius), make(100, 2, radius), steps=100, lr=lr, max_new_tokens=6,
                 label=f"radius {radius} lr {lr}")


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
