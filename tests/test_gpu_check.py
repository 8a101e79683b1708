"""benchmarks/gpu_check.py --tiny on the CPU: every part runs (vLLM: runs or skips with a reason) and the JSON
has numbers for each, so the GPU check script cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


pytestmark = pytest.mark.slow

def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and x >= 0


def test_gpu_check_tiny_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gc.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out),
                           "--workdir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["shape"] == "tiny" and doc["device"] == "cpu" and doc["dtype"] == "float32"
    assert doc["versions"]["torch"] and doc["versions"]["transformers"] and doc["seed"] == 0
    parts = doc["parts"]
    assert set(parts) == {"swap", "skip", "attention", "hf", "vllm", "weights"}
    for name in ("swap", "skip", "attention", "hf", "weights"):
        assert parts[name]["status"] == "ok", (name, parts[name])
        assert _number(parts[name]["part_wall_s"])

    swap = parts["swap"]
    for key in ("fast_s_per_pair", "naive_s_per_pair", "naive_over_fast", "max_first_logit_diff_in_stds"):
        assert _number(swap[key]), key
    assert swap["agree"] is True and swap["rows_agree"] == swap["rows_compared"] > 0
    assert swap["layers"] == 4 and swap["image_tokens"] == 16 and swap["pairs_measured"] >= 1

    skip = parts["skip"]
    assert _number(skip["s_per_item"]) and _number(skip["extrapolated"]["s_per_item_at_target"])
    assert skip["rows_per_item"] == 5
    assert _number(parts["attention"]["s_per_item"])
    hf = parts["hf"]
    assert hf["generated_tokens"] > 0 and _number(hf["tokens_per_s"])
    for op in ("diff", "merge"):
        w = parts["weights"][op]
        low, high = w["extrapolated_full_wall_s"]
        assert _number(w["wall_s"]) and _number(low) and high >= low
        assert w["peak_rss_mib"] >= w["rss_after_imports_mib"] > 0

    vllm = parts["vllm"]
    if vllm["status"] == "skipped":
        assert "vLLM" in vllm["reason"]
    else:
        assert vllm["status"] == "ok" and _number(vllm["tokens_per_s"]) and vllm["greedy_compared"] > 0
    assert "| swap sweep" in doc["table"] and "naive/fast" in doc["table"]
