"""The study's units: one builder per registered analysis (`frankenscope.analyses.ANALYSES` names them).

A builder takes the study's `UnitContext` and returns the unit's `Work` (its `run(folder)`, which must write
the analysis's result file in `folder` atomically, and the pieces an executor may split it into) or just that
run function, or None when the analysis is not part of this study.
Every builder calls the application layer (`evaluate.run`, `probes.run`, `weights`, `validate`); the
runner (`study.run`) decides when a unit runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frankenscope.io import read_json, write_json_atomic, write_result
from frankenscope.study.config import StudyConfig
from frankenscope.weights.partition import Partition

STUDY_SCHEMA_VERSION = 1
HYBRID_PLANS = ("IN:RL:RL", "IN:IN:RL", "RL:RL:IN", "RL:IN:IN", "IN:RL:IN", "RL:IN:RL")

UnitRun = Callable[[Path], Any]


def plan_dir(plan: str) -> str:
    return plan.replace(":", "_")


@dataclass
class UnitContext:
    """What every unit builder gets: the config, the study folder, the models' paths and prompt styles."""

    cfg: StudyConfig
    out: Path
    progress: bool = False
    log: Callable[[str], Any] = print
    paths: dict[str, str] = field(init=False)
    styles: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        m = self.cfg.models()
        self.paths = {k: v.path for k, v in m.items()}
        self.styles = {k: v.prompt_style for k, v in m.items()}

    def finegrained_kwargs(self, labels: list[str], styles: list[str]) -> dict[str, Any]:
        """`finegrained_eval`'s settings in a study: the evaluation section, placement, generation backend,
        the shared response cache; `labels` name the columns, `styles` the models' prompt styles."""
        cfg, ev = self.cfg, self.cfg.evaluation
        return dict(suite=ev.suite, data=ev.data, prompt_style=",".join(styles), labels=labels, n=ev.n,
                    n_per_task=ev.n_per_task, seed=cfg.seed, batch_size=ev.batch_size,
                    max_new_tokens=ev.max_new_tokens, **cfg.placement(), benchmarks=",".join(ev.benchmarks) or None,
                    progress=self.progress, cache=self.out / "cache.sqlite", prompts=ev.dataset_prompts(),
                    echo=lambda s: None, **cfg.generation_backend())

    def evaluate(self, folder: Path, models: list[str], labels: list[str], styles: list[str]) -> Any:
        """`finegrained_eval` of `models` into `folder` with the study's settings."""
        from frankenscope.evaluate.run import finegrained_eval

        return finegrained_eval(models, folder, **self.finegrained_kwargs(labels, styles))

    def finegrained(self, models: Callable[[Path], tuple[list[str], list[str], list[str]]]) -> Work:
        """A fine-grained evaluation unit. `models(folder)` gives (models, labels, styles), doing whatever
        preparation they need (merging hybrids, training re-runs); `requests` lists the generations the
        evaluation will ask for, so an executor can generate them in shards first."""
        def run(folder: Path) -> Any:
            return self.evaluate(folder, *models(folder))

        def requests(folder: Path) -> list[Any]:
            from frankenscope.evaluate.run import finegrained_requests

            ms, labels, styles = models(folder)
            return finegrained_requests(ms, folder, **self.finegrained_kwargs(labels, styles))
        return Work(run, requests=requests)


@dataclass
class Work:
    """What a unit builder returns: `run(folder)` does all of the unit. The optional pieces let an executor
    split it (study/executors.py): requests(folder), the generations `run` will ask its response cache for
    (once they are cached, `run` generates nothing); parts(folder), planned when the unit starts (name ->
    part(folder) returning a JSON-able value; the probes: one per probe shard), and combine(folder, {name:
    value}), together equal to `run`."""

    run: UnitRun
    requests: Callable[[Path], list[Any]] | None = None
    parts: Callable[[Path], dict[str, UnitRun]] | None = None
    combine: Callable[[Path, dict[str, Any]], Any] | None = None


def validate_unit(ctx: UnitContext) -> UnitRun | None:
    """The planted-effect checks (`validate.validate`) on the configured model, with the study's IN and RL for
    the transfer check, its placement, partition, seed and the model's prompt style; OUT/validate/."""
    cfg, paths = ctx.cfg, ctx.paths
    if not cfg.validate_.enabled:
        return None

    def run(folder: Path) -> Any:
        from frankenscope.validate import ValidateSettings, validate

        v = cfg.validate_
        settings = ValidateSettings(n=v.n, max_new_tokens=v.max_new_tokens, seed=cfg.seed, dtype=cfg.dtype,
                                    device=cfg.device, partition=cfg.partition_parsed, prompt_style=ctx.styles[v.model])
        return validate(paths[v.model], folder, in_=paths["in"], rl=paths["rl"], checks=v.checks,
                        settings=settings, echo=lambda s: None)

    return run


def finegrained_unit(ctx: UnitContext) -> Work:
    """Base, IN and RL on the fine-grained metrics (Fig. 2, Table 1)."""
    p, s = ctx.paths, ctx.styles
    triple = ([p["base"], p["in"], p["rl"]], ["Base", "IN", "RL"], [s["base"], s["in"], s["rl"]])
    return ctx.finegrained(lambda folder: triple)


def _probe_common(ctx: UnitContext) -> dict[str, Any]:
    cfg = ctx.cfg
    return dict(n=cfg.probes.n, seed=cfg.seed, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map,
                progress=ctx.progress)


def _probe_work(ctx: UnitContext, probes: Callable[[Path], dict[str, Any]],
                write: Callable[[Path, dict[str, str]], Any] | None = None) -> Work:
    """A probe unit. `probes(folder)` prepares its probes (name -> `probes.shards.ShardedProbe`); `write(folder,
    {name: result file})` writes the unit's own result once every probe is finished (None: the probe's result
    file is the unit's). Run whole, each probe is one shard (`run_probe`); split for an executor, the parts are
    one per probe and shard of `executor.probe_shard_items` items (planned when the unit starts), and combine
    merges each probe's shard files into the result the whole run writes (probes/shards.py)."""
    from frankenscope.probes.shards import combine_probe_shards, plan_probe_shards, run_probe, run_probe_shard

    shard_items = ctx.cfg.executor.probe_shard_items

    def finish(folder: Path, paths: dict[str, str]) -> Any:
        return write(folder, paths) if write is not None else paths

    def run(folder: Path) -> Any:
        return finish(folder, {name: str(run_probe(p)[1]) for name, p in probes(folder).items()})

    def parts(folder: Path) -> dict[str, UnitRun]:
        return {f"{name}/{sh.index:04d}": (lambda _folder, p=p, sh=sh: run_probe_shard(p, sh))
                for name, p in probes(folder).items() for sh in plan_probe_shards(p.batches(), shard_items)}

    def combine(folder: Path, done: dict[str, Any]) -> Any:
        return finish(folder, {name: str(combine_probe_shards(p, shard_items)[1])
                               for name, p in probes(folder).items()})

    return Work(run, parts=parts, combine=combine)


def _per_model(ctx: UnitContext, kind: str, prepare: Callable[[str, Path], Any]) -> Work:
    """A probe on each configured probe model into folder/<model>/, then folder/summary.json naming each
    model's result file."""
    models = ctx.cfg.probes.models

    def write(folder: Path, paths: dict[str, str]) -> Any:
        return write_json_atomic(folder / "summary.json", {"kind": kind, "models": {m: paths[m] for m in models}})

    return _probe_work(ctx, lambda folder: {m: prepare(m, folder / m) for m in models}, write)


def attention_unit(ctx: UnitContext) -> Work:
    """Attention to the image, IN vs RL (Fig. 3): one probe holding both models."""
    from frankenscope.probes.run import prepare_attention

    cfg, pr = ctx.cfg, ctx.cfg.probes

    def probe(folder: Path) -> dict[str, Any]:
        return {"attention": prepare_attention(
            {"IN": ctx.paths["in"], "RL": ctx.paths["rl"]}, folder, dataset=pr.attention_dataset or "organism",
            data_root=pr.data or cfg.evaluation.data, layers=pr.layers, max_new_tokens=pr.attention_max_new_tokens,
            prompt_style=ctx.styles["rl"], dataset_prompts=cfg.evaluation.dataset_prompts(), **_probe_common(ctx))}
    return _probe_work(ctx, probe)


def localize_vision_unit(ctx: UnitContext) -> Work:
    """Visual-token swapping per probe model (Fig. 4a)."""
    from frankenscope.probes.run import prepare_localize_vision

    cfg, pr = ctx.cfg, ctx.cfg.probes

    def vision(m: str, folder: Path) -> Any:
        return prepare_localize_vision(ctx.paths[m], folder, pairs=pr.pairs or "organism", mode=pr.swap_mode,
                                       layers=pr.layers, max_new_tokens=pr.max_new_tokens, prompt_style=ctx.styles[m],
                                       attn=cfg.attn_implementation, **_probe_common(ctx))
    return _per_model(ctx, "localize-vision", vision)


def localize_reasoning_unit(ctx: UnitContext) -> Work:
    """Layer skipping per probe model (Fig. 4b)."""
    from frankenscope.probes.run import prepare_localize_reasoning

    cfg, pr = ctx.cfg, ctx.cfg.probes

    def reasoning(m: str, folder: Path) -> Any:
        return prepare_localize_reasoning(ctx.paths[m], folder, dataset=pr.reasoning_dataset or "organism",
                                          data_root=pr.data or cfg.evaluation.data, layers=pr.layers,
                                          max_new_tokens=pr.skip_max_new_tokens, prompt_style=ctx.styles[m],
                                          attn=cfg.attn_implementation,
                                          dataset_prompts=cfg.evaluation.dataset_prompts(), **_probe_common(ctx))
    return _per_model(ctx, "localize-reasoning", reasoning)


def diff_unit(ctx: UnitContext) -> UnitRun:
    """Update energy and diversity of Base -> IN -> RL (Fig. 5, Fig. 6)."""
    from frankenscope.weights.diff import diff_models

    p = ctx.paths
    return lambda folder: diff_models(p["base"], p["in"], p["rl"], folder, partition=ctx.cfg.partition_parsed,
                                      progress=ctx.progress)


def hybrids_unit(ctx: UnitContext) -> Work:
    """The six region-wise IN/RL hybrids (merged under folder/models/, re-merged only when the donors or the
    partition changed), evaluated between IN and RL (Table 2)."""
    cfg, paths = ctx.cfg, ctx.paths

    def models(folder: Path) -> tuple[list[str], list[str], list[str]]:
        from frankenscope.evaluate.cache import model_fingerprint
        from frankenscope.weights.merge import merge_all_hybrids

        key_file = folder / "models" / "merge-key.json"
        key = {"IN": model_fingerprint(paths["in"]), "RL": model_fingerprint(paths["rl"]), "plans": HYBRID_PLANS,
               "partition": cfg.partition, "non_layer_from": cfg.non_layer_from}
        done = all((folder / "models" / plan_dir(p) / "config.json").is_file() for p in HYBRID_PLANS)
        if not done or read_json(key_file) != json.loads(json.dumps(key)):  # reuse merges of these donors only
            key_file.unlink(missing_ok=True)
            merge_all_hybrids({"IN": paths["in"], "RL": paths["rl"]}, folder / "models", plans=HYBRID_PLANS,
                              partition=cfg.partition_parsed, non_layer_from=cfg.non_layer_from, progress=ctx.progress)
            write_json_atomic(key_file, key)
        hy = [str(folder / "models" / plan_dir(p)) for p in HYBRID_PLANS]
        return ([paths["in"], *hy, paths["rl"]], ["IN", *HYBRID_PLANS, "RL"],
                [ctx.styles["in"]] * (len(hy) + 1) + [ctx.styles["rl"]])
    return ctx.finegrained(models)


def freeze_unit(ctx: UnitContext) -> Work | None:
    """RL re-runs with one region frozen against an unfrozen control (Table 3; the organism only: it needs the
    built-in RL trainer)."""
    cfg, paths = ctx.cfg, ctx.paths
    if not (cfg.organism and cfg.freeze.enabled):
        return None
    organism_root = Path(paths["in"]).parent
    seeds = cfg.freeze.seeds or [cfg.seed]

    def models(folder: Path) -> tuple[list[str], list[str], list[str]]:
        """Train (or find) the RL re-runs; the suite (Table 3) shows the first seed's runs."""
        runs = frozen_rl_runs(organism_root, cfg.freeze.regions, preset=cfg.organism_preset or "small",
                              seed=cfg.seed, partition=cfg.partition_parsed, progress=ctx.progress, log=ctx.log,
                              seeds=seeds)
        shown = {lb: path for lb, path in runs.items() if lb.endswith(f" s{seeds[0]}")}
        labels = [lb.removesuffix(f" s{seeds[0]}") if len(seeds) == 1 else lb for lb in shown]
        return ([paths["in"], paths["rl"], *shown.values()], ["IN", "RL", *labels],
                [ctx.styles["in"], ctx.styles["rl"], *[ctx.styles["rl"]] * len(shown)])

    work = ctx.finegrained(models)

    def run(folder: Path) -> Any:
        evaluated = models(folder)  # the re-runs first, then P7's held-out comparison, then the suite
        write_frozen_heldout(folder, organism_root, cfg.freeze.regions, seed=cfg.seed, seeds=seeds)
        return ctx.evaluate(folder, *evaluated)
    return Work(run, requests=work.requests)


CONTROL = "control"


def rerun_folder(region: str, rl_seed: int, seed: int) -> str:
    """The organism folder of one study re-run: rl-frozen-<region> or rl-control, with -s<seed> when the RL
    seed is not the organism's own."""
    name = "rl-control" if region == CONTROL else f"rl-frozen-{region}"
    return name if rl_seed == seed else f"{name}-s{rl_seed}"


def _frozen_rl_job(root: str, region: str, preset: str, seed: int, partition: Partition, threads: int,
                   rl_seed: int | None = None) -> str:
    """One RL re-run in a worker process (torch threads set first): `region` frozen, or none for the
    control. Every re-run, the control included, goes through exactly this function."""
    import torch

    from frankenscope.organism.build import build

    torch.set_num_threads(threads)
    rl_seed = seed if rl_seed is None else rl_seed
    folder = rerun_folder(region, rl_seed, seed)
    build(root, preset=preset, seed=seed, freeze=None if region == CONTROL else region, partition=partition,
          progress=False, log=lambda *_: None, trust_finished=True, rl_seed=None if rl_seed == seed else rl_seed,
          rl_folder=folder)
    return str(Path(root) / folder)


def frozen_rl_runs(root: Path, regions: list[str], *, preset: str, seed: int, partition: Partition,
                   progress: bool = True, log: Callable[[str], Any] = print,
                   seeds: list[int] | None = None) -> dict[str, str]:
    """RL re-runs from the organism's IN, per RL seed: one per frozen region plus an unfrozen control,
    all as parallel worker processes of the same kind (spawned, same torch thread count), so the control
    differs from a frozen run only in what is frozen. Returns {"RL control s<k>" / "RL frozen <r> s<k>": path}.

    The organism is small, so one process per run with one torch thread each uses the cores better than
    one run after another with all threads (about 1.3x the throughput on 2 cores); all runs start at once
    (cores // runs threads each, at least 1). Runs that are already finished are skipped by the build.
    """
    import concurrent.futures as cf
    import multiprocessing as mp
    import os

    from tqdm.auto import tqdm

    seeds = seeds or [seed]
    jobs = [(r, s) for s in seeds for r in [CONTROL, *regions]]
    cores = os.cpu_count() or 1
    workers = max(1, len(jobs))  # all at once: a queued run would leave cores idle at the end
    threads = max(1, cores // workers)
    log(f"[freeze] {len(jobs)} RL re-runs (control + {', '.join(regions)}; seeds {seeds}) in {workers} processes "
        f"x {threads} threads")
    out: dict[str, str] = {}
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_frozen_rl_job, str(root), r, preset, seed, partition, threads, s): (r, s)
                   for r, s in jobs}
        for f in tqdm(cf.as_completed(futures), total=len(futures), desc="frozen RL", disable=not progress):
            log(f"[freeze] {futures[f][0]} seed {futures[f][1]} done: {f.result()}")
    for r, s in jobs:
        label = "RL control" if r == CONTROL else f"RL frozen {r}"
        out[f"{label} s{s}"] = str(root / rerun_folder(r, s, seed))
    return out


def write_frozen_heldout(folder: Path, root: Path, regions: list[str], *, seed: int,
                         seeds: list[int] | None = None) -> dict[str, Any]:
    """freeze/heldout.json and summary.md: frozen-R re-run - unfrozen control re-run on the organism's
    held-out items (a data stream no stage trains on; 200 per vision-to-reasoning task on `small`),
    paired per item, per category and task.

    Per seed: `metrics.paired_binary` (Newcombe score interval + exact McNemar). "pooled": the same for
    one seed, else `metrics.seed_pooled_difference` over the seeds (run-to-run plus item variance).
    """
    from frankenscope.errors import FrankenscopeError
    from frankenscope.evaluate.metrics import paired_binary, seed_pooled_difference
    from frankenscope.io import write_text_atomic
    from frankenscope.organism.build import heldout_pairs
    from frankenscope.organism.tasks import V2R_TASKS
    from frankenscope.study.report import fmt_ci

    seeds = seeds or [seed]
    diffs: dict[str, Any] = {}
    for r in regions:
        per_seed: dict[str, dict[str, tuple[list[bool], list[bool]]]] = {}
        for s in seeds:
            control, frozen = (root / rerun_folder(x, s, seed) for x in (CONTROL, r))
            pairs = heldout_pairs(control, frozen)
            if pairs is None:
                raise FrankenscopeError(f"{control} or {frozen} has no stage.json with held-out results")
            per_seed[str(s)] = pairs
        groups = set.intersection(*(set(p) for p in per_seed.values()))
        pooled = {g: paired_binary(*per_seed[str(seeds[0])][g]) if len(seeds) == 1 else
                  seed_pooled_difference([per_seed[str(s)][g] for s in seeds]) for g in sorted(groups)}
        diffs[r] = {"pooled": pooled,
                    "per_seed": {s: {g: paired_binary(a, b) for g, (a, b) in p.items()} for s, p in per_seed.items()}}
    write_result(folder / "heldout.json", "frozen-rl-heldout", STUDY_SCHEMA_VERSION,
                 {"seeds": seeds, "control": "unfrozen RL re-run (same worker path as the frozen runs)",
                  "frozen_minus_control": diffs}, seed=seed, inputs={"organism": str(root), "regions": regions})
    shown = ("v2r", *V2R_TASKS, "perception", "text")  # P7 is about v2r; every task's numbers are in the json
    groups_shown = [g for g in shown if any(g in d["pooled"] for d in diffs.values())]
    lines = [f"Held-out items of the organism (paired over the same items): frozen re-run - unfrozen control "
             f"re-run, accuracy, 95% CI; {len(seeds)} seed(s) {seeds}"
             + (" (one run each: run-to-run RL variance is not in the interval)" if len(seeds) < 2 else
                " (interval over seeds: run-to-run and item variance)"), "",
             "| region | " + " | ".join(groups_shown) + " |", "|---|" + "---|" * len(groups_shown)]
    for r, d in diffs.items():
        lines.append(f"| {r} | " + " | ".join(
            f"{fmt_ci(d['pooled'][g], 'diff')} (n={d['pooled'][g]['n']})" if g in d["pooled"] else "n/a"
            for g in groups_shown) + " |")
    write_text_atomic(folder / "summary.md", "\n".join(lines) + "\n")
    return diffs
