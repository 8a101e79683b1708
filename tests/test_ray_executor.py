"""The Ray executor (`--executor ray`) against the local one, on the micro organism and a local Ray cluster.

The study here is the micro demo's without its two slowest units (validate and the frozen RL re-runs, which
train models; both run as one Ray task each and have no sharding of their own beyond the freeze unit's
evaluation, which goes through the same shard path as finegrained and hybrids).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import frankenscope
from frankenscope.probes.shards import PROBE_SHARDS_DIR, SHARD_FAULT
from frankenscope.study.config import StudyConfig
from frankenscope.study.run import run_study

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ROOT = Path(frankenscope.__file__).resolve().parents[2]


def _compare_module() -> Any:
    spec = importlib.util.spec_from_file_location("compare_results", ROOT / "scripts" / "compare_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _config(org: Path, kind: str, **executor: Any) -> StudyConfig:
    return StudyConfig.model_validate({
        "name": "micro", "organism": True, "organism_preset": "micro", "seed": 0,
        "base": {"path": str(org / "base")}, "in": {"path": str(org / "in")}, "rl": {"path": str(org / "rl")},
        "evaluation": {"n_per_task": 4, "max_new_tokens": 16, "batch_size": 8},
        # 9 per task: 18 attention items, more than one generation batch (16), so every probe has 2+ shards
        "probes": {"n": 9, "max_new_tokens": 8, "skip_max_new_tokens": 16, "attention_max_new_tokens": 16},
        "validate": {"enabled": False}, "freeze": {"enabled": False},
        # 2 CPUs: a local cluster of 2 workers; one 64-item chunk per shard, so a model's conditions are 4 shards;
        # probe shards of at most 16 items (the local executor runs every probe whole)
        "executor": {"kind": kind, "num_cpus": 2, "shard_items": 64, "probe_shard_items": 16, **executor},
    })


@pytest.fixture(scope="module")
def organism(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from frankenscope.organism.build import build

    org = tmp_path_factory.mktemp("ray-org") / "organism"
    build(org, preset="micro", seed=0, progress=False, log=lambda *_: None)
    return org


@pytest.fixture(scope="module")
def local_run(organism: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "study"
    run_study(_config(organism, "local"), out, progress=False, log=lambda s: None)
    return out


def _differences(a: Path, b: Path) -> list[tuple[str, list[str]]]:
    cmp = _compare_module()
    # the executor is recorded in study.json's copy of the config; no unit's settings contain it
    return cmp.compare(a, b, cmp.VOLATILE | {"executor"})


def test_ray_study_gives_the_local_result_files(organism: Path, local_run: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "study"
    summary = run_study(_config(organism, "ray"), out, progress=False, log=lines.append)
    assert [u["status"] for u in summary["units"]] == ["ran"] * 6
    assert not ray.is_initialized()  # the cluster it started is gone
    n_json = len(list(local_run.rglob("*.json")))
    assert n_json > 40 and len(list(out.rglob("*.json"))) == n_json
    assert _differences(local_run, out) == []
    # the comparison can fail: a changed response is a difference
    rec = out / "finegrained" / "models" / "IN.json"
    doc = json.loads(rec.read_text())
    doc["records"][0]["response"] += "x"
    rec.write_text(json.dumps(doc))
    assert [d[0] for d in _differences(local_run, out)] == ["finegrained/models/IN.json"]
    assert not (out / "shards").exists()
    assert any("responses to generate in 12 shard(s)" in s for s in lines), lines  # 3 models x 4 conditions
    # probes by items, in whole batches of at most 16 items: vision 36 pairs -> 16 + 16 + 4; skipping 27 items in
    # batches of 6 (18 with an image, then 9 text-only: 6 6 6 | 6 3) -> 6+6, 6+6+3; attention 18 items generated
    # 16 + 2 -> 16, 2: one task per shard and probed model (attention: both models)
    for unit, n in (("localize-vision", 3 * 3), ("localize-reasoning", 3 * 2), ("attention", 2)):
        assert f"[{unit}] {n} part task(s)" in lines, (unit, lines)
    assert not list(out.rglob(PROBE_SHARDS_DIR))  # every probe's shard files were merged and removed
    # a rerun on either executor skips every unit
    again = run_study(_config(organism, "ray"), out, progress=False, log=lambda s: None)
    assert all(u["status"] == "skipped (done)" for u in again["units"])


def test_killed_worker_mid_shard_is_retried_and_keeps_its_batches(organism: Path, local_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import frankenscope.study.run as run

    once = tmp_path / "fault-once"
    once.mkdir()
    monkeypatch.setenv("FRANKENSCOPE_FAULT", "shard:batch")  # SIGKILL after a shard's first recorded batch ...
    monkeypatch.setenv("FRANKENSCOPE_FAULT_ONCE", str(once))  # ... once: the retry runs through
    real = run.study_units
    monkeypatch.setattr(run, "study_units", lambda c, o, **kw: [u for u in real(c, o, **kw) if u.name == "finegrained"])
    lines: list[str] = []
    out = tmp_path / "study"
    summary = run_study(_config(organism, "ray", max_retries=2), out, progress=False, log=lines.append)
    assert [u["status"] for u in summary["units"]] == ["ran"]
    assert (once / "shard_batch").is_file()  # a worker was killed
    kept = [s for s in lines if "recorded before a retry were kept" in s]
    assert len(kept) == 1 and "8 response(s)" in kept[0], lines  # its first batch (8 items) was not redone
    local = local_run / "finegrained"
    cmp = _compare_module()
    assert cmp.compare(local, out / "finegrained", cmp.VOLATILE) == []


def test_killed_worker_mid_probe_shard_is_retried_and_the_merge_is_identical(
        organism: Path, local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL of the worker of the first probe shard to finish computing (before it writes its records): Ray
    reruns that shard and the merged results equal the local run's."""
    import frankenscope.study.run as run

    once = tmp_path / "fault-once"
    once.mkdir()
    monkeypatch.setenv("FRANKENSCOPE_FAULT", SHARD_FAULT)
    monkeypatch.setenv("FRANKENSCOPE_FAULT_ONCE", str(once))
    real = run.study_units
    keep = ("attention", "localize-reasoning")
    monkeypatch.setattr(run, "study_units", lambda c, o, **kw: [u for u in real(c, o, **kw) if u.name in keep])
    out = tmp_path / "study"
    summary = run_study(_config(organism, "ray", max_retries=2), out, progress=False, log=lambda s: None)
    assert [u["status"] for u in summary["units"]] == ["ran", "ran"]
    assert (once / SHARD_FAULT.replace(":", "_")).is_file()  # a worker was killed mid-shard
    cmp = _compare_module()
    for unit in keep:
        assert cmp.compare(local_run / unit, out / unit, cmp.VOLATILE) == [], unit
    assert not list(out.rglob(PROBE_SHARDS_DIR))


def test_a_retry_budget_of_zero_fails_the_study_and_a_rerun_resumes(organism: Path, local_run: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With no retries the killed shard fails the study (its unit gets no done marker, its recorded batch stays
    in OUT/shards); the next run merges that batch into the cache and finishes identically."""
    import frankenscope.study.run as run

    once = tmp_path / "fault-once"
    once.mkdir()
    monkeypatch.setenv("FRANKENSCOPE_FAULT", "shard:batch")
    monkeypatch.setenv("FRANKENSCOPE_FAULT_ONCE", str(once))
    real = run.study_units
    monkeypatch.setattr(run, "study_units", lambda c, o, **kw: [u for u in real(c, o, **kw) if u.name == "finegrained"])
    out = tmp_path / "study"
    with pytest.raises(Exception, match="(?i)died|crash|exit|lost|WorkerCrashed"):
        run_study(_config(organism, "ray", max_retries=0), out, progress=False, log=lambda s: None)
    assert not ray.is_initialized()
    assert not (out / "finegrained" / "done.json").exists()
    left = list((out / "shards").glob("*.jsonl"))
    assert len(left) == 1 and len(left[0].read_text().splitlines()) == 1
    lines: list[str] = []
    summary = run_study(_config(organism, "local"), out, progress=False, log=lines.append)  # resume (any executor)
    assert [u["status"] for u in summary["units"]] == ["ran"]
    assert any("merged 8 response(s) left in" in s for s in lines), lines
    assert not (out / "shards").exists()
    cmp = _compare_module()
    assert cmp.compare(local_run / "finegrained", out / "finegrained", cmp.VOLATILE) == []


def test_the_local_executor_never_imports_ray() -> None:
    probe = ("import sys\nfrom frankenscope.study.config import StudyConfig\n"
             "from frankenscope.study.executors import make_executor\n"
             "cfg = StudyConfig.model_validate({'name': 'x', 'base': {'path': 'a/b'}, 'in': {'path': 'a/c'}, "
             "'rl': {'path': 'a/d'}})\n"
             "ex = make_executor(cfg)\nex.run([], None, None, None)\n"
             "import frankenscope.study.run, frankenscope.evaluate.shards\n"
             "print(type(ex).__name__, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(Path(frankenscope.__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "LocalExecutor False", out.stdout + out.stderr
