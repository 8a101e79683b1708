"""The paper suite end to end on small fixture files in each dataset's real published layout, with the micro
organism as the model: every dataset loads, every model condition runs, and the JSON and parquet layouts of
the same data give identical responses and results (the prompts themselves are compared item by item in
test_grading_loaders.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import real_layouts as rl
from frankenscope.evaluate.run import finegrained_eval

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, micro_dir: Path) -> dict[str, dict]:
    out = {}
    root = tmp_path_factory.mktemp("paper")
    captions = rl.write_mathvista_captions(root / "captions.json")  # MathVista's own caption-file format
    for layout in ("json", "parquet"):
        data = root / f"data-{layout}"
        rl.write_data_root(data, layout)
        with pytest.warns(UserWarning, match="LogicVista"):  # the empty record is skipped, with a count
            out[layout] = finegrained_eval([str(micro_dir)], root / f"out-{layout}", suite="paper", data=data,
                                           benchmarks="paper,gsm8k", descriptions=captions, max_new_tokens=4,
                                           batch_size=8, progress=False, echo=lambda s: None,
                                           prompts={"mathvista": "query", "mathverse": "query_cot"})
        out[layout]["records"] = json.loads((root / f"out-{layout}" / "models" / "micro.json").read_text())["records"]
    return out


def test_paper_suite_runs_on_every_real_layout(runs: dict[str, dict]) -> None:
    doc = runs["json"]
    assert doc["settings"]["dataset_prompts"] == {"mathvista": "query", "mathverse": "query_cot"}
    assert doc["settings"]["grader"]["math_verify"]
    sets = doc["sets"]["ids"]
    assert sets["vis"] and sets["v2r"] and sets["rea"]
    benches = set(doc["settings"]["benchmarks"])
    assert benches == {"mathvista", "mathverse", "mathvision", "logicvista", "gsm8k"}
    conditions = {r["condition"] for r in runs["json"]["records"]}
    assert {"image", "black", "black_desc", "text"} <= conditions
    assert all(r["response"] is not None for r in runs["json"]["records"])  # every item ran (none ungraded)


def test_json_and_parquet_layouts_give_identical_prompts_and_results(runs: dict[str, dict]) -> None:
    def key(records: list[dict]) -> list[tuple]:
        return sorted((r["id"], r["condition"], r["response"], r["correct"]) for r in records)

    assert key(runs["json"]["records"]) == key(runs["parquet"]["records"])
    assert runs["json"]["models"][0]["metrics"] == runs["parquet"]["models"][0]["metrics"]
