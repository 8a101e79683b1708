import json
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from frankenscope.cli import app
from frankenscope.errors import FrankenscopeError
from frankenscope.loading import load_model
from frankenscope.organism import rl
from frankenscope.organism.build import build

pytestmark = pytest.mark.slow

def _varying_reward(format_weight=0.1):
    """A stand-in reward that varies within each group, so GRPO advantages are non-zero even for an
    untrained micro model (whose real rewards are all 0)."""

    def reward(completions, answer, answer_type, **_):
        return [float(len(c[0]["content"]) % 3) for c in completions]

    return reward


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(rl, "reward_fn", _varying_reward)
    out = tmp_path_factory.mktemp("build") / "org"
    logs: list[str] = []
    first = build(out, preset="micro", seed=0, progress=False, log=logs.append)
    frozen = build(out, preset="micro", seed=0, freeze="late", progress=False, log=logs.append)
    # the study's unfrozen control re-run with another RL seed (same Base and IN)
    build(out, preset="micro", seed=0, progress=False, log=logs.append, trust_finished=True, rl_seed=1,
          rl_folder="rl-control-s1")
    mp.undo()
    return out, first, frozen, logs


def _tensors(folder):
    return load_file(str(folder / "model.safetensors"))


def test_all_stages_written_and_loadable(builds):
    out, first, _, _ = builds
    assert set(first["stages"]) == {"base", "in", "rl"}
    for name in ("base", "in", "rl"):
        loaded = load_model(out / name)
        assert loaded.adapter.num_layers(loaded.model) == 4
        stage = json.loads((out / name / "stage.json").read_text())
        for key in ("seed", "recipe", "data_sha256", "wall_s", "heldout", "n_examples", "stage_key"):
            assert key in stage, key
        assert set(stage["heldout"]["by_task"]) == {"counting", "recognition", "more_than", "word_problem"}
        for m in stage["heldout"]["by_task"].values():
            assert m["ci_low"] <= m["accuracy"] <= m["ci_high"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "organism-build" and manifest["versions"]["torch"]
    ca, cb = (json.loads((out / n / "stage.json").read_text())["heldout"]["correct"] for n in ("in", "rl"))
    v2r = [i for i in ca if i.startswith("more_than")]
    d = manifest["rl_vs_in"]["v2r"]
    assert d["n"] == len(v2r) and d["diff"] == pytest.approx(sum(cb[i] - ca[i] for i in v2r) / len(v2r))
    assert d["ci_low"] <= d["diff"] <= d["ci_high"]
    # the frozen re-run wrote its own manifest and left the organism's alone
    assert manifest["inputs"]["freeze"] is None and set(manifest["stages"]) == {"base", "in", "rl"}
    frozen = json.loads((out / "manifest-rl-frozen-late.json").read_text())
    assert frozen["inputs"]["freeze"] == "late" and "rl-frozen-late" in frozen["stages"]


def test_second_build_skips_finished_stages(builds):
    _, _, frozen, logs = builds
    assert frozen["stages"]["base"]["skipped"] and frozen["stages"]["in"]["skipped"]
    assert not frozen["stages"]["rl-frozen-late"]["skipped"]
    assert sum("up to date" in line for line in logs) == 2


def test_frozen_region_is_bit_identical_to_in(builds):
    out, _, _, _ = builds
    before, after = _tensors(out / "in"), _tensors(out / "rl-frozen-late")
    stage = json.loads((out / "rl-frozen-late" / "stage.json").read_text())
    assert stage["frozen_layers"] == [2, 3]
    frozen_disk = {k for k in before if re.match(r"model\.layers\.(2|3)\.", k)}
    assert frozen_disk
    for k in frozen_disk:
        assert torch.equal(before[k], after[k]), k
    changed = [k for k in before if k not in frozen_disk and not torch.equal(before[k], after[k])]
    assert changed, "RL changed no unfrozen tensor"
    assert all(re.match(r"model\.layers\.(0|1)\.|model\.embed|visual\.|model\.norm", k) for k in changed)


def test_freeze_plan_matches_frozen_parameters(builds):
    out, _, _, _ = builds
    stage = json.loads((out / "rl-frozen-late" / "stage.json").read_text())
    res = CliRunner().invoke(app, ["organism", "freeze-plan", "--region", "late", "--model", str(out / "in"),
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output[res.output.index("{"):])
    assert plan["parameter_names"] == stage["frozen_parameters"]
    rx = [re.compile(p) for p in plan["patterns"]]
    names = [n for n, _ in load_model(out / "in").model.named_parameters()]
    assert [n for n in names if any(r.match(n) for r in rx)] == stage["frozen_parameters"]
    # the regex form matches the on-disk names of exactly the same tensors
    res = CliRunner().invoke(app, ["organism", "freeze-plan", "--region", "late", "--model", str(out / "in")])
    patterns = [re.compile(line[line.index("^(?:"):]) for line in res.output.splitlines() if "^(?:" in line]
    disk = [k for k in _tensors(out / "in") if any(p.match(k) for p in patterns)]
    assert len(disk) == len(stage["frozen_parameters"])


def test_bad_freeze_region_is_refused(tmp_path):
    with pytest.raises(FrankenscopeError, match="sideways"):
        build(tmp_path / "o", preset="micro", freeze="sideways", progress=False, log=lambda s: None)


def test_stage_keys_only_depend_on_their_own_recipe():
    from frankenscope.organism.build import recipe_for, stage_recipe

    a, b = recipe_for("micro"), recipe_for("micro", rl_steps=7, rl_lr=1e-4)
    assert stage_recipe(a, "base") == stage_recipe(b, "base")
    assert stage_recipe(a, "in") == stage_recipe(b, "in")
    assert stage_recipe(a, "rl") != stage_recipe(b, "rl")


def test_trusted_finished_stages_are_not_redrawn(builds, monkeypatch):
    """trust_finished skips Base and IN from their recorded recipe/seed/parent without drawing their data;
    a changed recipe part is still retrained."""
    from frankenscope.organism import build as build_mod

    out, _, _, _ = builds

    def boom(*a, **k):
        raise AssertionError("stage data drawn")

    monkeypatch.setattr(build_mod, "stage_examples", boom)
    monkeypatch.setattr(build_mod, "rl_rows", boom)
    logs: list[str] = []
    with pytest.raises(AssertionError, match="stage data drawn"):  # only the changed RL stage draws data
        build(out, preset="micro", seed=0, progress=False, log=logs.append, trust_finished=True,
              recipe=build_mod.recipe_for("micro", rl_steps=1))
    assert [line.split("]")[0] for line in logs] == ["[base", "[in"]
    assert all("skipping" in line for line in logs)
    with pytest.raises(AssertionError, match="stage data drawn"):  # a changed IN recipe is not trusted
        build(out, preset="micro", seed=0, progress=False, log=logs.append, trust_finished=True,
              recipe=build_mod.recipe_for("micro", in_steps=3))


def test_control_rerun_with_its_own_rl_seed(builds):
    out, first, _, _ = builds
    stage = json.loads((out / "rl-control-s1" / "stage.json").read_text())
    main = json.loads((out / "rl" / "stage.json").read_text())
    assert stage["rl_seed"] == 1 and "rl_seed" not in main and stage["freeze"] is None
    assert stage["parent"] == main["parent"] and stage["data_sha256"] == main["data_sha256"]  # same IN, same data
    assert json.loads((out / "manifest-rl-control-s1.json").read_text())["stages"]["rl-control-s1"]
    assert set(json.loads((out / "manifest.json").read_text())["stages"]) == {"base", "in", "rl"}
    a, b = _tensors(out / "rl"), _tensors(out / "rl-control-s1")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # another RL seed: another run
