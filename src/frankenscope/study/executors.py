"""Where a study's units run: `LocalExecutor` (the default: this process, one unit after another) or
`RayExecutor` (`--executor ray`: units, their parts and evaluation shards as Ray tasks).

`run_study` decides which units to run (done markers, unit keys) and hands them to an executor with two
callbacks: `start(job)` before a unit runs (removes its marker) and `finish(job)` after it succeeded (writes
its marker). The executor only decides where and in which order the work happens; what a unit computes is
the same on both, so the result files are identical.

Ray (imported only by the Ray executor; `pip install 'frankenscope[ray]'`):

- A unit with `requests` (an evaluation: finegrained, hybrids, freeze) runs in three steps: a task computes
  its generation requests (merging the hybrids or training the frozen RL re-runs first, when the unit has
  such a step), the requests are cut into shards (`evaluate.shards.plan_shards`: the same chunks and batches
  as a local run), one task per shard generates into its own record file, and when every shard the unit
  needs is done the driver merges the records into the study's response cache and runs the unit itself in
  the driver, where every response is now a cache hit (grading, metrics and figures only).
- A unit with `parts` (a probe unit) plans its parts in the driver when it starts (one per probe and shard of
  `executor.probe_shard_items` items: consecutive whole batches of the probe's own run) and runs one task per
  part, each writing its records to its own shard file; when all are done the driver combines them (merges
  each probe's records in item order and writes exactly the files a local run writes; probes/shards.py).
- Any other unit is one task.
Independent tasks run at once, as far as the cluster's CPUs and GPUs allow: each task reserves one CPU and
`models x gpus_per_model` GPUs (`task_gpus`). A task whose worker dies is retried by Ray (`max_retries`); a
retried shard keeps the batches it had recorded. The driver alone writes the done markers and the SQLite
cache, so SQLite is never shared across machines; OUT must be on a file system every node can read and
write (the shard records, models and results are written there). If the driver dies, run the study again:
finished units are skipped (done markers) and shard records left behind are merged into the cache first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frankenscope.errors import FrankenscopeError
from frankenscope.study.config import StudyConfig

#: Folder (under the study's OUT) of the shard record files.
SHARDS_DIR = "shards"
#: Bytes per parameter of each dtype name (the config's dtype); "auto" counts as bf16.
DTYPE_BYTES = {"float32": 4, "fp32": 4, "float64": 8, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 2}
#: Memory one loaded model takes beyond its weights (activations, KV cache of a generation batch), as a factor.
MEMORY_OVERHEAD = 1.3


@dataclass
class UnitJob:
    """One unit to run: the unit (study.run.Unit), its folder and its key (recorded in the done marker)."""

    unit: Any
    folder: Path
    key: str
    results: dict[str, Any] = field(default_factory=dict)


class LocalExecutor:
    """Run every job in this process, in order: start, unit.run, finish."""

    name = "local"

    def run(self, jobs: list[UnitJob], out: Path, start: Callable[[UnitJob], None],
            finish: Callable[[UnitJob], None]) -> None:
        for job in jobs:
            start(job)
            job.unit.run(job.folder)
            finish(job)


def make_executor(cfg: StudyConfig, log: Callable[[str], Any] = print) -> LocalExecutor | RayExecutor:
    """The executor the config asks for (`executor.kind`)."""
    if cfg.executor.kind == "ray":
        return RayExecutor(cfg, log)
    return LocalExecutor()


# --------------------------------------------------------------------------- resources


def param_count(folder: Path) -> int | None:
    """Parameters of a local safetensors checkpoint, from the file headers (None when it has none)."""
    from frankenscope.weights.reader import read_header

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        header, _, _ = read_header(f)
        for entry in header.values():
            total += math.prod(entry.get("shape") or [1])
    return total


def on_gpu(cfg: StudyConfig) -> bool:
    """Whether the config places models on GPUs (a cuda device, or a device_map); with neither they load on
    the CPU (`loading.load_model`)."""
    return cfg.device_map is not None or (cfg.device or "cpu").startswith("cuda")


def gpus_per_model(cfg: StudyConfig, log: Callable[[str], Any] = print) -> float:
    """GPUs a task reserves per model it holds: executor.gpus_per_model when set; 0 on the CPU; otherwise
    ceil(parameters x bytes per parameter of `dtype` x MEMORY_OVERHEAD / gpu_memory_gb) over the largest
    local model (parameters counted from the safetensors headers), at least 1. A model that is not a local
    folder (a hub id) counts as needing 1 GPU."""
    ex = cfg.executor
    if ex.gpus_per_model is not None:
        return ex.gpus_per_model
    if not on_gpu(cfg):
        return 0.0
    need = 1
    for spec in cfg.models().values():
        folder = Path(spec.path)
        n = param_count(folder) if folder.is_dir() else None
        if n is None:
            log(f"[ray] {spec.path}: not a local checkpoint, reserving 1 GPU per model (set executor.gpus_per_model)")
            continue
        need = max(need, math.ceil(n * DTYPE_BYTES.get(cfg.dtype, 4) * MEMORY_OVERHEAD / (ex.gpu_memory_gb * 2**30)))
    return float(need)


def task_gpus(cfg: StudyConfig, models: int, per_model: float) -> float:
    """GPUs of a task holding `models` models (a vLLM shard: tensor_parallel_size when that is larger)."""
    if models == 0 or per_model == 0:
        return 0.0
    return models * per_model


# --------------------------------------------------------------------------- Ray tasks (run in workers)


def _call(fn: Callable[[Path], Any], folder: str, keep: bool) -> Any:
    """Run fn(folder) in a worker; its value comes back only when `keep` (parts return JSON-able values)."""
    value = fn(Path(folder))
    return value if keep else None


def _shard(shard: Any, records: str) -> dict[str, int]:
    from frankenscope.evaluate.shards import run_shard

    return run_shard(shard, records)


def _pipeline(shards: list[Any], records_dir: str, concurrency: int) -> dict[str, int]:
    """The shards of one model through one Ray Data vLLM pipeline (`evaluate.ray_data.run_pipeline`)."""
    from frankenscope.evaluate.ray_data import run_pipeline

    return run_pipeline(shards, records_dir, concurrency=concurrency)


# --------------------------------------------------------------------------- the Ray executor


class RayExecutor:
    """Run the jobs as Ray tasks (see the module docstring)."""

    name = "ray"

    def __init__(self, cfg: StudyConfig, log: Callable[[str], Any] = print) -> None:
        self.cfg = cfg
        self.log = log

    def _connect(self, ray: Any) -> bool:
        """Join the configured cluster, or start a local one; True when this call started Ray."""
        if ray.is_initialized():
            return False
        ex = self.cfg.executor
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if ex.address:
            kwargs["address"] = ex.address
        else:
            import frankenscope

            # workers import frankenscope from where this process does, and see the same FRANKENSCOPE_* settings
            src = str(Path(frankenscope.__file__).resolve().parents[1])
            env = {k: v for k, v in os.environ.items() if k.startswith("FRANKENSCOPE_")}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
            kwargs.update(num_cpus=ex.num_cpus, runtime_env={"env_vars": env})
        ray.init(**kwargs)
        return True

    def run(self, jobs: list[UnitJob], out: Path, start: Callable[[UnitJob], None],
            finish: Callable[[UnitJob], None]) -> None:
        from frankenscope.extras import require_extra

        ray = require_extra("ray", "the ray executor (--executor ray)")
        if not jobs:
            return
        started = self._connect(ray)
        try:
            _RayRun(ray, self.cfg, out, self.log, start, finish).run(jobs)
        finally:
            if started:
                ray.shutdown()
        shards = out / SHARDS_DIR
        if shards.is_dir() and not any(shards.iterdir()):
            shards.rmdir()


class _RayRun:
    """One study's worth of Ray tasks: submission, the dependencies between them, and the driver-side steps."""

    def __init__(self, ray: Any, cfg: StudyConfig, out: Path, log: Callable[[str], Any],
                 start: Callable[[UnitJob], None], finish: Callable[[UnitJob], None]) -> None:
        self.ray, self.cfg, self.out, self.log = ray, cfg, out, log
        self.start, self.finish = start, finish
        self.per_model = gpus_per_model(cfg, log)
        self.pending: dict[Any, tuple[str, UnitJob | None, str]] = {}  # ref -> (what, job, name)
        self.owner: dict[str, str] = {}        # cache key -> shard id
        self.shards_left: set[str] = set()     # shard ids submitted and not yet merged
        self.eval_order: list[UnitJob] = []    # evaluation units, in unit order (shards are planned in it)
        self.requests: dict[str, list[Any]] = {}
        self.waiting: dict[str, set[str]] = {}  # evaluation unit -> shard ids it still needs
        self.waiting_jobs: dict[str, UnitJob] = {}
        self.parts_left: dict[str, set[str]] = {}

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], gpus: float, what: str, job: UnitJob | None,
                name: str = "") -> None:
        remote = self.ray.remote(fn).options(num_cpus=1, num_gpus=gpus, max_retries=self.cfg.executor.max_retries,
                                             name=f"{what}:{job.unit.name if job else ''}:{name}")
        self.pending[remote.remote(*args)] = (what, job, name)

    def _gpus(self, models: int) -> float:
        return task_gpus(self.cfg, models, self.per_model)

    def _shard_gpus(self) -> float:
        if self.per_model == 0:
            return 0.0
        if self.cfg.evaluation.backend == "vllm":
            return float(max(self.cfg.evaluation.vllm.tensor_parallel_size, self.per_model))
        return self.per_model

    def run(self, jobs: list[UnitJob]) -> None:
        for job in jobs:
            self.start(job)
            u = job.unit
            if u.requests is not None:
                self.eval_order.append(job)
                self._submit(_call, (u.requests, str(job.folder), True), self._gpus(u.models), "requests", job)
            elif u.parts is not None:
                parts = u.parts(job.folder)
                self.log(f"[{u.name}] {len(parts)} part task(s)")
                if not parts:  # e.g. no probe models: nothing to run, the unit's own result only
                    u.combine(job.folder, {})
                    self.finish(job)
                    continue
                self.parts_left[u.name] = set(parts)
                for name, part in parts.items():
                    self._submit(_call, (part, str(job.folder), True), self._gpus(u.models), "part", job, name)
            else:
                self._submit(_call, (u.run, str(job.folder), False), self._gpus(u.models), "unit", job)
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            ref = ready[0]
            what, job, name = self.pending.pop(ref)
            value = self.ray.get(ref)  # a task's error is raised here (after its retries)
            getattr(self, f"_on_{what}")(job, name, value)

    # ------------------------------------------------------------------ completions

    def _on_unit(self, job: UnitJob, name: str, value: Any) -> None:
        self.finish(job)

    def _on_part(self, job: UnitJob, name: str, value: Any) -> None:
        if isinstance(value, dict) and value.get("reused"):
            self.log(f"[{job.unit.name} part {name}] its records, written before a retry, were kept")
        job.results[name] = value
        left = self.parts_left[job.unit.name]
        left.discard(name)
        if not left:
            job.unit.combine(job.folder, job.results)
            self.finish(job)

    def _on_requests(self, job: UnitJob, name: str, value: Any) -> None:
        self.requests[job.unit.name] = value
        self._plan_ready_units()

    def _plan_ready_units(self) -> None:
        """Plan the shards of every evaluation unit whose requests are in, in unit order (a unit is planned only
        after all earlier ones, so keys shared with an earlier unit are left to that unit's shards, as a
        local run would find them cached)."""
        from frankenscope.evaluate.cache import ResponseCache
        from frankenscope.evaluate.shards import plan_shards

        while self.eval_order and self.eval_order[0].unit.name in self.requests:
            job = self.eval_order.pop(0)
            reqs = self.requests.pop(job.unit.name)
            keys = [k for r in reqs for k in r.cache_keys()]
            with ResponseCache(self.out / "cache.sqlite") as cache:
                cached = set(cache.get_many("generate", keys))
            shards = plan_shards(reqs, cached, self.owner, shard_items=self.cfg.executor.shard_items)
            self.shards_left.update(sh.id for sh in shards)
            if self.cfg.evaluation.backend == "vllm" and self.cfg.executor.vllm_pipeline == "ray-data":
                self._submit_pipelines(shards)
            else:
                for sh in shards:
                    self._submit(_shard, (sh, str(self.out / SHARDS_DIR / f"{sh.id}.jsonl")), self._shard_gpus(),
                                 "shard", None, sh.id)
            self.waiting[job.unit.name] = {self.owner[k] for k in keys if k in self.owner} & self.shards_left
            self.log(f"[{job.unit.name}] {sum(sh.n_items for sh in shards)} responses to generate in {len(shards)} "
                     f"shard(s), {len(set(keys) & cached)} cached")
            self.waiting_jobs[job.unit.name] = job
            self._finalize_ready()

    def _submit_pipelines(self, shards: list[Any]) -> None:
        """One Ray Data pipeline task per model (the task itself needs no GPU: the pipeline's engine replicas
        reserve theirs, as many replicas as the cluster's GPUs hold engines of tensor_parallel_size)."""
        tp = self.cfg.evaluation.vllm.tensor_parallel_size
        replicas = max(1, int(self.ray.cluster_resources().get("GPU", 0) // tp))
        by_spec: dict[str, list[Any]] = {}
        for sh in shards:
            by_spec.setdefault(repr(sh.spec), []).append(sh)
        for group in by_spec.values():
            ids = ",".join(sh.id for sh in group)
            self._submit(_pipeline, (group, str(self.out / SHARDS_DIR), replicas), 0.0, "pipeline", None, ids)

    def _on_pipeline(self, job: UnitJob | None, name: str, value: Any) -> None:
        """A pipeline's shards are merged like shard tasks' (its records are in the same files)."""
        for shard_id in name.split(","):
            self._on_shard(None, shard_id, {"reused": 0})

    def _on_shard(self, job: UnitJob | None, name: str, value: Any) -> None:
        from frankenscope.evaluate.cache import ResponseCache
        from frankenscope.evaluate.shards import absorb_record_file

        with ResponseCache(self.out / "cache.sqlite") as cache:
            absorb_record_file(self.out / SHARDS_DIR / f"{name}.jsonl", cache)
        if value.get("reused"):
            self.log(f"[shard {name}] {value['reused']} response(s) recorded before a retry were kept, "
                     f"{value['generated']} generated")
        self.shards_left.discard(name)
        for needs in self.waiting.values():
            needs.discard(name)
        self._finalize_ready()

    def _finalize_ready(self) -> None:
        """Run (in the driver, every response cached) each evaluation unit whose shards are all merged."""
        for unit_name in [u for u, needs in self.waiting.items() if not needs]:
            del self.waiting[unit_name]
            job = self.waiting_jobs.pop(unit_name)
            job.unit.run(job.folder)
            self.finish(job)


def absorb_leftover_records(out: Path, log: Callable[[str], Any] = print) -> int:
    """Merge shard records a killed driver left under OUT/shards into the response cache (any executor)."""
    folder = Path(out) / SHARDS_DIR
    if not folder.is_dir():
        return 0
    from frankenscope.evaluate.cache import ResponseCache
    from frankenscope.evaluate.shards import absorb_records

    with ResponseCache(Path(out) / "cache.sqlite") as cache:
        n = absorb_records(folder, cache)
    if n:
        log(f"[study] merged {n} response(s) left in {folder} by an earlier run into the cache")
    if not any(folder.iterdir()):
        folder.rmdir()
    return n


def check_executor(cfg: StudyConfig) -> None:
    """Fail early, naming the field, on an executor setting that cannot work."""
    ex = cfg.executor
    if ex.kind == "ray" and cfg.evaluation.batch_size == "auto":
        raise FrankenscopeError("evaluation.batch_size: auto is for the local executor; the ray executor plans "
                                "its shards as the local run's batches, so give a number")
    if ex.kind == "local" and ex.address:
        raise FrankenscopeError("executor.address is set but executor.kind is local: use --executor ray")
