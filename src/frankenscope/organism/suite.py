"""The organism as a suite provider: it plugs in through `frankenscope.providers` (by name, imported on
first use), so the generic layers (data/, probes/, evaluate/) never import it.

A suite provider offers:
- `write_suite(out_dir, tasks, n_per_task, n_pairs, seed, overwrite)`: items and probe pairs on disk, in the
  layout `frankenscope.data.io` loads;
- `probe_inputs(tasks, n, seed)`: probe pairs drawn in memory, for the visual-token swap;
- `metric_sets(out, data, n_per_task, seed, split)`: the fine-grained evaluation's sets (M_vis, M_v2r,
  M_rea and the benchmark row) with their definitions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from frankenscope.data.io import DATA_FILE, SUITE_SCHEMA_VERSION, load_items
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.io import atomic_dir, check_out, output_of, sha256_file, write_json_atomic


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")


def is_suite(path: Path) -> bool:
    """True for a folder written by `write_suite` (suite.json of kind "frankenscope-suite")."""
    return output_of(path, "suite.json", "frankenscope-suite")


def write_suite(out_dir: str | Path, tasks: list[str] | None = None, n_per_task: int = 50,
                n_pairs: int = 50, seed: int = 0, overwrite: bool = False) -> Path:
    """Generate and write the organism's suite (layout: `frankenscope.data.io`); return its folder.

    tasks: item and/or probe task names (default: every item task and every probe task); a name that
    is both (e.g. "counting") gets items and probe pairs. The folder is built in a temporary sibling
    and swapped into place only when complete, replacing a previous suite at `out_dir`; any other
    non-empty `out_dir` is refused unless `overwrite`.
    Items and pairs use separate seed streams (see `generate_items`, `generate_probe_pairs`).
    """
    from frankenscope.organism.tasks import ITEM_TASKS, PROBE_TASKS, generate_items, generate_probe_pairs

    if tasks is None:
        item_tasks, probe_tasks = list(ITEM_TASKS), list(PROBE_TASKS)
    else:
        known = tuple(dict.fromkeys(ITEM_TASKS + PROBE_TASKS))
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise FrankenscopeError(f"unknown task(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        item_tasks = [t for t in ITEM_TASKS if t in tasks]
        probe_tasks = [t for t in PROBE_TASKS if t in tasks]
    if n_per_task < 1:
        raise FrankenscopeError(f"n_per_task must be >= 1, got {n_per_task}")
    if n_pairs <= 0:
        probe_tasks = []

    out_dir = Path(out_dir)
    check_out(out_dir, own=is_suite, overwrite=overwrite)
    item_counts: dict[str, int] = {}
    probe_counts: dict[str, int] = {}
    hashes: dict[str, str] = {}
    with atomic_dir(out_dir, own=is_suite, overwrite=overwrite) as tmp:
        for task in item_tasks:
            folder = tmp / "items" / task
            (folder / "images").mkdir(parents=True)
            rows = []
            for item, img in generate_items(task, n_per_task, seed):
                if img is not None:
                    item.image = f"images/{item.id}.png"
                    img.save(folder / item.image)
                rows.append(item.to_dict())
            _write_jsonl(folder / DATA_FILE, rows)
            item_counts[task] = len(rows)
        for task in probe_tasks:
            folder = tmp / "probe" / task
            (folder / "images").mkdir(parents=True)
            rows = []
            for pair, img_t, img_s in generate_probe_pairs(task, n_pairs, seed):
                target, source = f"images/{pair.id}_t.png", f"images/{pair.id}_s.png"
                img_t.save(folder / target)
                img_s.save(folder / source)
                rows.append({"id": pair.id, "task": pair.task, "target_image": target, "source_image": source,
                             "prompt": pair.prompt, "meta": pair.meta})
            _write_jsonl(folder / DATA_FILE, rows)
            probe_counts[task] = len(rows)
        for jsonl in sorted(tmp.glob(f"*/*/{DATA_FILE}")):
            hashes[jsonl.relative_to(tmp).as_posix()] = sha256_file(jsonl)
        write_json_atomic(tmp / "suite.json", {
            "kind": "frankenscope-suite",
            "schema_version": SUITE_SCHEMA_VERSION,
            "seed": seed,
            "n_per_task": n_per_task,
            "n_pairs": n_pairs,
            "items": item_counts,
            "probe": probe_counts,
            "sha256": hashes,
        })
    return out_dir


# --------------------------------------------------------------------------- reading


def probe_inputs(tasks: Sequence[str] | None = None, n: int = 50, seed: int = 0) -> list[Any]:
    """The organism's probe pairs drawn in memory (`organism.tasks.generate_probe_pairs`), n per task, as
    `probes.swap.ProbeInput`s."""
    from frankenscope.organism.tasks import PROBE_TASKS, generate_probe_pairs
    from frankenscope.probes.swap import ProbeInput

    chosen = list(tasks) if tasks else list(PROBE_TASKS)
    unknown = [t for t in chosen if t not in PROBE_TASKS]
    if unknown:
        raise FrankenscopeError(f"unknown organism probe task(s) {unknown}; known: {', '.join(PROBE_TASKS)}")
    return [ProbeInput(p, t, s) for task in chosen for p, t, s in generate_probe_pairs(task, n, seed)]


def metric_sets(out: Path, data: Path | None, n_per_task: int, seed: int,
                split: Callable[[list[Item], str], list[Item]]) -> tuple[Any, Path]:
    """The fine-grained metric sets of the organism suite (drawn into out/suite unless `data` names a suite
    or item file): M_vis over every item with an image (perception and v2r), M_v2r over the v2r items (the
    generator's exact descriptions), M_rea over the text items; the benchmark row pools all three.
    `split(items, name)` subsamples a set (and records how)."""
    from frankenscope.evaluate.finegrained import MetricSets

    prefix = "organism" if data is not None else f"organism{n_per_task}"
    if data is None:
        data = out / "suite"
        meta_file = data / "suite.json"
        current = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if current.get("seed") != seed or current.get("n_per_task") != n_per_task:
            write_suite(data, n_per_task=n_per_task, n_pairs=0, seed=seed)
    items = load_items(data)
    vis = [it for it in items if it.category in ("perception", "v2r") and it.image is not None]
    v2r = [it for it in items if it.category == "v2r" and it.image is not None]
    rea = [it for it in items if it.category == "text" and it.image is None]
    sets = MetricSets(vis=split(vis, f"{prefix}_vis"), v2r=split(v2r, f"{prefix}_v2r"),
                      rea=split(rea, f"{prefix}_rea"))
    pooled = list({it.id: it for it in sets.vis + sets.v2r + sets.rea}.values())
    sets.bench = {"suite": pooled}
    sets.definitions = {
        "vis": "organism items with an image, categories perception and v2r (image vs black image)",
        "v2r": "organism items of category v2r (image vs black image + the generator's exact description)",
        "rea": "organism items of category text (text only)",
        "benchmark": "accuracy over every item of the three sets (image condition, text for text items)",
    }
    return sets, data
