"""Synthetic tasks for the model organism, deterministic by seed, drawn with PIL.

Every image is IMAGE_SIZE x IMAGE_SIZE (112 x 112) RGB on a light-grey background. Scenes are built
from coloured shapes (circle, square, triangle in red, green, blue, yellow) or black text. Shapes
are placed in distinct cells of a regular grid with a margin inside each cell, so they never overlap
(at least 4 px apart) and always stay inside the image.

Boxes: every box is ``[x1, y1, x2, y2]`` in pixels with x2, y2 EXCLUSIVE: the drawn pixels span
columns x1..x2-1 and rows y1..y2-1, so the width is x2 - x1. Grounding answers use this convention.

Tasks (all prompts and answers are printable ASCII, for the organism's char-level tokenizer):

Perception (category "perception", PERCEPTION_TASKS)
  counting     1-9 shapes; "How many shapes are in the image?" -> "3" (number)
  ocr          one 3-5 letter uppercase word in black -> "CAT" (word)
  grounding    1-3 shapes of distinct (colour, kind); box of the named one -> "12,40,30,58" (box)
  recognition  1-4 shapes; "Is there a red circle ...?" -> "yes"/"no", exactly balanced (yesno)
  attribute    1-3 shapes of clearly different sizes; colour or kind of the largest -> "red" (word)
Vision-to-reasoning (category "v2r", V2R_TASKS), each with `description` and `solution`
  more_than    circles and squares; "How many more circles than squares are there?" (number, may be 0)
  digit_sum    2-3 digits drawn as text; "What is the sum of the digits ...?" (number)
Text only (category "text", TEXT_TASKS), no image, with `solution`
  word_problem short arithmetic word problems (number)

Solutions share one format: reasoning sentence(s), then a final line ``Answer: X``.

Training only (TRAINING_TASKS; never evaluated, not in ITEM_TASKS)
  recognition_binding  2-4 shapes; like recognition, but every "no" names an absent conjunction of a
               present colour and a present kind (a blue circle among a blue square and a red circle)

Probe pairs (PROBE_TASKS) follow the paper's format: same prompt, two same-size images, different
answers; the source differs from the target only in what changes the answer (counting: objects
added/removed; ocr: another word at the same place; grounding: the named shape moved to another
cell, other shapes unchanged, IoU 0; recognition: the named shape removed).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from frankenscope.data.schema import Item, ProbePair
from frankenscope.errors import FrankenscopeError

IMAGE_SIZE = 112  # pixels per side: (112/14)^2 patches / 2^2 merge = 16 image tokens

PERCEPTION_TASKS = ("counting", "ocr", "grounding", "recognition", "attribute")
V2R_TASKS = ("more_than", "digit_sum")
TEXT_TASKS = ("word_problem",)
ITEM_TASKS = PERCEPTION_TASKS + V2R_TASKS + TEXT_TASKS
TRAINING_TASKS = ("recognition_binding",)
PROBE_TASKS = ("counting", "ocr", "grounding", "recognition")

#: The category (schema.CATEGORIES) of every item task.
TASK_CATEGORY: dict[str, str] = {
    **{t: "perception" for t in PERCEPTION_TASKS},
    **{t: "v2r" for t in V2R_TASKS},
    **{t: "text" for t in TEXT_TASKS},
    "recognition_binding": "perception",
}

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 190, 0),
}
BACKGROUND = (240, 240, 240)
TEXT_COLOUR = (0, 0, 0)
WORDS = (
    "CAT", "DOG", "SUN", "RED", "BOX", "CAR", "HAT", "MAP", "PEN", "CUP", "BUS", "KEY",
    "FISH", "BIRD", "TREE", "STAR", "MOON", "BOOK", "LAMP", "RAIN", "SHIP", "FROG", "DOOR", "MILK",
    "APPLE", "HOUSE", "TRAIN", "CLOUD", "HORSE", "LIGHT", "WATER", "CHAIR",
)

MARGIN = 2  # px kept free on each side of a grid cell: shapes in neighbouring cells are >= 4 px apart
GRID = 4  # scenes are a 4 x 4 grid of 28 px cells: each cell is exactly one merged image token (2 x 2 patches)
JITTER = 2  # px an object may sit off its cell's centre

COUNTING_PROMPT = "How many shapes are in the image?"
OCR_PROMPT = "What word is written in the image?"
GROUNDING_PROMPT = "Give the bounding box of the {name} as x1,y1,x2,y2."
RECOGNITION_PROMPT = "Is there a {name} in the image? Answer yes or no."
ATTRIBUTE_PROMPTS = {
    "colour": "What colour is the largest shape? Answer with one word.",
    "shape": "What shape is the largest object? Answer with one word.",
}
MORE_THAN_PROMPT = "How many more circles than squares are there?"
DIGIT_SUM_PROMPT = "What is the sum of the digits shown in the image?"


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Shape:
    """One drawn shape: kind (SHAPES), colour (COLOURS key), box [x1, y1, x2, y2] (x2, y2 exclusive)."""

    kind: str
    colour: str
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "colour": self.colour, "box": list(self.box)}


def _canvas() -> Image.Image:
    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)


def draw_shapes(shapes: list[Shape]) -> Image.Image:
    """Render shapes on a fresh canvas (no anti-aliasing: every shape pixel has its exact colour)."""
    img = _canvas()
    draw = ImageDraw.Draw(img)
    for s in shapes:
        x1, y1, x2, y2 = s.box
        xy = (x1, y1, x2 - 1, y2 - 1)  # PIL boxes are inclusive
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            draw.ellipse(xy, fill=fill)
        elif s.kind == "square":
            draw.rectangle(xy, fill=fill)
        elif s.kind == "triangle":
            apex = x1 + (x2 - 1 - x1) // 2
            draw.polygon([(apex, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)
        else:
            raise FrankenscopeError(f"unknown shape kind {s.kind!r}; known: {', '.join(SHAPES)}")
    return img


def _jittered(rng: random.Random, slack: int) -> int:
    """Offset in [0, slack] of something centred in `slack` px of free room, moved by up to JITTER px."""
    return min(slack, max(0, slack // 2 + rng.randint(-JITTER, JITTER)))


def _grid_boxes(rng: random.Random, sizes: list[int], grid: int = GRID,
                cells: list[int] | None = None) -> list[tuple[int, int, int, int]]:
    """Square boxes of the given side lengths, one per distinct cell of a grid x grid layout.

    `cells` fixes the cell of each box (default: distinct random cells). A box sits at its cell's
    centre, moved by up to JITTER px in x and y, and keeps MARGIN px free on every side of the cell.
    """
    cell = IMAGE_SIZE // grid
    if cells is None:
        cells = rng.sample(range(grid * grid), len(sizes))
    boxes = []
    for c, side in zip(cells, sizes, strict=True):
        slack = cell - 2 * MARGIN - side
        if slack < 0:
            raise ValueError(f"shape side {side} does not fit a {cell}px cell")
        cx, cy = (c % grid) * cell + MARGIN, (c // grid) * cell + MARGIN
        ox, oy = _jittered(rng, slack), _jittered(rng, slack)
        boxes.append((cx + ox, cy + oy, cx + ox + side, cy + oy + side))
    return boxes


@functools.lru_cache(maxsize=64)
def _text_mask(text: str, size: int) -> Image.Image:
    """A tight "L" mask of `text` about `size` px tall (255 = ink).

    Uses Pillow's built-in scalable font (`ImageFont.load_default(size=...)`, Pillow >= 10.1 with
    FreeType); otherwise the fixed bitmap default font is drawn and scaled up with nearest neighbour.
    """
    try:
        font: Any = ImageFont.load_default(size=size)
        scale = 1
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType
        font = ImageFont.load_default()
        scale = None
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    tight = mask.getbbox()
    if tight:
        mask = mask.crop(tight)
    if scale is None:  # capital letters of the scalable font are about 0.7 * size tall
        scale = max(1, round(0.7 * size / mask.height))
        mask = mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.NEAREST)
    return mask


def _paste_text(img: Image.Image, mask: Image.Image, x: int, y: int) -> tuple[int, int, int, int]:
    """Paste black text at (x, y); return its box (x2, y2 exclusive)."""
    img.paste(TEXT_COLOUR, (x, y, x + mask.width, y + mask.height), mask)
    return (x, y, x + mask.width, y + mask.height)


def _word_mask(word: str, rng: random.Random) -> Image.Image:
    """Mask of `word` at a random large font size, shrunk until it fits with a 4 px border."""
    size = rng.randint(24, 34)
    mask = _text_mask(word, size)
    while (mask.width > IMAGE_SIZE - 8 or mask.height > IMAGE_SIZE - 8) and size > 8:
        size -= 2
        mask = _text_mask(word, size)
    return mask


# --------------------------------------------------------------------------- text helpers


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _and_list(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _scene_description(shapes: list[Shape]) -> str:
    """The shapes in reading order (grid rows top to bottom, left to right within a row)."""
    if not shapes:
        return "The image is empty."
    cell = IMAGE_SIZE // GRID
    ordered = sorted(shapes, key=lambda s: (s.box[1] // cell, s.box[0] // cell))
    return "The image shows " + _and_list([f"a {s.name}" for s in ordered]) + "."


def _random_shapes(rng: random.Random, n: int, grid: int, sizes: tuple[int, int],
                   distinct: bool = False) -> list[Shape]:
    """n random shapes in distinct grid cells; `distinct` forbids repeated (colour, kind)."""
    if distinct:
        kinds = rng.sample([(c, k) for c in COLOURS for k in SHAPES], n)
    else:
        kinds = [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(n)]
    boxes = _grid_boxes(rng, [rng.randint(*sizes) for _ in range(n)], grid)
    return [Shape(k, c, b) for (c, k), b in zip(kinds, boxes, strict=True)]


# --------------------------------------------------------------------------- item generators

# Each generator returns (prompt, answer, description, solution, meta, image).
_Gen = tuple[str, str, str | None, str | None, dict[str, Any], Image.Image | None]


def _gen_counting(rng: random.Random, i: int, seed: int) -> _Gen:
    n = rng.randint(1, 9)
    shapes = _random_shapes(rng, n, grid=GRID, sizes=(16, 22))
    desc = f"The image shows {_plural(n, 'shape')}."
    meta = {"count": n, "objects": [s.to_dict() for s in shapes]}
    return COUNTING_PROMPT, str(n), desc, None, meta, draw_shapes(shapes)


def _gen_ocr(rng: random.Random, i: int, seed: int) -> _Gen:
    word = rng.choice(WORDS)
    mask = _word_mask(word, rng)
    img = _canvas()
    x = rng.randint(4, IMAGE_SIZE - 4 - mask.width)
    y = rng.randint(4, IMAGE_SIZE - 4 - mask.height)
    box = _paste_text(img, mask, x, y)
    meta = {"word": word, "box": list(box)}
    return OCR_PROMPT, word, f"The image shows the word {word}.", None, meta, img


def _box_str(box: tuple[int, int, int, int] | list[int]) -> str:
    return ",".join(str(int(v)) for v in box)


def _gen_grounding(rng: random.Random, i: int, seed: int) -> _Gen:
    shapes = _random_shapes(rng, rng.randint(1, 3), grid=GRID, sizes=(14, 22), distinct=True)
    target = rng.choice(shapes)
    meta = {"object_name": target.name, "target_index": shapes.index(target),
            "objects": [s.to_dict() for s in shapes]}
    prompt = GROUNDING_PROMPT.format(name=target.name)
    return prompt, _box_str(target.box), _scene_description(shapes), None, meta, draw_shapes(shapes)


def _recognition_query(rng: random.Random, shapes: list[Shape], want_yes: bool, binding: bool = False) -> str:
    """Name of a present shape (yes) or of an absent (colour, kind), preferably a near miss (no).

    binding: a "no" names an absent conjunction of a present colour and a present kind whenever the
    scene has one, the only negatives that cannot be answered by checking colour and kind separately.
    """
    if want_yes:
        return rng.choice(shapes).name
    present = {(s.colour, s.kind) for s in shapes}
    absent = [(c, k) for c in COLOURS for k in SHAPES if (c, k) not in present]
    near = [(c, k) for c, k in absent if any(c == pc or k == pk for pc, pk in present)]
    colours, kinds = {c for c, _ in present}, {k for _, k in present}
    if binding and (both := [(c, k) for c, k in absent if c in colours and k in kinds]):
        colour, kind = rng.choice(both)
    else:
        colour, kind = rng.choice(near if near and rng.random() < 0.7 else absent)
    return f"{colour} {kind}"


def _gen_recognition(rng: random.Random, i: int, seed: int, binding: bool = False) -> _Gen:
    # Items come in consecutive pairs (0,1), (2,3), ... holding one "yes" and one "no" each.
    want_yes = (i % 2 == 0) == (random.Random(f"recognition-balance:{seed}:{i // 2}").random() < 0.5)
    shapes = _random_shapes(rng, rng.randint(2 if binding else 1, 4), grid=GRID, sizes=(16, 22), distinct=True)
    name = _recognition_query(rng, shapes, want_yes, binding)
    answer = "yes" if want_yes else "no"
    meta = {"object_name": name, "objects": [s.to_dict() for s in shapes]}
    return RECOGNITION_PROMPT.format(name=name), answer, _scene_description(shapes), None, meta, draw_shapes(shapes)


def _gen_recognition_binding(rng: random.Random, i: int, seed: int) -> _Gen:
    return _gen_recognition(rng, i, seed, binding=True)


ATTRIBUTE_SIZES = (8, 12, 17, 24)  # each >= 1.4x the previous: the largest shape is unambiguous


def _gen_attribute(rng: random.Random, i: int, seed: int) -> _Gen:
    n = rng.randint(1, 3)
    sizes = rng.sample(ATTRIBUTE_SIZES, n)
    kinds = [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(n)]
    boxes = _grid_boxes(rng, sizes)
    shapes = [Shape(k, c, b) for (c, k), b in zip(kinds, boxes, strict=True)]
    largest = shapes[sizes.index(max(sizes))]
    asked = rng.choice(("colour", "shape"))
    answer = largest.colour if asked == "colour" else largest.kind
    desc = f"The largest shape is a {largest.name}."
    meta = {"asked": asked, "largest_index": shapes.index(largest), "objects": [s.to_dict() for s in shapes]}
    return ATTRIBUTE_PROMPTS[asked], answer, desc, None, meta, draw_shapes(shapes)


def _gen_more_than(rng: random.Random, i: int, seed: int) -> _Gen:
    n_circles = rng.randint(1, 8)
    n_squares = rng.randint(0, min(n_circles, 9 - n_circles))
    kinds = ["circle"] * n_circles + ["square"] * n_squares
    rng.shuffle(kinds)
    boxes = _grid_boxes(rng, [rng.randint(16, 22) for _ in kinds])
    shapes = [Shape(k, rng.choice(list(COLOURS)), b) for k, b in zip(kinds, boxes, strict=True)]
    diff = n_circles - n_squares
    counted = f"{_plural(n_circles, 'circle')} and {_plural(n_squares, 'square')}"
    desc = f"The image shows {counted}."
    verb = "is" if n_circles == 1 else "are"
    solution = f"There {verb} {counted}. {n_circles} - {n_squares} = {diff}.\nAnswer: {diff}"
    meta = {"circles": n_circles, "squares": n_squares, "objects": [s.to_dict() for s in shapes]}
    return MORE_THAN_PROMPT, str(diff), desc, solution, meta, draw_shapes(shapes)


def _gen_digit_sum(rng: random.Random, i: int, seed: int) -> _Gen:
    digits = [rng.randint(1, 9) for _ in range(rng.randint(2, 3))]
    img = _canvas()
    cell = IMAGE_SIZE // GRID
    boxes = []
    for c, d in zip(sorted(rng.sample(range(GRID * GRID), len(digits))), digits, strict=True):
        mask = _text_mask(str(d), rng.randint(24, 28))  # about 17-20 px tall: one digit per cell (image token)
        cx, cy = (c % GRID) * cell, (c // GRID) * cell
        sx, sy = cell - 2 * MARGIN - mask.width, cell - 2 * MARGIN - mask.height
        x = cx + MARGIN + _jittered(rng, sx)
        y = cy + MARGIN + _jittered(rng, sy)
        boxes.append(list(_paste_text(img, mask, x, y)))
    listed = _and_list([str(d) for d in digits])
    total = sum(digits)
    desc = f"The image shows the digits {listed}."
    solution = f"The digits are {listed}. {' + '.join(map(str, digits))} = {total}.\nAnswer: {total}"
    meta = {"digits": digits, "boxes": boxes}
    return DIGIT_SUM_PROMPT, str(total), desc, solution, meta, img


_NAMES = ("Tom", "Ann", "Sam", "Mia", "Ben", "Eva", "Max", "Zoe")
_THINGS = ("apples", "pens", "books", "coins", "cards", "eggs", "balls", "cups")


def _gen_word_problem(rng: random.Random, i: int, seed: int) -> _Gen:
    name, things = rng.choice(_NAMES), rng.choice(_THINGS)
    kind = rng.choice(("add", "sub", "mul", "two_step"))
    if kind == "add":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        ans, work = a + b, f"{a} + {b}"
        prompt = f"{name} has {a} {things} and buys {b} more. How many {things} does {name} have now?"
    elif kind == "sub":
        a = rng.randint(2, 9)
        b = rng.randint(1, a)
        ans, work = a - b, f"{a} - {b}"
        prompt = f"{name} has {a} {things} and gives {b} away. How many {things} are left?"
    elif kind == "mul":
        a, b = rng.randint(2, 5), rng.randint(2, 5)
        ans, work = a * b, f"{a} * {b}"
        prompt = f"There are {a} bags with {b} {things} in each. How many {things} are there in total?"
    else:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        c = rng.randint(1, a + b)
        ans, work = a + b - c, f"{a} + {b} - {c}"
        prompt = f"{name} has {a} {things}, buys {b} more and gives {c} away. How many {things} are left?"
    solution = f"{work} = {ans}.\nAnswer: {ans}"
    return prompt, str(ans), None, solution, {"kind": kind}, None


_GENERATORS: dict[str, Callable[[random.Random, int, int], _Gen]] = {
    "counting": _gen_counting,
    "ocr": _gen_ocr,
    "grounding": _gen_grounding,
    "recognition": _gen_recognition,
    "attribute": _gen_attribute,
    "more_than": _gen_more_than,
    "digit_sum": _gen_digit_sum,
    "word_problem": _gen_word_problem,
    "recognition_binding": _gen_recognition_binding,
}

#: The answer_type of every item task (and of every probe task's pairs).
ANSWER_TYPE: dict[str, str] = {
    "counting": "number", "ocr": "word", "grounding": "box", "recognition": "yesno", "attribute": "word",
    "more_than": "number", "digit_sum": "number", "word_problem": "number",
    "recognition_binding": "yesno",
}


def _check_task(task: str, known: tuple[str, ...], what: str) -> None:
    if task not in known:
        raise FrankenscopeError(f"unknown {what} {task!r}; known: {', '.join(known)}")


def generate_items(task: str, n: int, seed: int) -> list[tuple[Item, Image.Image | None]]:
    """`n` items of `task` with their images in memory (Item.image stays None; writers set paths).

    Item i is drawn from its own RNG seeded with ``f"{task}:{seed}:{i}"``, so the output is fully
    determined by (task, seed) and the first k items do not depend on n. Ids are ``{task}_{i:06d}``.
    """
    _check_task(task, ITEM_TASKS + TRAINING_TASKS, "task")
    gen = _GENERATORS[task]
    out: list[tuple[Item, Image.Image | None]] = []
    for i in range(n):
        rng = random.Random(f"{task}:{seed}:{i}")
        prompt, answer, desc, solution, meta, img = gen(rng, i, seed)
        item = Item(id=f"{task}_{i:06d}", task=task, prompt=prompt, answer=answer,
                    answer_type=ANSWER_TYPE[task], category=TASK_CATEGORY[task],
                    description=desc, solution=solution, meta=meta)
        out.append((item, img))
    return out


# --------------------------------------------------------------------------- probe pairs

_PairGen = tuple[str, str, str, dict[str, Any], Image.Image, Image.Image]


def _pair_counting(rng: random.Random) -> _PairGen:
    t, s = rng.sample(range(1, 10), 2)
    shapes = _random_shapes(rng, max(t, s), grid=GRID, sizes=(16, 22))
    meta = {"target_answer": str(t), "source_answer": str(s),
            "target_objects": [x.to_dict() for x in shapes[:t]],
            "source_objects": [x.to_dict() for x in shapes[:s]]}
    return COUNTING_PROMPT, str(t), str(s), meta, draw_shapes(shapes[:t]), draw_shapes(shapes[:s])


def _pair_ocr(rng: random.Random) -> _PairGen:
    wt, ws = rng.sample(WORDS, 2)
    size = rng.randint(24, 34)
    while True:  # one font size and position for both words
        mt, ms = _text_mask(wt, size), _text_mask(ws, size)
        w, h = max(mt.width, ms.width), max(mt.height, ms.height)
        if (w <= IMAGE_SIZE - 8 and h <= IMAGE_SIZE - 8) or size <= 8:
            break
        size -= 2
    x, y = rng.randint(4, IMAGE_SIZE - 4 - w), rng.randint(4, IMAGE_SIZE - 4 - h)
    img_t, img_s = _canvas(), _canvas()
    box_t, box_s = _paste_text(img_t, mt, x, y), _paste_text(img_s, ms, x, y)
    meta = {"target_text": wt, "source_text": ws, "target_box": list(box_t), "source_box": list(box_s)}
    return OCR_PROMPT, wt, ws, meta, img_t, img_s


def box_iou(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (x2, y2 exclusive)."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pair_grounding(rng: random.Random) -> _PairGen:
    n_other = rng.randint(0, 2)
    kinds = rng.sample([(c, k) for c in COLOURS for k in SHAPES], n_other + 1)
    cells = rng.sample(range(GRID * GRID), n_other + 2)  # target cell, source cell, then the other shapes
    side = rng.randint(14, 22)
    sizes = [side, side] + [rng.randint(14, 22) for _ in range(n_other)]
    boxes = _grid_boxes(rng, sizes, cells=cells)
    (colour, kind), others = kinds[0], kinds[1:]
    rest = [Shape(k, c, b) for (c, k), b in zip(others, boxes[2:], strict=True)]
    obj_t, obj_s = Shape(kind, colour, boxes[0]), Shape(kind, colour, boxes[1])
    meta = {"object_name": obj_t.name, "target_bbox_xyxy": list(obj_t.box), "source_bbox_xyxy": list(obj_s.box),
            "canvas_size": [IMAGE_SIZE, IMAGE_SIZE], "iou": box_iou(obj_t.box, obj_s.box),
            "other_objects": [x.to_dict() for x in rest]}
    prompt = GROUNDING_PROMPT.format(name=obj_t.name)
    return (prompt, _box_str(obj_t.box), _box_str(obj_s.box), meta,
            draw_shapes([obj_t, *rest]), draw_shapes([obj_s, *rest]))


def _pair_recognition(rng: random.Random) -> _PairGen:
    shapes = _random_shapes(rng, rng.randint(1, 4), grid=GRID, sizes=(16, 22), distinct=True)
    obj = rng.choice(shapes)
    rest = [s for s in shapes if s is not obj]
    meta = {"target_answer": "yes", "source_answer": "no", "object_name": obj.name,
            "target_objects": [s.to_dict() for s in shapes], "source_objects": [s.to_dict() for s in rest]}
    return RECOGNITION_PROMPT.format(name=obj.name), "yes", "no", meta, draw_shapes(shapes), draw_shapes(rest)


_PAIR_GENERATORS: dict[str, Callable[[random.Random], _PairGen]] = {
    "counting": _pair_counting,
    "ocr": _pair_ocr,
    "grounding": _pair_grounding,
    "recognition": _pair_recognition,
}


def generate_probe_pairs(task: str, n: int, seed: int) -> list[tuple[ProbePair, Image.Image, Image.Image]]:
    """`n` visual-token-swap pairs: (pair, target image, source image); the pair's image paths are "".

    Same prompt, same image size, different answers. `meta` carries the paper's field names
    (counting/recognition: target_answer/source_answer; ocr: target_text/source_text; grounding:
    target_bbox_xyxy/source_bbox_xyxy, object_name) plus canvas_size. Pair i uses its own RNG seeded
    with ``f"probe:{task}:{seed}:{i}"`` (a stream separate from the items'). Ids are ``{task}_{i:06d}``.
    """
    _check_task(task, PROBE_TASKS, "probe task")
    gen = _PAIR_GENERATORS[task]
    out: list[tuple[ProbePair, Image.Image, Image.Image]] = []
    for i in range(n):
        rng = random.Random(f"probe:{task}:{seed}:{i}")
        prompt, ans_t, ans_s, meta, img_t, img_s = gen(rng)
        meta.setdefault("canvas_size", [IMAGE_SIZE, IMAGE_SIZE])
        pair = ProbePair(id=f"{task}_{i:06d}", task=task, target_image="", source_image="", prompt=prompt,
                         target_answer=ans_t, source_answer=ans_s, answer_type=ANSWER_TYPE[task], meta=meta)
        out.append((pair, img_t, img_s))
    return out
