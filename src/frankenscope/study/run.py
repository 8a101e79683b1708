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

from frankenscope.analyses import ANALYSES, resolve
from frankenscope.io import (
    fault_point,
    read_json,
    sha256_text,
    tree_fingerprint,
    write_json_atomic,
    write_result,
)
from frankenscope.study.config import StudyConfig
from frankenscope.study.units import (  # noqa: F401 - re-exported: the unit builders' helpers live there
    HYBRID_PLANS,
    STUDY_SCHEMA_VERSION,
    UnitContext,
    Work,
    frozen_rl_runs,
    plan_dir,
    rerun_folder,
    write_frozen_heldout,
)

#: The marker of a finished unit, written last.
DONE_FILE = "done.json"
#: Config sections a unit does not depend on (everything else in the config is part of its settings,
#: so a new config field reruns every unit unless its analysis lists it in `Analysis.ignores`).
UNIT_IGNORES: dict[str, tuple[str, ...]] = {a.name: a.ignores for a in ANALYSES}


@dataclass
class Unit:
    """One analysis: `run(folder)` must write `folder/result` (atomically) when it succeeds.

    The optional fields let an executor split the unit (study/executors.py); `run` alone always does all of it.
    requests(folder): the generations `run` will ask its response cache for (doing any preparation they need,
        e.g. merging the hybrids); once they are in the cache, `run` generates nothing.
    parts / combine: parts(folder) plans independent pieces when the unit starts (name -> part(folder) returning
        a JSON-able value; a probe unit: one per probe shard) and combine(folder, {name: value}) finishes the
        unit from them; together they equal `run`.
    models: models one task of this unit holds at once (GPUs are reserved per model; 0: CPU work only).
    """

    name: str
    result: str
    run: Callable[[Path], Any]
    requests: Callable[[Path], list[Any]] | None = None
    parts: Callable[[Path], dict[str, Callable[[Path], Any]]] | None = None
    combine: Callable[[Path, dict[str, Any]], Any] | None = None
    models: int = 1


def study_units(cfg: StudyConfig, out: Path, progress: bool = False, log: Callable[[str], Any] = print,
                ) -> list[Unit]:
    """The units of a study, in the registry's order (`frankenscope.analyses.ANALYSES`; later units may read
    earlier units' outputs); analyses whose builder returns None are not part of this study."""
    ctx = UnitContext(cfg, Path(out), progress=progress, log=log)
    units = []
    for a in ANALYSES:
        work = resolve(a.unit)(ctx)
        if work is None:
            continue
        if callable(work):
            work = Work(work)
        units.append(Unit(a.name, a.result, work.run, requests=work.requests, parts=work.parts,
                          combine=work.combine, models=a.models))
    return units


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
