import json
import re

import pytest
from typer.testing import CliRunner

from frankenscope.cli import app
from frankenscope.errors import FrankenscopeError
from frankenscope.study.config import load_config
from frankenscope.study.report import indicators_from_records  # re-exported from study.verdicts


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The micro demo run twice: the second run must reuse everything."""
    out = tmp_path_factory.mktemp("demo") / "d"
    first = CliRunner().invoke(app, ["demo", "--preset", "micro", "--out", str(out)])
    first.study = json.loads((out / "study" / "study.json").read_text()) if first.exit_code == 0 else None
    second = CliRunner().invoke(app, ["demo", "--preset", "micro", "--out", str(out)])
    return out, first, second


@pytest.mark.slow
def test_micro_study_end_to_end(demo_runs):
    out, first, _ = demo_runs
    assert first.exit_code == 0, first.output
    units = {u["unit"]: u["status"] for u in first.study["units"]}
    assert all(s == "ran" for s in units.values()), units
    for unit in ("validate", "finegrained", "diff", "hybrids", "freeze", "attention", "localize-vision",
                 "localize-reasoning"):
        assert unit in units, unit
    html = (out / "study" / "report.html").read_text()
    md = (out / "study" / "report.md").read_text()
    # the report opens with the planted-effect validation table, before the claims
    assert md.index("## Validation: planted effects") < md.index("## The paper's claims")
    checks = json.loads((out / "study" / "validate" / "validate.json").read_text())["checks"]
    assert [c["name"] for c in checks] == ["blind", "dead_layer", "planted_update", "transfer", "attention"]
    assert all(f"| {c['title']} |" in md for c in checks)
    for claim in ("P1", "P2", "P3", "P4", "P5", "P6", "P7"):
        assert f"| {claim} |" in md and f"<td>{claim}</td>" in html
    assert "data:image/png;base64," in html  # plots embedded: the page is self-contained
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures and all("suite/" not in f and "items/" not in f for f in figures), figures  # plots, not data
    assert (out / "study" / "hybrids" / "models" / "IN_RL_RL" / "config.json").is_file()
    held = json.loads((out / "study" / "freeze" / "heldout.json").read_text())
    assert set(held["frozen_minus_control"]) == {"early", "late"} and held["seeds"] == [0] and "Held-out items" in md
    assert (out / "organism" / "rl-control" / "stage.json").is_file()  # the like-for-like control re-run
    assert json.loads((out / "study" / "verdicts.json").read_text())["verdicts"][0]["claim"] == "P1"


@pytest.mark.slow
def test_rerun_skips_everything(demo_runs):
    out, _, second = demo_runs
    assert second.exit_code == 0, second.output
    assert "training" not in second.output
    study = json.loads((out / "study" / "study.json").read_text())
    assert all(u["status"].startswith("skipped") for u in study["units"])


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nbase: {path: a}\nin: {path: b}\nrl: {path: c}\npartition: thirds\nbogus: 1\n")
    with pytest.raises(FrankenscopeError, match=r"s\.yaml.*bogus"):
        load_config(bad)
    with pytest.raises(FrankenscopeError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_ready_made_configs_validate():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for c in configs:
        load_config(c)


def test_indicators_follow_table_1():
    recs = [{"id": "a", "condition": "image", "correct": True}, {"id": "a", "condition": "black", "correct": False},
            {"id": "b", "condition": "image", "correct": True}, {"id": "b", "condition": "black", "correct": True},
            {"id": "c", "condition": "image", "correct": True}, {"id": "c", "condition": "black_desc", "correct": True},
            {"id": "d", "condition": "image", "correct": False}, {"id": "d", "condition": "black_desc", "correct": True},
            {"id": "t", "condition": "text", "correct": None}]
    ind = indicators_from_records(recs)
    assert ind == {"M_vis": {"a": True, "b": False}, "M_v2r": {"c": True, "d": False}, "M_rea": {"t": None}}
