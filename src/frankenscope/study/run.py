"""Run every analysis of a study as resumable units, one result file each.

A unit is done when its marker OUT/<unit>/done.json exists and records the unit's current key: a
hash of the unit's settings (`unit_settings`) and of its inputs' fingerprints (the full content of
every model weight file, and the file list of every data path). The marker is written last, after
the unit's results, figures and tables, and removed before a unit runs, so a unit killed at any
point is run again. A rerun skips done units and reruns units whose settings or inputs changed (it
says so); an interrupted unit is simply run again (fine-grained evaluation resumes from its response
cache). The hybrids unit re-merges its models when the donors or the partition changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from frankenscope.io import (
    fault_point,
    read_json,
    sha256_text,
    tree_fingerprint,
    write_json_atomic,
    write_result,
)
from frankenscope.study.config import StudyConfig

STUDY_SCHEMA_VERSION = 1
HYBRID_PLANS = ("IN:RL:RL", "IN:IN:RL", "RL:RL:IN", "RL:IN:IN", "IN:RL:IN", "RL:IN:RL")
#: The marker of a finished unit, written last.
DONE_FILE = "done.json"
#: Config sections a unit does not depend on (everything else in the config is part of its settings,
#: so a new config field reruns every unit unless it is listed here).
UNIT_IGNORES: dict[str, tuple[str, ...]] = {
    "validate": ("evaluation", "probes", "freeze"),
    "finegrained": ("probes", "freeze", "partition", "non_layer_from", "validate"),
    "attention": ("freeze", "partition", "non_layer_from", "validate"),
    "localize-vision": ("freeze", "partition", "non_layer_from", "validate"),
    "localize-reasoning": ("freeze", "partition", "non_layer_from", "validate"),
    "diff": ("evaluation", "probes", "freeze", "non_layer_from", "validate"),
    "hybrids": ("probes", "freeze", "validate"),
    "freeze": ("probes", "validate"),
}


@dataclass
class Unit:
    """One analysis: `run(folder)` must write `folder/result` (atomically) when it succeeds.

    The optional fields let an executor split the unit (study/executors.py); `run` alone always does all of it.
    requests(folder): the generations `run` will ask its response cache for (doing any preparation they need,
        e.g. merging the hybrids); once they are in the cache, `run` generates nothing.
    parts / combine: independent pieces (name -> part(folder) returning a JSON-able value) and
        combine(folder, {name: value}), together equal to `run`.
    models: models one task of this unit holds at once (GPUs are reserved per model; 0: CPU work only).
    """

    name: str
    result: str
    run: Callable[[Path], Any]
    requests: Callable[[Path], list[Any]] | None = None
    parts: dict[str, Callable[[Path], Any]] | None = None
    combine: Callable[[Path, dict[str, Any]], Any] | None = None
    models: int = 1


def plan_dir(plan: str) -> str:
    return plan.replace(":", "_")


def study_units(cfg: StudyConfig, out: Path, progress: bool = False, log: Callable[[str], Any] = print,
                ) -> list[Unit]:
    """The units of a study, in order (later units may read earlier units' outputs)."""
    from frankenscope.evaluate.run import finegrained_eval
    from frankenscope.weights.diff import diff_models
    from frankenscope.weights.merge import merge_all_hybrids

    m = cfg.models()
    paths = {k: v.path for k, v in m.items()}
    ev = cfg.evaluation
    suite_data = ev.data

    def fg_kwargs(labels: list[str], styles: list[str]) -> dict[str, Any]:
        return dict(suite=ev.suite, data=suite_data, prompt_style=",".join(styles), labels=labels, n=ev.n,
                    n_per_task=ev.n_per_task, seed=cfg.seed, batch_size=ev.batch_size,
                    max_new_tokens=ev.max_new_tokens, **cfg.placement(), benchmarks=",".join(ev.benchmarks) or None,
                    progress=progress, cache=out / "cache.sqlite", prompts=ev.dataset_prompts(), echo=lambda s: None,
                    **cfg.generation_backend())

    def fg(models: list[str], labels: list[str], styles: list[str]) -> Callable[[Path], Any]:
        def run(folder: Path) -> Any:
            return finegrained_eval(models, folder, **fg_kwargs(labels, styles))
        return run

    def fg_requests(models: list[str], labels: list[str], styles: list[str]) -> Callable[[Path], list[Any]]:
        def requests(folder: Path) -> list[Any]:
            from frankenscope.evaluate.run import finegrained_requests

            return finegrained_requests(models, folder, **fg_kwargs(labels, styles))
        return requests

    styles = {k: v.prompt_style for k, v in m.items()}
    units = [validate_unit(cfg, paths)] if cfg.validate_.enabled else []
    main = ([paths["base"], paths["in"], paths["rl"]], ["Base", "IN", "RL"], [styles["base"], styles["in"], styles["rl"]])
    units += [Unit("finegrained", "finegrained.json", fg(*main), requests=fg_requests(*main), models=0)]
    units += probe_units(cfg, paths, progress=progress)
    units.append(Unit("diff", "diff.json", lambda folder: diff_models(
        paths["base"], paths["in"], paths["rl"], folder, partition_spec=cfg.partition, progress=progress), models=0))

    def hybrid_models(folder: Path) -> list[str]:
        """Merge the six hybrids under folder/models (unless merged from these donors already)."""
        from frankenscope.evaluate.cache import model_fingerprint

        key_file = folder / "models" / "merge-key.json"
        key = {"IN": model_fingerprint(paths["in"]), "RL": model_fingerprint(paths["rl"]), "plans": HYBRID_PLANS,
               "partition": cfg.partition, "non_layer_from": cfg.non_layer_from}
        done = all((folder / "models" / plan_dir(p) / "config.json").is_file() for p in HYBRID_PLANS)
        if not done or read_json(key_file) != json.loads(json.dumps(key)):  # reuse merges of these donors only
            key_file.unlink(missing_ok=True)
            merge_all_hybrids({"IN": paths["in"], "RL": paths["rl"]}, folder / "models", plans=HYBRID_PLANS,
                              partition_spec=cfg.partition, non_layer_from=cfg.non_layer_from, progress=progress)
            write_json_atomic(key_file, key)
        return [str(folder / "models" / plan_dir(p)) for p in HYBRID_PLANS]

    def hybrid_eval(hy: list[str]) -> tuple[list[str], list[str], list[str]]:
        return ([paths["in"], *hy, paths["rl"]], ["IN", *HYBRID_PLANS, "RL"],
                [styles["in"]] * (len(hy) + 1) + [styles["rl"]])

    units.append(Unit("hybrids", "finegrained.json", lambda folder: fg(*hybrid_eval(hybrid_models(folder)))(folder),
                      requests=lambda folder: fg_requests(*hybrid_eval(hybrid_models(folder)))(folder), models=0))

    if cfg.organism and cfg.freeze.enabled:

        organism_root = Path(paths["in"]).parent

        seeds = cfg.freeze.seeds or [cfg.seed]

        def frozen_eval(folder: Path) -> tuple[list[str], list[str], list[str]]:
            """Train (or find) the RL re-runs; the models, labels and styles of the freeze suite."""
            runs = frozen_rl_runs(organism_root, cfg.freeze.regions, preset=cfg.organism_preset or "small",
                                  seed=cfg.seed, partition=cfg.partition, progress=progress, log=log, seeds=seeds)
            # the suite (Table 3): the first seed's runs; P7 is decided on the held-out items over all seeds
            shown = {lb: path for lb, path in runs.items() if lb.endswith(f" s{seeds[0]}")}
            labels = [lb.removesuffix(f" s{seeds[0]}") if len(seeds) == 1 else lb for lb in shown]
            return ([paths["in"], paths["rl"], *shown.values()], ["IN", "RL", *labels],
                    [styles["in"], styles["rl"], *[styles["rl"]] * len(shown)])

        def frozen(folder: Path) -> Any:
            models = frozen_eval(folder)
            write_frozen_heldout(folder, organism_root, cfg.freeze.regions, seed=cfg.seed, seeds=seeds)
            return fg(*models)(folder)

        units.append(Unit("freeze", "finegrained.json", frozen,
                          requests=lambda folder: fg_requests(*frozen_eval(folder))(folder), models=0))
    return units


def validate_unit(cfg: StudyConfig, paths: dict[str, str]) -> Unit:
    """The planted-effect checks (`validate.validate`) on the configured model, with the study's IN and RL for
    the transfer check, its placement, partition, seed and the model's prompt style; OUT/validate/."""

    def run(folder: Path) -> Any:
        from frankenscope.validate import ValidateSettings, validate

        v = cfg.validate_
        settings = ValidateSettings(n=v.n, max_new_tokens=v.max_new_tokens, seed=cfg.seed, dtype=cfg.dtype,
                                    device=cfg.device, partition=cfg.partition,
                                    prompt_style=cfg.models()[v.model].prompt_style)
        return validate(paths[v.model], folder, in_=paths["in"], rl=paths["rl"], checks=v.checks,
                        settings=settings, echo=lambda s: None)

    return Unit("validate", "validate.json", run)


CONTROL = "control"


def rerun_folder(region: str, rl_seed: int, seed: int) -> str:
    """The organism folder of one study re-run: rl-frozen-<region> or rl-control, with -s<seed> when the RL
    seed is not the organism's own."""
    name = "rl-control" if region == CONTROL else f"rl-frozen-{region}"
    return name if rl_seed == seed else f"{name}-s{rl_seed}"


def _frozen_rl_job(root: str, region: str, preset: str, seed: int, partition: str, threads: int,
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


def frozen_rl_runs(root: Path, regions: list[str], *, preset: str, seed: int, partition: str,
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


def probe_units(cfg: StudyConfig, paths: dict[str, str], progress: bool = False) -> list[Unit]:
    """Attention (IN vs RL), vision localization and reasoning localization per configured model."""
    from frankenscope.io import write_json_atomic
    from frankenscope.probes.run import run_attention, run_localize_reasoning, run_localize_vision

    pr = cfg.probes
    common = dict(n=pr.n, seed=cfg.seed, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map,
                  progress=progress)
    data_root = pr.data or cfg.evaluation.data
    styles = {k: v.prompt_style for k, v in cfg.models().items()}

    def per_model(kind: str, run: Callable[[str, Path], Path]) -> dict[str, Any]:
        """run / parts / combine of a unit that runs a probe on each configured model (one part per model)."""
        parts = {m: (lambda folder, m=m: str(run(m, folder / m))) for m in pr.models}

        def combine(folder: Path, done: dict[str, Any]) -> Any:
            return write_json_atomic(folder / "summary.json", {"kind": kind, "models": {m: done[m] for m in pr.models}})

        def go(folder: Path) -> Any:
            return combine(folder, {m: part(folder) for m, part in parts.items()})
        return {"run": go, "parts": parts, "combine": combine}

    def vision(m: str, folder: Path) -> Path:
        return run_localize_vision(paths[m], folder, pairs=pr.pairs or "organism", mode=pr.swap_mode,
                                   layers=pr.layers, max_new_tokens=pr.max_new_tokens, prompt_style=styles[m],
                                   attn=cfg.attn_implementation, **common)[1]

    def reasoning(m: str, folder: Path) -> Path:
        return run_localize_reasoning(paths[m], folder, dataset=pr.reasoning_dataset or "organism", data_root=data_root,
                                      layers=pr.layers, max_new_tokens=pr.skip_max_new_tokens,
                                      prompt_style=styles[m], attn=cfg.attn_implementation,
                                      dataset_prompts=cfg.evaluation.dataset_prompts(), **common)[1]

    def attention(folder: Path) -> Any:
        return run_attention({"IN": paths["in"], "RL": paths["rl"]}, folder,
                             dataset=pr.attention_dataset or "organism", data_root=data_root, layers=pr.layers,
                             max_new_tokens=pr.attention_max_new_tokens, prompt_style=styles["rl"],
                             dataset_prompts=cfg.evaluation.dataset_prompts(), **common)

    return [Unit("attention", "attention.json", attention, models=2),
            Unit("localize-vision", "summary.json", **per_model("localize-vision", vision)),
            Unit("localize-reasoning", "summary.json", **per_model("localize-reasoning", reasoning))]


#: Config sections no unit depends on: where the units run (the results are the same on every executor).
EXECUTION_ONLY = ("executor",)


def unit_settings(cfg: StudyConfig, unit: str) -> dict[str, Any]:
    """The part of the config a unit depends on: all of it but the name, `EXECUTION_ONLY` and
    `UNIT_IGNORES[unit]`. The evaluation's backend settings count only when the backend is not the default
    `hf` (so the keys of HF studies are what they were before backends existed)."""
    ignored = {"name", *EXECUTION_ONLY, *UNIT_IGNORES.get(unit, ())}
    out = {k: v for k, v in cfg.model_dump(by_alias=True).items() if k not in ignored}
    if "evaluation" in out and cfg.evaluation.backend == "hf":
        out["evaluation"] = {k: v for k, v in out["evaluation"].items() if k not in ("backend", "vllm")}
    return out


def input_fingerprints(cfg: StudyConfig) -> dict[str, Any]:
    """Fingerprints of the study's inputs: each model's full weight content (`model_fingerprint`; a hub
    id stands for itself) and each data path named in the config (`io.tree_fingerprint`)."""
    from frankenscope.evaluate.cache import model_fingerprint

    out: dict[str, Any] = {}
    for k, spec in cfg.models().items():
        out[k] = model_fingerprint(spec.path) if Path(spec.path).is_dir() else f"id:{spec.path}"
    for name, value in (("evaluation.data", cfg.evaluation.data), ("probes.data", cfg.probes.data),
                        ("probes.pairs", cfg.probes.pairs), ("probes.reasoning_dataset", cfg.probes.reasoning_dataset),
                        ("probes.attention_dataset", cfg.probes.attention_dataset)):
        if value and Path(value).exists():
            out[name] = tree_fingerprint(value)
    return out


def unit_key(cfg: StudyConfig, unit: str, inputs: dict[str, Any]) -> str:
    """sha256 of a unit's settings and input fingerprints (recorded in its done marker)."""
    return sha256_text(json.dumps({"unit": unit, "settings": unit_settings(cfg, unit), "inputs": inputs},
                                  sort_keys=True, default=str))


def run_study(cfg: StudyConfig, out: str | Path, *, progress: bool = True,
              log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run (or resume) every unit under OUT/<unit>/, then write OUT/study.json and the report.

    Every model is checked before anything is written; a unit is skipped only when its done marker
    records its current key (`unit_key`), see the module docstring.
    """
    from frankenscope.loading import check_model_source
    from frankenscope.study.executors import UnitJob, absorb_leftover_records, check_executor, make_executor
    from frankenscope.study.report import write_report

    out = Path(out)
    check_executor(cfg)
    for spec in cfg.models().values():
        check_model_source(spec.path)
    inputs = input_fingerprints(cfg)
    out.mkdir(parents=True, exist_ok=True)
    absorb_leftover_records(out, log)
    units = study_units(cfg, out, progress=False, log=log)
    executor = make_executor(cfg, log)
    t_all = time.time()
    bar = tqdm(total=len(units), desc="study", unit="unit", disable=not progress)
    done_rows: dict[str, dict[str, Any]] = {}
    jobs: list[UnitJob] = []
    reason: dict[str, str] = {}
    for unit in units:
        folder = out / unit.name
        key = unit_key(cfg, unit.name, inputs)
        marker = read_json(folder / DONE_FILE)
        if isinstance(marker, dict) and marker.get("key") == key:
            done_rows[unit.name] = {"unit": unit.name, "status": "skipped (done)", "wall_s": 0.0}
            log(f"[{unit.name}] done before, skipping")
            bar.update(1)
            continue
        if marker is not None:
            reason[unit.name] = "settings or inputs changed since its last run: running again"
        elif (folder / unit.result).is_file():
            reason[unit.name] = "the last run did not finish (or predates done markers): running again"
        else:
            reason[unit.name] = "running"
        jobs.append(UnitJob(unit, folder, key))
    started: dict[str, float] = {}

    def start(job: UnitJob) -> None:
        """Before a unit runs: its marker goes (a unit killed from here on is run again)."""
        started[job.unit.name] = time.time()
        log(f"[{job.unit.name}] {reason[job.unit.name]}" + (f" ({executor.name} executor)" if executor.name != "local"
                                                              else ""))
        job.folder.mkdir(parents=True, exist_ok=True)
        (job.folder / DONE_FILE).unlink(missing_ok=True)

    def finish(job: UnitJob) -> None:
        """After a unit succeeded: its done marker, written last."""
        name = job.unit.name
        fault_point("study:unit_ran")
        write_json_atomic(job.folder / DONE_FILE, {"kind": "study-unit", "unit": name, "key": job.key,
                                                   "settings": unit_settings(cfg, name), "inputs": inputs})
        wall = time.time() - started[name]
        done_rows[name] = {"unit": name, "status": "ran", "wall_s": round(wall, 1)}
        log(f"[{name}] finished in {wall:.0f}s")
        bar.update(1)

    try:
        executor.run(jobs, out, start, finish)
    finally:
        bar.close()
    rows = [done_rows[u.name] for u in units]
    summary = {"config": cfg.model_dump(by_alias=True), "units": rows, "wall_s": round(time.time() - t_all, 1)}
    write_result(out / "study.json", "study", STUDY_SCHEMA_VERSION, summary, seed=cfg.seed,
                 inputs={k: v.path for k, v in cfg.models().items()})
    report = write_report(out)
    log("\n| unit | status | wall s |\n|---|---|---:|\n" + "\n".join(
        f"| {r['unit']} | {r['status']} | {r['wall_s']} |" for r in rows))
    log(f"report: {report['html']} and {report['markdown']}")
    return summary
