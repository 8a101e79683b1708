import json
import re

import pytest
from typer.testing import CliRunner

from frankenscope.cli import app
from frankenscope.errors import FrankenscopeError
from frankenscope.study.config import load_config
from frankenscope.study.report import indicators_from_records


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The micro demo run twice: the second run must reuse everything."""
    out = tmp_path_factory.mktemp("demo") / "d"
    first = CliRunner().invoke(app, ["demo", "--preset", "micro", "--out", str(out)])
    first.study = json.loads((out / "study" / "study.json").read_text()) if first.exit_code == 0 else None
    second = CliRunner().invoke(app, ["demo", "--preset", "micro", "--out", str(out)])
    return out, first, second


def test_micro_study_end_to_end(demo_runs):
    out, first, _ = demo_runs
    assert first.exit_code == 0, first.output
    units = {u["unit"]: u["status"] for u in first.study["units"]}
    assert all(s == "ran" for s in units.values()), units
    for unit in ("finegrained", "diff", "hybrids", "freeze", "attention", "localize-vision",
                 "localize-reasoning"):
        assert unit in units, unit
    html = (out / "study" / "report.html").read_text()
    md = (out / "study" / "report.md").read_text()
    for claim in ("P1", "P2", "P3", "P4", "P5", "P6", "P7"):
        assert f"| {claim} |" in md and f"<td>{claim}</td>" in html
    assert "data:image/png;base64," in html  # plots embedded: the page is self-contained
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures and all("suite/" not in f and "items/" not in f for f in figures), figures  # plots, not data
    assert (out / "study" / "hybrids" / "models" / "IN_RL_RL" / "config.json").is_file()
    held = json.loads((out / "study" / "freeze" / "heldout.json").read_text())["frozen_minus_rl"]
    assert set(held) == {"early", "mid", "late"} and "Held-out items" in md


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


def _stage(folder, correct):
    folder.mkdir(parents=True)
    (folder / "stage.json").write_text(json.dumps({"heldout": {"correct": correct}}))


@pytest.mark.parametrize("late_wrong, early_wrong, verdict", [(20, 0, "supported"), (0, 20, "contradicted"),
                                                              (0, 0, "inconclusive")])
def test_p7_verdict_uses_heldout_paired_differences(tmp_path, late_wrong, early_wrong, verdict):
    from frankenscope.study.report import verdict_p7
    from frankenscope.study.run import write_frozen_heldout

    ids = [f"more_than_{i}" for i in range(20)] + [f"digit_sum_{i}" for i in range(20)] + ["word_problem_0"]
    root, unit = tmp_path / "organism", tmp_path / "study" / "freeze"
    _stage(root / "rl", {i: True for i in ids})
    _stage(root / "rl-frozen-late", {i: n >= late_wrong for n, i in enumerate(ids)})
    _stage(root / "rl-frozen-early", {i: n >= early_wrong for n, i in enumerate(ids)})
    unit.mkdir(parents=True)
    (unit / "finegrained.json").write_text("{}")  # the suite's records are absent: held-out numbers decide alone
    diffs = write_frozen_heldout(unit, root, ["early", "late"], seed=0)
    assert diffs["late"]["v2r"]["n"] == 40 and diffs["late"]["text"]["n"] == 1
    assert diffs["late"]["v2r"]["diff"] == -late_wrong / 40 and diffs["early"]["v2r"]["diff"] == -early_wrong / 40
    assert diffs["late"]["more_than"]["diff"] == -min(late_wrong, 20) / 20
    assert "| late |" in (unit / "summary.md").read_text()
    v = verdict_p7(tmp_path / "study")
    assert v.verdict == verdict, v
    assert "held-out v2r accuracy (n=40)" in v.evidence


def test_frozen_heldout_names_missing_stage(tmp_path):
    from frankenscope.study.run import write_frozen_heldout

    _stage(tmp_path / "rl", {"more_than_0": True})
    with pytest.raises(FrankenscopeError, match="rl-frozen-mid"):
        write_frozen_heldout(tmp_path / "unit", tmp_path, ["mid"], seed=0)
