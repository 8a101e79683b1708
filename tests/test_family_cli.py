"""Every analysis command, end to end through the CLI, on a tiny checkpoint of every supported family.

The conformance suite (test_conformance.py) proves the engines exact per family through the Python API;
this file checks that the commands a researcher types work on each family's saved folder: `tiny`,
`localize vision`, `localize reasoning`, `attention`, `diff`, `merge`, `eval` (fine-grained, a merged
hybrid included) and `organism freeze-plan`. The README's supported-architectures table lists these.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from frankenscope.adapters import supported_architectures
from frankenscope.cli import app
from frankenscope.testing.families import family_names, get_family

pytestmark = pytest.mark.slow  # ~25 s: seven families x eight commands

FAMILIES = [f for f in family_names() if get_family(f).facts.architecture in supported_architectures()]


def _ok(args: list[str | Path]) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"frankenscope {' '.join(map(str, args))}\n{res.output}\n{res.exception!r}"
    return res.output


def _kind(path: Path) -> str:
    return json.loads(path.read_text())["kind"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_analysis_command_runs_on_the_family(family: str, tmp_path: Path) -> None:
    a, b = tmp_path / "in", tmp_path / "rl"
    _ok(["tiny", family, "--out", a, "--seed", 1, "--init-range", 0.2])
    _ok(["tiny", family, "--out", b, "--seed", 2, "--init-range", 0.2])
    small = ["--n", 1, "--max-new-tokens", 3]

    _ok(["localize", "vision", a, "--out", tmp_path / "lv", "--layers", "0,1", *small])
    doc = json.loads((tmp_path / "lv" / "localize_vision.json").read_text())
    assert doc["kind"] == "localize_vision" and [r["layer"] for r in doc["tasks"]["all"]["per_layer"]] == [0, 1]
    _ok(["localize", "reasoning", a, "--out", tmp_path / "lr", *small])
    assert _kind(tmp_path / "lr" / "localize_reasoning.json") == "localize_reasoning"
    _ok(["attention", "--models", a, b, "--out", tmp_path / "att", *small])
    assert _kind(tmp_path / "att" / "attention.json") == "attention"

    _ok(["diff", "--from", a, "--to", b, "--out", tmp_path / "d", "--no-plots", "--no-progress"])
    diff = json.loads((tmp_path / "d" / "diff.json").read_text())
    cfg = json.loads((a / "config.json").read_text())
    n_layers = (cfg.get("text_config") or cfg)["num_hidden_layers"]
    assert sorted(x for r in diff["regions"] for x in r["layers"]) == list(range(n_layers))

    _ok(["merge", "--in", a, "--rl", b, "--plan", "IN:RL:RL", "--out", tmp_path / "m", "--no-progress"])
    merge = json.loads((tmp_path / "m" / "merge.json").read_text())
    assert set(merge["layer_donors"].values()) == {"IN", "RL"} and merge["layer_donors"]["0"] == "IN"

    _ok(["eval", a, tmp_path / "m", "--out", tmp_path / "ev", "--metrics", "fine-grained", "--n-per-task", 1,
         "--max-new-tokens", 3])
    ev = json.loads((tmp_path / "ev" / "finegrained.json").read_text())
    assert [m["label"] for m in ev["models"]] == ["in", "m"]

    out = _ok(["organism", "freeze-plan", "--region", "late", "--model", tmp_path / "m"])
    patterns = re.findall(r"\^\(\?:.*", out)  # one anchored regex per layer (stderr's progress bars are mixed in)
    assert len(patterns) == len(merge["regions"]["late"]) == 1
