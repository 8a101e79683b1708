"""`frankenscope study CONFIG --plan` (study/plan.py) on the paper's 7B config, against counts made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from frankenscope.cli import app
from frankenscope.study.config import StudyConfig, load_config
from frankenscope.study.plan import (
    THROUGHPUTS,
    StudyPlan,
    Task,
    UnitPlan,
    format_plan,
    model_size,
    study_plan,
)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "openmmreasoner-7b.yaml"


def test_plan_counts_the_paper_study_by_hand() -> None:
    plan = study_plan(load_config(CONFIG))
    units = {u.unit: u for u in plan.units}
    assert list(units) == ["validate", "finegrained", "attention", "localize-vision", "localize-reasoning", "diff",
                           "hybrids"]
    assert (plan.layers, plan.model_params) == (28, 8.29e9)  # "7B" in Qwen/Qwen2.5-VL-7B-Instruct
    # n = 100 per set and benchmark: image = vis 100 + v2r 100 + 4 benchmarks x 100, less the MathVista benchmark
    # draws expected among vis/v2r (100 x 200 / 1000 = 20); black 100; black_desc 100; text (MATH-500) 100
    # -> 880 generations per model; Base, IN, RL; the six hybrids are new models
    assert units["finegrained"].generations == 3 * (580 + 100 + 100 + 100) == 2640
    assert units["hybrids"].generations == 6 * 880
    assert units["finegrained"].tokens == 2640 * 1000  # mean response min(8192, 1000)
    # swap: 100 pairs x 28 layers, Base only; skipping: (gsm8k 100 + math500 100) x (28 + baseline)
    assert units["localize-vision"].passes == 100 * 28
    assert units["localize-reasoning"].passes == 200 * 29
    assert units["attention"].passes == 2 * 100 and all(t.gpus == 2 for t in units["attention"].tasks)
    # probes as shards of at most probe_shard_items (64) items, whole batches: swap pairs one by one (64 + 36);
    # skipping 29 rows per item leaves 1 item per batch of 32 rows (64 + 64 + 64 + 8); attention batches of 16
    # (64 + 36). Sharding splits the time, it adds none (model loads are not counted)
    per_item = {"localize-vision": 100, "localize-reasoning": 200, "attention": 100}
    sizes = {"localize-vision": [64, 36], "localize-reasoning": [64, 64, 64, 8], "attention": [64, 36]}
    for unit, n in per_item.items():
        tasks = units[unit].tasks
        assert sum(sizes[unit]) == n
        assert [t.name.rsplit(":", 1)[1] for t in tasks] == [str(i) for i in range(len(sizes[unit]))], unit
        assert [t.gpu_s for t in tasks] == pytest.approx([tasks[0].gpu_s * k / sizes[unit][0] for k in sizes[unit]])
    raw = load_config(CONFIG).model_dump(by_alias=True)
    raw["executor"]["probe_shard_items"] = 10_000
    whole = {u.unit: u for u in study_plan(StudyConfig.model_validate(raw)).units}
    for unit in per_item:
        assert len(whole[unit].tasks) == 1 and whole[unit].gpu_hours == pytest.approx(units[unit].gpu_hours)
    # one skipping task (a probe whole, on one GPU) bounded the 64-GPU wall-clock; its shards do not
    assert plan.wall_hours(64) < study_plan(StudyConfig.model_validate(raw)).wall_hours(64) / 2
    # one evaluation shard by hand (HF): 256 image items, batch 8, longest response min(8192, 3 x 1000) steps
    # of 0.03 s, prompts (200 text + 1170 image tokens) at 8000 tokens/s; a 7B model is the reference size
    shard = next(t for t in units["finegrained"].tasks if t.name == "finegrained:Base:image:0")
    assert shard.gpu_s == pytest.approx(32 * 3000 * 0.030 + 256 * 1370 / 8000)
    assert len(units["finegrained"].tasks) == 3 * (3 + 1 + 1 + 1)  # image 580 -> 256 + 256 + 68
    # every item of the full version: testmini's 460 + 540 are all in the MathVista benchmark (1000): no overlap
    raw = load_config(CONFIG).model_dump(by_alias=True)
    raw["evaluation"]["n"] = None
    full = {u.unit: u for u in study_plan(StudyConfig.model_validate(raw)).units}
    assert full["finegrained"].generations == 3 * ((1000 + 3940 + 3040 + 448) + 460 + 540 + 500)
    assert units["diff"].gpu_hours == 0


def test_vllm_backend_and_scheduling() -> None:
    raw = load_config(CONFIG).model_dump(by_alias=True)
    raw["evaluation"]["backend"] = "vllm"
    plan = study_plan(StudyConfig.model_validate(raw))
    shard = next(t for u in plan.units for t in u.tasks if t.name == "finegrained:IN:text:0")
    assert shard.gpu_s == pytest.approx(100 * 1000 / 2500 + 100 * 200 / 20000)
    # longest first onto 2 GPUs: 3 | 2, then 2 -> the second (4), then 1 -> the first (4)
    toy = StudyPlan("toy", "hf", [UnitPlan("u", 1, "", tasks=[Task(str(h), h * 3600) for h in (1, 3, 2, 2)])], 1, 1)
    assert toy.gpu_hours == 8 and toy.wall_hours(2) == 4 and toy.wall_hours(1) == 8 and toy.wall_hours(64) == 3
    two = StudyPlan("toy", "hf", [UnitPlan("u", 1, "", tasks=[Task("a", 3600, gpus=2), Task("b", 3600)])], 1, 1)
    assert two.gpu_hours == 3 and two.wall_hours(2) == 2 and two.wall_hours(3) == 1


def test_plan_output_says_what_is_assumed(tmp_path: Path) -> None:
    assert not any(t.measured for t in THROUGHPUTS.values())  # until gpu_check.py numbers are entered
    text = format_plan(study_plan(load_config(CONFIG)), [1, 8, 64])
    assert "| finegrained | 880 items" in text and "1 GPU " in text and "64 GPUs " in text
    assert "Estimates, not measurements" in text and "no measured GPU throughput yet" in text
    r = CliRunner().invoke(app, ["study", str(CONFIG), "--plan", "--gpus", "1,8"])
    assert r.exit_code == 0 and "| localize-reasoning | 200 items x (28 layers + baseline) x 1 models" in r.output
    assert "8 GPUs" in r.output and "64 GPUs" not in r.output
    bad = CliRunner().invoke(app, ["study", str(CONFIG), "--plan", "--gpus", "eight"])
    assert bad.exit_code != 0 and "--gpus 'eight'" in bad.output
    assert model_size("someone/model-3B-Instruct")[:2] == (36, 3.75e9)
    assert model_size("someone/model")[2] == "unknown size: assumed 7B"
