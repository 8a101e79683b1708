"""Fault injection: a real subprocess is killed (SIGKILL, as `kill -9`) at a chosen point, then the run is
repeated; it must finish with results identical to an uninterrupted run and leave no stray files.

The kill points are `frankenscope.io.fault_point` calls, inert unless $FRANKENSCOPE_FAULT names them:
"generate:chunk" (after the first chunk of responses is committed to the cache), "finegrained:after_result"
(after finegrained.json, before its table and figure), "swap" (between the two renames that replace an
output folder) and "merge:tensor" (after the first tensor of the first shard of a merge is written).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import frankenscope
from frankenscope.cli import app

SRC = Path(frankenscope.__file__).resolve().parents[1]
runner = CliRunner()


pytestmark = pytest.mark.slow

def _killed_run(args: list[Any], fault: str, script: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI (or a Python `script`) in a subprocess that kills itself at `fault`; assert it was killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "FRANKENSCOPE_FAULT": fault}
    cmd = [sys.executable, "-c", script] if script else [sys.executable, "-m", "frankenscope.cli"]
    proc = subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def _invoke(*args: Any) -> Any:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def _hidden(root: Path) -> list[str]:
    """Hidden files or folders anywhere under root (temporary siblings, set-aside outputs)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


def _strip(doc: Any) -> Any:
    """A result document without what legitimately differs between runs (times, cache counters, paths)."""
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in ("created", "wall_s", "cache", "versions")}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def test_kill_during_generation_resumes_to_identical_results(micro_dir: Path, tmp_path: Path) -> None:
    args = [micro_dir, "--n", "3", "--tasks", "counting,word_problem", "--batch-size", "1", "--max-new-tokens", "4"]
    _killed_run(["eval", *args, "--out", tmp_path / "run"], "generate:chunk")
    assert not (tmp_path / "run" / "results.json").exists()
    r = _invoke("eval", *args, "--out", tmp_path / "run")
    assert "generated 2, cached 4" in r.output  # the first chunk (4 of 6 items) survived the kill
    _invoke("eval", *args, "--out", tmp_path / "clean")
    resumed, clean = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("run", "clean"))
    assert resumed["records"] == clean["records"] and resumed["summary"] == clean["summary"]
    assert _hidden(tmp_path) == []


STUDY_SCRIPT = """
import json, sys
import frankenscope.study.report as report
import frankenscope.study.run as run
from frankenscope.study.config import StudyConfig
report.write_report = lambda out: {"html": "-", "markdown": "-"}
real = run.study_units
run.study_units = lambda cfg, out, **kw: [u for u in real(cfg, out, **kw) if u.name == "finegrained"]
run.run_study(StudyConfig.model_validate(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def test_kill_between_result_and_figures_reruns_the_unit(micro_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import frankenscope.study.report as report
    import frankenscope.study.run as run
    from frankenscope.study.config import StudyConfig

    cfg = {"name": "f", "base": {"path": str(micro_dir)}, "in": {"path": str(micro_dir)},
           "rl": {"path": str(micro_dir)}, "evaluation": {"n_per_task": 1, "max_new_tokens": 4, "batch_size": 8}}
    out = tmp_path / "study"
    _killed_run([json.dumps(cfg), out], "finegrained:after_result", script=STUDY_SCRIPT)
    unit = out / "finegrained"
    killed = json.loads((unit / "finegrained.json").read_text())  # the result was complete ...
    assert not (unit / "table.md").exists() and not (unit / "done.json").exists()  # ... its figures were not
    monkeypatch.setattr(report, "write_report", lambda out: {"html": "-", "markdown": "-"})
    real = run.study_units
    monkeypatch.setattr(run, "study_units",
                        lambda c, o, **kw: [u for u in real(c, o, **kw) if u.name == "finegrained"])
    summary = run.run_study(StudyConfig.model_validate(cfg), out, progress=False, log=lambda s: None)
    assert [u["status"] for u in summary["units"]] == ["ran"]
    assert (unit / "table.md").is_file() and (unit / "finegrained.png").is_file() and (unit / "done.json").is_file()
    assert _strip(json.loads((unit / "finegrained.json").read_text())) == _strip(killed)
    again = run.run_study(StudyConfig.model_validate(cfg), out, progress=False, log=lambda s: None)
    assert [u["status"] for u in again["units"]] == ["skipped (done)"]
    assert _hidden(out) == []


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_kill_during_output_swap_keeps_an_output_and_reruns_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    make = ["data", "make", "--n", "1", "--pairs", "1"]
    _invoke(*make, "--out", out)
    old = _tree(out)
    _killed_run([*make, "--seed", "1", "--out", out], "swap")
    assert not out.exists()  # killed between the renames: the old suite is set aside, intact
    aside = [p for p in tmp_path.iterdir() if p.name.endswith(".aside")]
    assert len(aside) == 1 and _tree(aside[0]) == old
    _invoke(*make, "--seed", "1", "--out", out)
    _invoke(*make, "--seed", "1", "--out", tmp_path / "clean")
    assert _tree(out) == _tree(tmp_path / "clean") and _tree(out) != old
    assert sorted(os.listdir(tmp_path)) == ["clean", "suite"]


def test_kill_during_merge_shard_write_reruns_to_identical_merge(micro_dir: Path, tmp_path: Path) -> None:
    from frankenscope.organism.model import build_organism, save_folder

    rl = save_folder(*build_organism("micro", seed=1), tmp_path / "donors" / "rl")
    merge = ["merge", "--in", micro_dir, "--rl", rl, "--plan", "IN:RL:RL", "--shard-gb", "0.0005", "--no-progress"]
    _killed_run([*merge, "--out", tmp_path / "out" / "m"], "merge:tensor")
    assert not (tmp_path / "out" / "m").exists() and len(_hidden(tmp_path / "out")) == 1  # a half-written temp
    _invoke(*merge, "--out", tmp_path / "out" / "m")
    _invoke(*merge, "--out", tmp_path / "clean")
    resumed, clean = _tree(tmp_path / "out" / "m"), _tree(tmp_path / "clean")
    assert sorted(resumed) == sorted(clean) and len([n for n in clean if n.endswith(".safetensors")]) > 1
    for name in clean:
        if name == "merge.json":
            assert _strip(json.loads(resumed[name])) == _strip(json.loads(clean[name]))
        else:
            assert resumed[name] == clean[name], name
    assert os.listdir(tmp_path / "out") == ["m"]
