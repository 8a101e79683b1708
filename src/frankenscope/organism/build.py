"""Base -> IN -> RL for the organism: the stages, their data, the recipe, skipping finished stages.

- Base: from random init, SFT on perception tasks with short answers and on short image descriptions
  (the "pretrained VLM").
- IN:   SFT from Base on worked solutions (vision-to-reasoning and text reasoning) that end in
  `Answer: X`, with a small replay of perception items.
- RL:   GRPO from IN with a verifiable reward on vision-to-reasoning prompts, optionally with a
  region of LLM layers frozen. Text-only prompts are left out: TRL 1.16's GRPOTrainer fails with
  KeyError 'pixel_values' on a VLM batch in which no prompt has an image (a mixed batch works,
  see OrganismProcessor), and its sampler cannot guarantee an image in every batch.

Every stage writes an HF folder plus stage.json (seed, recipe, data sizes and hashes, steps, wall
time, held-out metrics); the build writes manifest.json (a build with a frozen region writes
manifest-rl-frozen-<region>.json instead, so re-runs never overwrite the organism's manifest). A
stage whose key (its recipe, seed, data hash and parent's key) matches the stage.json on disk is
not retrained.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from frankenscope.adapters import get_adapter
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.io import package_versions, write_json_atomic, write_result
from frankenscope.organism.sft import Example, train_sft
from frankenscope.organism.tasks import PERCEPTION_TASKS, TEXT_TASKS, V2R_TASKS, generate_items
from frankenscope.weights.partition import Partition

DESCRIBE_PROMPT = "Describe the image."
STAGE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a build (besides the seed). Sizes are items per task."""

    preset: str
    base_items: dict[str, int]
    base_steps: int
    in_items: dict[str, int]
    in_steps: int
    in_replay: dict[str, int]
    rl_items: dict[str, int]
    rl_steps: int
    init_range: float = 0.06
    sft_lr: float = 3e-4
    in_lr: float = 3e-4
    batch_size: int = 8
    length_group: int = 16
    warmup: int = 50
    rl_lr: float = 5e-6
    rl_generations: int = 8
    rl_prompts_per_step: int = 2
    rl_beta: float = 0.0
    rl_temperature: float = 1.0
    rl_max_completion: int = 72
    rl_format_weight: float = 0.1
    eval_items: dict[str, int] = field(default_factory=dict)
    eval_max_new_tokens: int = 80

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_task(n: int, tasks: tuple[str, ...]) -> dict[str, int]:
    return {t: n for t in tasks}


RECIPES: dict[str, Recipe] = {
    "small": Recipe(
        preset="small",
        base_items={"counting": 1600, "recognition": 6000, "attribute": 700, "ocr": 100, "grounding": 100,
                    "describe:recognition": 3000, "describe:more_than": 2000, "describe:digit_sum": 2500},
        base_steps=3200,
        in_items={"more_than": 2000, "digit_sum": 2000, "word_problem": 1500,
                  "described:more_than": 400, "described:digit_sum": 400},
        in_steps=1200,  # on one Base: 1000 steps -> v2r 0.6725, 1100 at lr 4e-4 -> 0.705, 1200 -> 0.7275
        in_replay={"counting": 300, "recognition": 300, "attribute": 300},
        # digit_sum only: IN answers ~95% of more_than right, and a GRPO group whose 8 answers are all
        # right has zero advantage. On one IN, 60 steps gained +0.025 [+0.005, +0.0475] on
        # digit_sum prompts and +0.0125 [-0.0125, +0.0375] on the half-and-half mix.
        rl_items={"digit_sum": 2000},
        rl_steps=60,
        rl_lr=5e-6,
        rl_prompts_per_step=4,
        rl_max_completion=48,
        eval_items={**_per_task(100, PERCEPTION_TASKS), **_per_task(200, V2R_TASKS), **_per_task(100, TEXT_TASKS)},
        eval_max_new_tokens=48,
    ),
    "micro": Recipe(
        preset="micro",
        base_items={"counting": 40, "recognition": 40, "describe:more_than": 20},
        base_steps=12,
        in_items={"more_than": 20, "digit_sum": 20, "word_problem": 20},
        in_steps=8,
        in_replay={"counting": 8},
        rl_items={"more_than": 8, "digit_sum": 4},
        rl_steps=2,
        rl_generations=4,
        rl_max_completion=16,
        batch_size=4,
        warmup=2,
        eval_items={"counting": 4, "recognition": 4, "more_than": 4, "word_problem": 4},
        eval_max_new_tokens=16,
    ),
}

# Seeds of the data streams, kept apart so training never sees the held-out items.
_TRAIN_SEED, _EVAL_SEED = 1_000, 9_000


def recipe_for(preset: str, **overrides: Any) -> Recipe:
    if preset not in RECIPES:
        raise FrankenscopeError(f"unknown organism preset {preset!r}; choose one of {sorted(RECIPES)}")
    return replace(RECIPES[preset], **overrides)


def _items(spec: dict[str, int], seed: int, stage: str) -> list[tuple[str, Item, Any]]:
    """(kind, item, image) for every entry 'task' or 'describe:task' of a stage's data spec."""
    out = []
    for key, n in spec.items():
        kind, _, task = key.rpartition(":")
        stage_seed = _TRAIN_SEED + seed * 7 + sum(map(ord, stage))
        for item, img in generate_items(task, n, stage_seed):
            out.append((kind or "answer", item, img))
    return out


def stage_examples(stage: str, recipe: Recipe, seed: int) -> list[Example]:
    """The supervised examples of the Base or IN stage.

    Data keys are `task` (the answer; for IN the worked solution), `describe:task` (the image's
    description) or `described:task` (IN: a black image and the description in the prompt, rendered as
    the fine-grained evaluation's M_v2r control, answered with the worked solution).
    """
    from frankenscope.adapters.base import VLMAdapter
    from frankenscope.evaluate.prompts import get_prompt_style

    if stage == "base":
        spec = recipe.base_items
    elif stage == "in":
        spec = {**recipe.in_items, **{f"replay:{k}": v for k, v in recipe.in_replay.items()}}
    else:
        raise FrankenscopeError(f"stage {stage!r} has no supervised examples")
    exs = []
    for kind, item, img in _items(spec, seed, stage):
        if kind == "describe":
            exs.append(Example(DESCRIBE_PROMPT, item.description or "", img))
        elif kind == "described":  # the M_v2r control: black image, the description given in text
            text = get_prompt_style("plain").render(item.prompt, item.description)
            exs.append(Example(text, item.solution or f"Answer: {item.answer}", VLMAdapter.black_image(img)))
        elif stage == "in" and kind == "answer":
            exs.append(Example(item.prompt, item.solution or f"Answer: {item.answer}", img))
        else:
            exs.append(Example(item.prompt, item.answer, img))
    return exs


def rl_rows(recipe: Recipe, seed: int) -> list[dict[str, Any]]:
    """GRPO prompts: conversational, the image (None for text-only rows) in its own column; TRL
    inserts the placeholder. Batches can mix rows with and without an image (see OrganismProcessor)."""
    rows = []
    for _, item, img in _items(recipe.rl_items, seed, "rl"):
        rows.append({"prompt": [{"role": "user", "content": item.prompt}], "image": img,
                     "answer": item.answer, "answer_type": item.answer_type})
    return rows


def heldout_items(recipe: Recipe, seed: int) -> list[tuple[Item, Any]]:
    """Held-out evaluation items (a data stream no training stage draws from)."""
    return [(it, img) for task, n in recipe.eval_items.items() for it, img in generate_items(task, n, _EVAL_SEED + seed)]


def data_hash(examples: list[Example] | list[dict[str, Any]]) -> str:
    """sha256 over the texts, targets and image pixels of a stage's data."""
    h = hashlib.sha256()
    for ex in examples:
        if isinstance(ex, Example):
            h.update(f"{ex.text}\x00{ex.target}\x00".encode())
            img = ex.image
        else:
            h.update(json.dumps([ex["prompt"], ex["answer"]]).encode())
            img = ex.get("image")
        if img is not None:
            h.update(img.tobytes())
    return h.hexdigest()


def stage_recipe(recipe: Recipe, stage: str) -> dict[str, Any]:
    """The part of the recipe that determines one stage's training (its key ignores the rest, so
    changing the RL settings never retrains Base or IN)."""
    d = recipe.to_dict()
    keys = {"base": ("init_range", "base_items", "base_steps", "sft_lr", "batch_size", "length_group", "warmup"),
            "in": ("in_items", "in_steps", "in_replay", "in_lr", "batch_size", "length_group", "warmup"),
            "rl": tuple(k for k in d if k.startswith("rl_"))}[stage]
    out = {"preset": recipe.preset, **{k: d[k] for k in keys}}
    if stage == "base":  # the architecture too: a Base trained with another config is not this Base
        from frankenscope.organism.model import architecture

        out["architecture"] = architecture(recipe.preset)
    return out


def _stage_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _matching(folder: Path, stage: str, recipe: Recipe, seed: int, parent_key: str) -> dict[str, Any] | None:
    """stage.json of a finished non-RL stage whose recipe part, seed and parent match (data not compared)."""
    f = folder / "stage.json"
    if stage == "rl" or not f.is_file() or not (folder / "config.json").is_file():
        return None
    doc = json.loads(f.read_text())
    same = (doc.get("recipe") == json.loads(json.dumps(stage_recipe(recipe, stage))) and doc.get("seed") == seed
            and doc.get("parent") == parent_key)
    return doc if same else None


def _finished(folder: Path, key: str) -> dict[str, Any] | None:
    f = folder / "stage.json"
    if f.is_file() and (folder / "config.json").is_file():
        doc = json.loads(f.read_text())
        if doc.get("stage_key") == key:
            return doc
    return None


def evaluate_stage(model: Any, processor: Any, items: list[tuple[Item, Any]], recipe: Recipe, seed: int,
                   progress: bool) -> dict[str, Any]:
    """Held-out accuracy per task and per category with bootstrap 95% CIs (greedy, in-memory images)."""
    from frankenscope.evaluate.runner import HFGenerator, evaluate

    gen = HFGenerator(model, processor, get_adapter(model), batch_size=32,
                      max_new_tokens=recipe.eval_max_new_tokens, progress=progress)
    images = {it.id: img for it, img in items}
    result = evaluate([it for it, _ in items], _InMemory(gen, images), seed=seed)
    return {"by_task": result.by_task, "by_category": result.by_category, "overall": result.overall,
            "correct": result.correct_by_id()}


class _InMemory:
    """A Generator over items whose images live in memory (held-out items are never written to disk)."""

    def __init__(self, gen: Any, images: dict[str, Any]) -> None:
        self.gen, self.images = gen, images

    def __call__(self, items: list[Item], **kw: Any) -> list[str]:
        return self.gen(items, images=[self.images.get(it.id) for it in items], **kw)


def heldout_pairs(a_dir: Path, b_dir: Path) -> dict[str, tuple[list[bool], list[bool]]] | None:
    """Per category and task: (A's, B's) held-out correctness over the ids both stages graded, in id
    order, from the two stages' stage.json; None when either is missing."""
    from frankenscope.organism.tasks import TASK_CATEGORY

    docs = [a_dir / "stage.json", b_dir / "stage.json"]
    if not all(d.is_file() for d in docs):
        return None
    a, b = (json.loads(d.read_text())["heldout"] for d in docs)
    ca, cb = a["correct"], b["correct"]
    groups: dict[str, list[str]] = {}
    for i in sorted(set(ca) & set(cb)):
        task = i.rsplit("_", 1)[0]
        groups.setdefault(TASK_CATEGORY.get(task, "other"), []).append(i)
        groups.setdefault(task, []).append(i)
    return {g: ([bool(ca[i]) for i in v], [bool(cb[i]) for i in v]) for g, v in groups.items()}


def heldout_difference(a_dir: Path, b_dir: Path, seed: int) -> dict[str, Any] | None:
    """Paired held-out difference B - A per category and task (same items; Newcombe score interval and
    exact McNemar, `metrics.paired_binary`), from the two stages' stage.json; None when either is
    missing. The manifest's `rl_vs_in` is (IN, RL); the study's freeze unit compares (control, frozen).
    `seed` is kept for compatibility (the interval is analytic)."""
    from frankenscope.evaluate.metrics import paired_binary

    pairs = heldout_pairs(a_dir, b_dir)
    return None if pairs is None else {g: paired_binary(a, b) for g, (a, b) in pairs.items()}


def _stage_folder(stage: str, freeze: str | None, rl_folder: str | None) -> str:
    """A stage's folder name: base, in, rl; rl-frozen-<region> for a frozen RL run; `rl_folder` if given."""
    if stage != "rl":
        return stage
    return rl_folder or (f"rl-frozen-{freeze.replace(',', '_')}" if freeze else "rl")


def _stage_start(recipe: Recipe, seed: int, parent_dir: Path | None) -> tuple[Any, Any]:
    """(model, processor) a stage trains from: a fresh organism for Base, else the parent stage's folder."""
    if parent_dir is None:
        from frankenscope.organism.model import build_organism

        return build_organism(recipe.preset, seed=seed, initializer_range=recipe.init_range)
    from frankenscope.loading import load_model

    loaded = load_model(parent_dir)
    return loaded.model, loaded.processor


def _train_stage(stage: str, name: str, model: Any, processor: Any, data: list[Any], recipe: Recipe, *, seed: int,
                 rl_seed: int | None, freeze: str | None, partition: str | Partition,
                 progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one stage in place: SFT for Base and IN, GRPO for RL (with `freeze`'s layers fixed, then unfrozen
    again). Returns (training stats, extra stage.json fields: the frozen layers and parameters)."""
    adapter = get_adapter(model)
    if stage != "rl":
        stats = train_sft(model, processor, adapter, data, steps=recipe.base_steps if stage == "base"
                          else recipe.in_steps, batch_size=recipe.batch_size,
                          lr=recipe.sft_lr if stage == "base" else recipe.in_lr, warmup=recipe.warmup,
                          length_group=recipe.length_group, seed=seed, progress=progress, desc=name)
        return stats, {}
    from frankenscope.organism.rl import train_grpo
    from frankenscope.weights.freeze import apply_freeze, freeze_plan

    extra: dict[str, Any] = {}
    if freeze:
        plan = freeze_plan(adapter, model, freeze, partition)
        extra["frozen_layers"] = plan["layers"]
        extra["frozen_parameters"] = apply_freeze(model, plan["patterns"])
    stats = train_grpo(model, processor, data, steps=recipe.rl_steps, lr=recipe.rl_lr,
                       num_generations=recipe.rl_generations, prompts_per_step=recipe.rl_prompts_per_step,
                       beta=recipe.rl_beta, max_completion_length=recipe.rl_max_completion,
                       temperature=recipe.rl_temperature, seed=seed if rl_seed is None else rl_seed,
                       format_weight=recipe.rl_format_weight, progress=progress)
    for p in model.parameters():
        p.requires_grad_(True)
    return stats, extra


def build(out: str | Path, preset: str = "small", seed: int = 0, freeze: str | None = None,
          partition: str | Partition = "thirds", recipe: Recipe | None = None, progress: bool = True,
          log: Any = print, trust_finished: bool = False, rl_seed: int | None = None,
          rl_folder: str | None = None) -> dict[str, Any]:
    """Build (or resume) Base -> IN -> RL under `out`; returns the manifest.

    freeze: a region ('early', 'mid', 'late', 'mid+late') or layer list ('0-2'); the RL stage then
    trains with those LLM layers fixed and is written to rl-frozen-<region>/ instead of rl/.
    trust_finished: accept a finished stage whose recorded recipe, seed and parent match without
    redrawing its data to compare hashes (the study's frozen RL re-runs use this: the Base and IN
    data take longer to draw than to check).
    rl_seed: the RL stage's training seed (sampling, order) when it should differ from `seed`; the RL
    data and every earlier stage stay those of `seed` (the study's re-runs over several RL seeds).
    rl_folder: the RL stage's folder name instead of rl/ or rl-frozen-<region>/ (the study's unfrozen
    control re-run); such a stage writes manifest-<folder>.json, never the organism's manifest.json.
    """
    from frankenscope.organism.model import save_folder

    recipe = recipe or recipe_for(preset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    heldout: list[tuple[Item, Any]] | None = None  # drawn when a stage trains (a rerun that skips all never does)
    manifest: dict[str, Any] = {"preset": recipe.preset, "seed": seed, "recipe": recipe.to_dict(), "stages": {}}
    parent_key = "init"
    parent_dir: Path | None = None
    for stage in ("base", "in", "rl"):
        name = _stage_folder(stage, freeze, rl_folder)
        folder = out / name
        if trust_finished and (doc := _matching(folder, stage, recipe, seed, parent_key)) is not None:
            log(f"[{name}] finished (recipe, seed and parent match), skipping")
            manifest["stages"][name] = {"path": str(folder), "stage_key": doc["stage_key"], "skipped": True,
                                        "wall_s": doc.get("wall_s")}
            parent_key, parent_dir = doc["stage_key"], folder
            continue
        data = rl_rows(recipe, seed) if stage == "rl" else stage_examples(stage, recipe, seed)
        settings = {"stage": stage, "seed": seed, "recipe": stage_recipe(recipe, stage), "parent": parent_key,
                    "data_sha256": data_hash(data), "freeze": freeze if stage == "rl" else None,
                    "partition": str(partition) if stage == "rl" and freeze else None}
        if stage == "rl" and rl_seed is not None:  # only then: stage keys of ordinary builds are unchanged
            settings["rl_seed"] = rl_seed
        key = _stage_key(settings)
        done = _finished(folder, key)
        if done is not None:
            log(f"[{name}] up to date (stage key {key}), skipping")
            manifest["stages"][name] = {"path": str(folder), "stage_key": key, "skipped": True,
                                        "wall_s": done.get("wall_s")}
            parent_key, parent_dir = key, folder
            continue
        t0 = time.time()
        log(f"[{name}] training ({len(data)} examples)")
        model, processor = _stage_start(recipe, seed, parent_dir)
        stats, extra = _train_stage(stage, name, model, processor, data, recipe, seed=seed, rl_seed=rl_seed,
                                    freeze=freeze, partition=partition, progress=progress)
        train_s = time.time() - t0
        heldout = heldout if heldout is not None else heldout_items(recipe, seed)
        metrics = evaluate_stage(model, processor, heldout, recipe, seed, progress)
        wall = time.time() - t0
        doc = {**settings, "stage_key": key, "name": name, "n_examples": len(data), "training": stats, **extra,
               "train_s": round(train_s, 1), "wall_s": round(wall, 1), "heldout": metrics,
               "versions": package_versions()}
        save_folder(model, processor, folder, extra_files={"stage.json": json.dumps(doc, indent=1)})
        log(f"[{name}] done in {wall:.0f}s; held-out: " + ", ".join(
            f"{t} {m['accuracy']:.2f}" for t, m in metrics["by_task"].items()))
        manifest["stages"][name] = {"path": str(folder), "stage_key": key, "skipped": False, "wall_s": round(wall, 1)}
        parent_key, parent_dir = key, folder
    manifest["rl_vs_in"] = heldout_difference(out / "in", out / name, seed)
    # A frozen re-run gets its own manifest: the study runs several at once next to the organism's own.
    manifest_name = f"manifest-{name}.json" if name != "rl" else "manifest.json"
    write_result(out / manifest_name, "organism-build", STAGE_SCHEMA_VERSION, manifest, seed=seed,
                 inputs={"preset": recipe.preset, "freeze": freeze, "partition": str(partition)})
    return manifest


__all__ = ["Recipe", "RECIPES", "build", "recipe_for", "write_json_atomic"]
