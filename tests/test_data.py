"""Synthetic task generators, the suite writer and the item / probe-pair loaders."""

from __future__ import annotations

import io
import json
from collections import deque
from pathlib import Path

import pytest
from PIL import Image

from frankenscope.data.io import (
    check_pair_sizes,
    load_image,
    load_items,
    load_probe_pairs,
)
from frankenscope.errors import FrankenscopeError
from frankenscope.organism.processor import IMAGE_SIZE
from frankenscope.organism.suite import write_suite
from frankenscope.organism.tasks import (
    BACKGROUND,
    COLOURS,
    ITEM_TASKS,
    PROBE_TASKS,
    TASK_CATEGORY,
    box_iou,
    generate_items,
    generate_probe_pairs,
)

N = 24


def png_bytes(img: Image.Image | None) -> bytes | None:
    if img is None:
        return None
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def components(img: Image.Image) -> int:
    """Number of 4-connected non-background regions."""
    w, h = img.size
    px = img.load()
    seen = [[False] * w for _ in range(h)]
    count = 0
    for y0 in range(h):
        for x0 in range(w):
            if seen[y0][x0] or px[x0, y0] == BACKGROUND:
                continue
            count += 1
            queue = deque([(x0, y0)])
            seen[y0][x0] = True
            while queue:
                x, y = queue.popleft()
                for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                    if 0 <= nx < w and 0 <= ny < h and not seen[ny][nx] and px[nx, ny] != BACKGROUND:
                        seen[ny][nx] = True
                        queue.append((nx, ny))
    return count


def colour_extent(img: Image.Image, box: list[int], colour: str) -> list[int]:
    """[x1, y1, x2, y2] (exclusive) of the pixels of `colour` inside `box` grown by 1 px."""
    rgb = COLOURS[colour]
    px = img.load()
    xs, ys = [], []
    for y in range(max(0, box[1] - 1), min(IMAGE_SIZE, box[3] + 1)):
        for x in range(max(0, box[0] - 1), min(IMAGE_SIZE, box[2] + 1)):
            if px[x, y] == rgb:
                xs.append(x)
                ys.append(y)
    return [min(xs), min(ys), max(xs) + 1, max(ys) + 1]


def boxes_disjoint(boxes: list[list[int]]) -> bool:
    return all(box_iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1:])


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("task", ITEM_TASKS)
def test_items_deterministic_and_seed_dependent(task):
    a, b, c = generate_items(task, N, 0), generate_items(task, N, 0), generate_items(task, N, 1)
    assert [x.to_dict() for x, _ in a] == [x.to_dict() for x, _ in b]
    assert [png_bytes(i) for _, i in a] == [png_bytes(i) for _, i in b]
    assert [x.to_dict() for x, _ in a] != [x.to_dict() for x, _ in c]
    # the first k items do not depend on n
    assert [x.to_dict() for x, _ in generate_items(task, 5, 0)] == [x.to_dict() for x, _ in a[:5]]


@pytest.mark.parametrize("task", ITEM_TASKS)
def test_items_basic_shape(task):
    items = generate_items(task, N, 3)
    assert len({it.id for it, _ in items}) == N
    for it, img in items:
        assert it.task == task and it.category == TASK_CATEGORY[task] and it.image is None
        for text in (it.prompt, it.answer, it.description or "", it.solution or ""):
            assert text.isascii() and all(ch.isprintable() or ch == "\n" for ch in text)
        if task == "word_problem":
            assert img is None
        else:
            assert img.size == (IMAGE_SIZE, IMAGE_SIZE) and img.mode == "RGB"
        for box in [o["box"] for o in it.meta.get("objects", [])] + it.meta.get("boxes", []):
            assert 0 <= box[0] < box[2] <= IMAGE_SIZE and 0 <= box[1] < box[3] <= IMAGE_SIZE
        if "objects" in it.meta:
            assert boxes_disjoint([o["box"] for o in it.meta["objects"]])
        if it.category in ("v2r", "text"):
            assert it.answer_type == "number"
            assert it.solution.endswith(f"\nAnswer: {it.answer}") and len(it.solution) < 80
        if it.category == "v2r":
            assert it.description


def test_counting_answer_matches_drawing():
    for it, img in generate_items("counting", N, 0):
        n = int(it.answer)
        assert 1 <= n <= 9 and n == it.meta["count"] == len(it.meta["objects"])
        assert components(img) == n
    assert {it.answer for it, _ in generate_items("counting", 100, 0)} == {str(k) for k in range(1, 10)}


def test_grounding_box_is_true_extent():
    for it, img in generate_items("grounding", N, 0):
        target = it.meta["objects"][it.meta["target_index"]]
        box = [int(v) for v in it.answer.split(",")]
        assert box == target["box"] and f"{target['colour']} {target['kind']}" in it.prompt
        assert 0 <= box[0] < box[2] <= IMAGE_SIZE and 0 <= box[1] < box[3] <= IMAGE_SIZE
        assert colour_extent(img, box, target["colour"]) == box


def test_recognition_balanced_and_correct():
    items = generate_items("recognition", 40, 0)
    assert sum(it.answer == "yes" for it, _ in items) == 20
    for it, _ in items:
        present = {f"{o['colour']} {o['kind']}" for o in it.meta["objects"]}
        assert (it.meta["object_name"] in present) == (it.answer == "yes")


def test_recognition_binding_negatives_are_conjunction_misses():
    """The training-only variant: every "no" pairs a present colour with a present kind (when the scene
    allows one); the evaluated task keeps its mix, and the variant is not an evaluation task."""
    from frankenscope.organism.tasks import ITEM_TASKS

    items = generate_items("recognition_binding", 200, 0)
    assert sum(it.answer == "yes" for it, _ in items) == 100
    conj = 0
    for it, _ in items:
        objs = it.meta["objects"]
        present = {f"{o['colour']} {o['kind']}" for o in objs}
        assert (it.meta["object_name"] in present) == (it.answer == "yes") and len(objs) >= 2
        colour, kind = it.meta["object_name"].split()
        if it.answer == "no":
            colours, kinds = {o["colour"] for o in objs}, {o["kind"] for o in objs}
            possible = any(f"{c} {k}" not in present for c in colours for k in kinds)
            both = colour in colours and kind in kinds
            assert both == possible, it.meta
            conj += both
    assert conj >= 75  # most scenes of 2-4 shapes allow one (79 of these 100 negatives)
    assert "recognition_binding" not in ITEM_TASKS


def test_attribute_largest():
    for it, img in generate_items("attribute", N, 0):
        objs = it.meta["objects"]
        sides = [o["box"][2] - o["box"][0] for o in objs]
        largest = objs[sides.index(max(sides))]
        assert sorted(sides)[-1] > (sorted(sides)[-2] if len(sides) > 1 else 0)
        assert it.answer == (largest["colour"] if "colour" in it.prompt else largest["kind"])
        assert colour_extent(img, largest["box"], largest["colour"]) == largest["box"]


def test_ocr_and_v2r_answers():
    for it, img in generate_items("ocr", N, 0):
        assert it.answer.isupper() and 3 <= len(it.answer) <= 5 and it.answer in it.description
        x1, y1, x2, y2 = it.meta["box"]
        assert any(img.getpixel((x, y)) == (0, 0, 0) for x in range(x1, x2) for y in range(y1, y2))
    for it, _ in generate_items("more_than", N, 0):
        assert int(it.answer) == it.meta["circles"] - it.meta["squares"] >= 0
    for it, _ in generate_items("digit_sum", N, 0):
        assert int(it.answer) == sum(it.meta["digits"]) and 2 <= len(it.meta["digits"]) <= 3
    for it, _ in generate_items("word_problem", N, 0):
        tokens = it.solution.split(" = ")[0].split()  # e.g. "9 + 1 - 4"
        value = int(tokens[0])
        for op, num in zip(tokens[1::2], tokens[2::2], strict=True):
            value = {"+": value + int(num), "-": value - int(num), "*": value * int(num)}[op]
        assert value == int(it.answer) >= 0


def test_unknown_task_lists_known():
    with pytest.raises(FrankenscopeError) as e:
        generate_items("juggling", 1, 0)
    assert "juggling" in str(e.value) and all(t in str(e.value) for t in ITEM_TASKS)
    with pytest.raises(FrankenscopeError) as e:
        generate_probe_pairs("attribute", 1, 0)
    assert all(t in str(e.value) for t in PROBE_TASKS)
    with pytest.raises(FrankenscopeError, match="known"):
        write_suite(Path("/nonexistent/never"), tasks=["juggling"])


# --------------------------------------------------------------------------- probe pairs


@pytest.mark.parametrize("task", PROBE_TASKS)
def test_probe_pairs(task):
    pairs = generate_probe_pairs(task, N, 0)
    again = generate_probe_pairs(task, N, 0)
    assert [p.meta for p, _, _ in pairs] == [p.meta for p, _, _ in again]
    assert [png_bytes(t) for _, t, _ in pairs] == [png_bytes(t) for _, t, _ in again]
    assert [p.meta for p, _, _ in pairs] != [p.meta for p, _, _ in generate_probe_pairs(task, N, 1)]
    for pair, img_t, img_s in pairs:
        assert img_t.size == img_s.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert pair.target_answer != pair.source_answer
        assert png_bytes(img_t) != png_bytes(img_s)
        m = pair.meta
        assert m["canvas_size"] == [IMAGE_SIZE, IMAGE_SIZE]
        if task in ("counting", "recognition"):
            assert (m["target_answer"], m["source_answer"]) == (pair.target_answer, pair.source_answer)
        if task == "counting":
            assert components(img_t) == int(pair.target_answer) and components(img_s) == int(pair.source_answer)
        if task == "recognition":
            assert (pair.target_answer, pair.source_answer) == ("yes", "no")
            assert m["object_name"] in pair.prompt
        if task == "ocr":
            assert (m["target_text"], m["source_text"]) == (pair.target_answer, pair.source_answer)
        if task == "grounding":
            bt, bs = m["target_bbox_xyxy"], m["source_bbox_xyxy"]
            assert all(isinstance(v, int) for v in bt + bs)
            assert box_iou(bt, bs) < 0.5
            assert pair.target_answer == ",".join(map(str, bt))
            colour = m["object_name"].split()[0]
            assert colour_extent(img_t, bt, colour) == bt and colour_extent(img_s, bs, colour) == bs


# --------------------------------------------------------------------------- suite round trip


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_suite(tmp_path_factory.mktemp("suite") / "suite", n_per_task=6, n_pairs=5, seed=7)


def test_suite_layout(suite):
    meta = json.loads((suite / "suite.json").read_text())
    assert meta["schema_version"] == 1 and meta["seed"] == 7
    assert meta["items"] == {t: 6 for t in ITEM_TASKS} and meta["probe"] == {t: 5 for t in PROBE_TASKS}
    assert set(meta["sha256"]) == {f"items/{t}/data.jsonl" for t in ITEM_TASKS} | {
        f"probe/{t}/data.jsonl" for t in PROBE_TASKS}
    row = json.loads((suite / "probe/counting/data.jsonl").read_text().splitlines()[0])
    assert set(row) == {"id", "task", "target_image", "source_image", "prompt", "meta"}
    assert row["target_image"] == "images/counting_000000_t.png"
    assert row["source_image"] == "images/counting_000000_s.png"
    assert not list(suite.parent.glob(".suite.*"))  # no temporary folder left behind


def test_suite_round_trip(suite):
    items = load_items(suite)
    assert sorted({it.task for it in items}) == sorted(ITEM_TASKS)
    expected = [it for task in sorted(ITEM_TASKS) for it, _ in generate_items(task, 6, 7)]
    assert [(i.id, i.prompt, i.answer, i.answer_type, i.solution) for i in items] == [
        (i.id, i.prompt, i.answer, i.answer_type, i.solution) for i in expected]
    for it in items:
        if it.task == "word_problem":
            assert it.image is None
        else:
            assert Path(it.image).is_absolute()
            assert load_image(it.image).size == (IMAGE_SIZE, IMAGE_SIZE)
    assert [i.id for i in load_items(suite / "items" / "ocr")] == [f"ocr_{k:06d}" for k in range(6)]
    assert len(load_items(suite / "items" / "ocr" / "data.jsonl")) == 6

    pairs = load_probe_pairs(suite)
    assert len(pairs) == 5 * len(PROBE_TASKS)
    for task in PROBE_TASKS:
        got = [p for p in pairs if p.task == task]
        want = [p for p, _, _ in generate_probe_pairs(task, 5, 7)]
        assert [(p.id, p.prompt, p.target_answer, p.source_answer, p.answer_type) for p in got] == [
            (p.id, p.prompt, p.target_answer, p.source_answer, p.answer_type) for p in want]
    for p in pairs:
        assert check_pair_sizes(p) == ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE))
    assert len(load_probe_pairs(suite / "probe")) == len(pairs)


def test_write_suite_subset_and_replace(tmp_path):
    out = write_suite(tmp_path / "s", tasks=["counting", "word_problem"], n_per_task=2, n_pairs=2)
    assert sorted(p.name for p in (out / "items").iterdir()) == ["counting", "word_problem"]
    assert [p.name for p in (out / "probe").iterdir()] == ["counting"]
    out = write_suite(tmp_path / "s", tasks=["ocr"], n_per_task=1, n_pairs=0)
    assert [p.name for p in (out / "items").iterdir()] == ["ocr"] and not (out / "probe").exists()


# --------------------------------------------------------------------------- the paper's layout


def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (200, 200, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _paper_row(task: str, i: int, prompt: str, meta: dict) -> dict:
    return {"id": f"{task}_{i:06d}", "task": task, "target_image": f"images/{task}_{i:06d}_t.png",
            "source_image": f"images/{task}_{i:06d}_s.png", "prompt": prompt, "meta": meta}


@pytest.fixture
def paper_root(tmp_path):
    """A tiny vision_functionality_dataset/ in the paper's layout."""
    root = tmp_path / "vision_functionality_dataset"
    rows = {
        "counting": _paper_row("counting", 0, "<image>How many items are there in the image?", {
            "target_answer": "3", "source_answer": "5", "hf_dataset": "BUAADreamer/clevr_count_70k",
            "hf_split": "train", "target_index": 10, "source_index": 11}),
        "grounding": _paper_row("grounding", 0, "Locate the object: red circle. Return bounding box as x1,y1,x2,y2.", {
            "object_name": "red circle", "target_bbox_xyxy": [10, 20, 60, 70], "source_bbox_xyxy": [200, 210, 250, 260],
            "canvas_size": [384, 384], "iou_threshold": 0.5}),
        "ocr": _paper_row("ocr", 0, "Read the text in the image. Answer with the exact word only.", {
            "target_text": "manifold", "source_text": "transformer", "canvas_size": [384, 384]}),
        "recognition": _paper_row("recognition", 0, "Is there a toaster in the image? Answer Yes or No only.", {
            "category_id": 70, "category_name": "toaster", "target_answer": "Yes", "source_answer": "No",
            "hf_dataset": "detection-datasets/coco", "hf_split": "train", "hf_index": 5, "canvas_size": [64, 48]}),
    }
    sizes = {"counting": (48, 32), "grounding": (38, 38), "ocr": (38, 38), "recognition": (64, 48)}
    for task, row in rows.items():
        folder = root / task
        _png(folder / row["target_image"], sizes[task], (10, 10, 10))
        _png(folder / row["source_image"], sizes[task])
        (folder / "data.jsonl").write_text(json.dumps(row) + "\n\n")  # a trailing blank line is skipped
    (root / "recognition" / "data.jsonl.bak").write_text("not json\n")  # ignored: not data.jsonl
    return root


def test_paper_layout(paper_root):
    pairs = {p.task: p for p in load_probe_pairs(paper_root)}
    assert sorted(pairs) == ["counting", "grounding", "ocr", "recognition"]
    c = pairs["counting"]
    assert (c.target_answer, c.source_answer, c.answer_type) == ("3", "5", "number")
    assert c.prompt == "<image>How many items are there in the image?"
    assert c.target_image == str(paper_root / "counting/images/counting_000000_t.png")
    assert c.meta["hf_dataset"] == "BUAADreamer/clevr_count_70k"
    g = pairs["grounding"]
    assert (g.target_answer, g.source_answer, g.answer_type) == ("10,20,60,70", "200,210,250,260", "box")
    o = pairs["ocr"]
    assert (o.target_answer, o.source_answer, o.answer_type) == ("manifold", "transformer", "word")
    r = pairs["recognition"]
    assert (r.target_answer, r.source_answer, r.answer_type) == ("Yes", "No", "yesno")
    assert check_pair_sizes(r) == ((64, 48), (64, 48))
    # a single task folder and a single jsonl file
    assert [p.id for p in load_probe_pairs(paper_root / "ocr")] == ["ocr_000000"]
    single = load_probe_pairs(paper_root / "counting" / "data.jsonl")
    assert [(p.target_answer, p.source_answer) for p in single] == [("3", "5")]


def test_probe_fallback_fields_and_size_check(tmp_path):
    row = _paper_row("attribute", 0, "What colour?", {"target_answer": "red", "source_answer": "blue"})
    _png(tmp_path / row["target_image"], (20, 20))
    _png(tmp_path / row["source_image"], (30, 20))
    (tmp_path / "data.jsonl").write_text(json.dumps(row) + "\n")
    (pair,) = load_probe_pairs(tmp_path)  # sizes are not checked by the loader
    assert (pair.target_answer, pair.source_answer, pair.answer_type) == ("red", "blue", "text")
    assert check_pair_sizes(pair, strict=False) == ((20, 20), (30, 20))
    with pytest.raises(FrankenscopeError, match="same size"):
        check_pair_sizes(pair)


# --------------------------------------------------------------------------- bad inputs


def test_missing_image_names_file_line_and_path(paper_root):
    jsonl = paper_root / "ocr" / "data.jsonl"
    good = jsonl.read_text().splitlines()[0]
    bad = json.loads(good)
    bad["id"], bad["source_image"] = "ocr_000001", "images/nowhere_s.png"
    jsonl.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(FrankenscopeError) as e:
        load_probe_pairs(jsonl)
    msg = str(e.value)
    assert str(jsonl) in msg and "line 2" in msg and "nowhere_s.png" in msg


def test_missing_item_image(tmp_path):
    row = {"id": "a", "task": "t", "prompt": "p?", "answer": "1", "answer_type": "number", "image": "img/x.png"}
    path = tmp_path / "data.jsonl"
    path.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(FrankenscopeError) as e:
        load_items(path)
    msg = str(e.value)
    assert str(path) in msg and "line 2" in msg and str(tmp_path / "img" / "x.png") in msg


@pytest.mark.parametrize("loader", [load_items, load_probe_pairs])
def test_malformed_line(tmp_path, loader):
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "a"}\n{not json\n')
    with pytest.raises(FrankenscopeError) as e:
        loader(path)
    assert str(path) in str(e.value) and "line 1" in str(e.value)  # line 1 lacks required fields
    path.write_text('\n{"id": "a", "task": \n')
    with pytest.raises(FrankenscopeError) as e:
        loader(path)
    assert str(path) in str(e.value) and "line 2" in str(e.value) and "JSON" in str(e.value)


def test_missing_field_named(tmp_path, paper_root):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"id": "a", "task": "t", "answer": "1", "answer_type": "number"}) + "\n")
    with pytest.raises(FrankenscopeError, match="'prompt'") as e:
        load_items(path)
    assert str(path) in str(e.value) and "line 1" in str(e.value)
    jsonl = paper_root / "counting" / "data.jsonl"
    row = json.loads(jsonl.read_text().splitlines()[0])
    del row["prompt"]
    jsonl.write_text(json.dumps(row) + "\n")
    with pytest.raises(FrankenscopeError, match="'prompt'"):
        load_probe_pairs(jsonl)
    row["prompt"] = "x"
    del row["meta"]["source_answer"]
    jsonl.write_text(json.dumps(row) + "\n")
    with pytest.raises(FrankenscopeError, match="source_answer"):
        load_probe_pairs(jsonl)


def test_item_field_validation(tmp_path):
    path = tmp_path / "data.jsonl"
    base = {"id": "a", "task": "t", "prompt": "p", "answer": 3, "answer_type": "number"}
    path.write_text(json.dumps(base) + "\n")
    assert load_items(path)[0].answer == "3"
    for extra, word in [({"answer_type": "essay"}, "answer_type"), ({"colour": "red"}, "colour"),
                        ({"category": "vibes"}, "category")]:
        path.write_text(json.dumps({**base, **extra}) + "\n")
        with pytest.raises(FrankenscopeError, match=word):
            load_items(path)
    path.write_text(json.dumps(base) + "\n" + json.dumps(base) + "\n")
    with pytest.raises(FrankenscopeError, match="duplicate id"):
        load_items(path)


def test_load_image_errors(tmp_path):
    with pytest.raises(FrankenscopeError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(FrankenscopeError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    _png(tmp_path / "grey.png", (5, 4))
    Image.open(tmp_path / "grey.png").convert("L").save(tmp_path / "l.png")
    assert load_image(tmp_path / "l.png").mode == "RGB"


def test_empty_folder(tmp_path):
    with pytest.raises(FrankenscopeError, match="data.jsonl"):
        load_items(tmp_path)
    with pytest.raises(FrankenscopeError, match="no such"):
        load_probe_pairs(tmp_path / "missing")
