"""Evaluation shards (evaluate/shards.py), the generation backends (evaluate/backends.py) and the optional extras:
fast tests with stand-in generators and engines (no Ray, no vLLM)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.backends import GenerationSpec, VLLMGenerator
from frankenscope.evaluate.cache import CachedGenerator, ResponseCache
from frankenscope.evaluate.runner import batch_indices
from frankenscope.evaluate.shards import (
    GenerationRequest,
    absorb_records,
    plan_shards,
    read_records,
    run_shard,
)


def _items(tmp_path: Path, n: int) -> list[Item]:
    """n items, every third one text-only, the others with their own image."""
    out = []
    for i in range(n):
        image = None
        if i % 3:
            image = tmp_path / f"im{i}.png"
            Image.new("RGB", (8, 8), (i * 9 % 256, 0, 0)).save(image)
        out.append(Item(id=f"q{i}", task="t", prompt=f"question {i}", answer=str(i), answer_type="integer",
                        image=None if image is None else str(image)))
    return out


class Recorder:
    """A generator that batches like HFGenerator (`batch_indices`) and records every batch's item ids."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.batches: list[list[str]] = []

    def __call__(self, items: list[Item], *, black_image: bool = False, use_description: bool = False) -> list[str]:
        out = [""] * len(items)
        for b in batch_indices([it.image is not None for it in items], self.batch_size):
            self.batches.append([items[i].id for i in b])
            for i in b:
                out[i] = f"answer {items[i].id} black={black_image}"
        return out


SPEC = GenerationSpec(model="m", batch_size=3, max_new_tokens=8)


def test_shards_decode_exactly_the_batches_of_a_local_run(tmp_path: Path) -> None:
    items = _items(tmp_path, 11)
    req = GenerationRequest(spec=SPEC, fingerprint="fp", black_image=True, items=items, label="m/black")
    with ResponseCache(tmp_path / "local.sqlite") as cache:
        local = Recorder(3)
        cached_gen = CachedGenerator(local, cache, "fp", SPEC.settings(), chunk_size=4)
        assert req.cache_keys() == cached_gen.keys(items, black_image=True)  # the same cache keys ...
        pre = req.cache_keys()[:2]  # two responses cached before the run
        cache.put_many("generate", [(k, "old") for k in pre])
        local_out = cached_gen(items, black_image=True)
    shards = plan_shards([req], set(pre), {}, shard_items=5, chunk=4)
    # 9 misses -> chunks of 4, 4, 1 -> shards of ceil(5 / 4) = 2 chunks: (4 + 4), (1)
    assert [sh.n_items for sh in shards] == [8, 1]
    sharded = Recorder(3)
    for sh in shards:
        assert run_shard(sh, tmp_path / f"{sh.id}.jsonl", generator=sharded) == {"generated": sh.n_items, "reused": 0}
    # ... and the same batches: the chunk [q2 q3 q4 q5] is decoded as images [q2 q4 q5] then text [q3]
    assert sharded.batches == local.batches
    assert sharded.batches[:2] == [["q2", "q4", "q5"], ["q3"]]
    with ResponseCache(tmp_path / "sharded.sqlite") as cache:
        cache.put_many("generate", [(k, "old") for k in pre])
        assert absorb_records(tmp_path, cache) == 9
        assert list(tmp_path.glob("*.jsonl")) == []
        again = CachedGenerator(Recorder(3), cache, "fp", SPEC.settings(), chunk_size=4)
        assert again(items, black_image=True) == local_out and again.misses == 0


def test_a_key_claimed_by_an_earlier_request_is_planned_once(tmp_path: Path) -> None:
    items = _items(tmp_path, 5)
    owner: dict[str, str] = {}
    first = plan_shards([GenerationRequest(SPEC, "fp", False, items)], set(), owner, shard_items=64)
    same = plan_shards([GenerationRequest(SPEC, "fp", False, items[1:])], set(), owner, shard_items=64)
    black = plan_shards([GenerationRequest(SPEC, "fp", True, items)], set(), owner, shard_items=64)
    other_model = plan_shards([GenerationRequest(SPEC, "fp2", False, items)], set(), owner, shard_items=64)
    assert [len(x) for x in (first, same, black, other_model)] == [1, 0, 1, 1]
    # black images change only the keys of items with an image (q1 q2 q4): text items share the first shard's keys
    assert [sh.n_items for sh in black] == [3]
    assert len(owner) == 5 + 3 + 5 and set(owner.values()) == {first[0].id, black[0].id, other_model[0].id}
    with pytest.raises(FrankenscopeError, match="shard_items"):
        plan_shards([], set(), {}, shard_items=0)


def test_a_retried_shard_decodes_only_its_missing_batches(tmp_path: Path) -> None:
    items = _items(tmp_path, 7)
    (shard,) = plan_shards([GenerationRequest(SPEC, "fp", False, items)], set(), {}, shard_items=64)
    records = tmp_path / "s.jsonl"
    first = Recorder(3)
    run_shard(shard, records, generator=first)
    lines = records.read_text().splitlines()
    assert len(lines) == len(first.batches) == 3  # images [1 2 4] [5], text [0 3 6]... per batch_indices
    # the worker died while writing its second batch: one full line, one torn line
    records.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    assert len(read_records(records)) == 3
    retry = Recorder(3)
    assert run_shard(shard, records, generator=retry) == {"generated": 4, "reused": 3}
    assert retry.batches == first.batches[1:]
    assert len(read_records(records)) == 7


def test_missing_extras_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from frankenscope.extras import require_extra

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(FrankenscopeError, match=r"ray executor.*pip install 'frankenscope\[ray\]'"):
        require_extra("ray", "the ray executor")
    with pytest.raises(FrankenscopeError, match=r"vllm generation backend.*pip install 'frankenscope\[vllm\]'"):
        GenerationSpec(model="m", backend="vllm").build()
    with pytest.raises(FrankenscopeError, match="unknown generation backend 'tgi'"):
        GenerationSpec(model="m", backend="tgi")
    with pytest.raises(FrankenscopeError, match="unknown vllm setting"):
        GenerationSpec(model="m", backend="vllm", vllm={"tp": 2})


def test_study_cli_with_ray_missing_fails_clearly(micro_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from frankenscope.cli import app

    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"name: x\nbase: {{path: {micro_dir}}}\nin: {{path: {micro_dir}}}\nrl: {{path: {micro_dir}}}\n"
                   "validate: {enabled: false}\n")
    monkeypatch.setitem(sys.modules, "ray", None)
    r = CliRunner().invoke(app, ["study", str(cfg), "--out", str(tmp_path / "o"), "--executor", "ray"])
    assert r.exit_code != 0 and "pip install 'frankenscope[ray]'" in r.output, r.output
    r = CliRunner().invoke(app, ["study", str(cfg), "--out", str(tmp_path / "o"), "--executor", "slurm"])
    assert r.exit_code != 0 and "executor" in r.output and "slurm" in r.output, r.output
    r = CliRunner().invoke(app, ["study", str(cfg), "--out", str(tmp_path / "o"), "--address", "auto"])
    assert r.exit_code != 0 and "executor.address" in r.output, r.output
    r = CliRunner().invoke(app, ["study", str(cfg)])
    assert r.exit_code != 0 and "--out is required" in r.output, r.output


class FakeEngine:
    """Stands in for vllm.LLM: records the requests and answers "Answer: <n>" with n the request's index."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def generate(self, prompts: list[dict[str, Any]], params: Any, use_tqdm: bool = True) -> list[Any]:
        start = len(self.requests)
        self.requests += prompts
        return [SimpleNamespace(outputs=[SimpleNamespace(text=f"Answer: {start + i}")]) for i in range(len(prompts))]


def test_vllm_generator_sends_the_hf_prompts_and_images(micro_dir: Path, tmp_path: Path) -> None:
    from frankenscope.adapters import get_adapter
    from frankenscope.loading import load_processor

    processor = load_processor(micro_dir)
    adapter = get_adapter(json.loads((micro_dir / "config.json").read_text())["architectures"][0])
    engine = FakeEngine()
    gen = VLLMGenerator(engine, "params", processor, adapter, system="be brief")
    items = _items(tmp_path, 3)
    assert gen(items, black_image=True) == ["Answer: 0", "Answer: 1", "Answer: 2"]
    for it, req in zip(items, engine.requests, strict=True):
        assert req["prompt"] == adapter.build_prompt(processor, it.prompt, 0 if it.image is None else 1, "be brief")
        if it.image is None:
            assert "multi_modal_data" not in req
        else:
            image = req["multi_modal_data"]["image"]
            assert image.size == (8, 8) and image.getextrema() == ((0, 0), (0, 0), (0, 0))  # the black control
    assert gen([], black_image=False) == []


def test_finegrained_with_the_vllm_backend_writes_hf_shaped_records_and_the_planned_cache_keys(
        micro_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through finegrained_eval(backend="vllm") with a stand-in engine: records and cache entries have the HF
    backend's form (generator "vllm" in the settings), and the cache keys are exactly those finegrained_requests
    plans, so Ray shards fill the cache the unit reads."""
    from frankenscope.adapters import get_adapter
    from frankenscope.evaluate.run import finegrained_eval, finegrained_requests
    from frankenscope.loading import load_processor

    engine = FakeEngine()

    def from_spec(spec: GenerationSpec) -> VLLMGenerator:
        return VLLMGenerator(engine, "params", load_processor(spec.model), get_adapter("Qwen2_5_VLForConditionalGeneration"),
                             system=spec.system)

    monkeypatch.setattr(VLLMGenerator, "from_spec", staticmethod(from_spec))
    kw = dict(n_per_task=2, max_new_tokens=8, backend="vllm", vllm={"max_model_len": 512}, echo=lambda s: None,
              progress=False, n_boot=50)
    out = tmp_path / "out"
    requests = finegrained_requests([str(micro_dir)], out, **kw)
    planned = [k for r in requests for k in r.cache_keys()]
    doc = finegrained_eval([str(micro_dir)], out, **kw)
    model = json.loads((out / "models" / f"{doc['models'][0]['label']}.json").read_text())
    assert model["generation"]["generator"] == "vllm" and model["generation"]["max_model_len"] == 512
    generated = [r for r in model["records"] if r["response"] is not None]
    assert len(generated) == len(engine.requests) == len(planned) > 0
    assert {r["condition"] for r in model["records"]} == {"image", "black", "black_desc", "text"}
    with ResponseCache(out / "cache.sqlite") as cache:
        assert cache.count("generate") == len(set(planned))
        assert set(cache.get_many("generate", planned)) == set(planned)
    # the same run with the HF backend would use other keys: a vLLM answer is never served to an HF run
    hf = finegrained_requests([str(micro_dir)], out, **{**kw, "backend": "hf"})
    assert not set(planned) & {k for r in hf for k in r.cache_keys()}


def test_batch_size_from_free_memory(micro: Any) -> None:
    from frankenscope.evaluate.backends import batch_size_for_memory, kv_bytes_per_row, model_batch_size

    # Qwen2.5-VL-7B: 28 layers, 4 KV heads of 128, bf16; a 1,370-token prompt + 8,192 new tokens
    row = kv_bytes_per_row(layers=28, kv_heads=4, head_dim=128, tokens=1370 + 8192)
    assert row == 2 * 28 * 4 * 128 * 9562 * 2 == 548_323_328  # ~0.51 GiB per sequence
    assert batch_size_for_memory(60 * 2**30, row) == 93  # floor(60 GiB x 0.8 / row)
    assert batch_size_for_memory(10**6, row) == 1 and batch_size_for_memory(10**15, row, cap=64) == 64
    with pytest.raises(FrankenscopeError, match="bad arguments"):
        batch_size_for_memory(1, 0)
    model, _ = micro
    assert model_batch_size(model, prompt_tokens=10, max_new_tokens=10, default=7) == 7  # CPU: the configured one


def test_batch_size_auto_is_parsed_checked_and_kept_off_the_ray_executor(tmp_path):
    """`batch_size: auto` sizes batches from free GPU memory once a model is loaded (the CPU default on the
    CPU); bad values name themselves; the ray executor refuses it (its shards must be the local batches)."""
    from frankenscope.errors import FrankenscopeError
    from frankenscope.evaluate.backends import (
        GenerationSpec,
        batch_size_for_memory,
        kv_bytes_per_row,
        parse_batch_size,
    )
    from frankenscope.study.config import StudyConfig
    from frankenscope.study.executors import check_executor

    assert parse_batch_size("auto") == "auto" and parse_batch_size(" AUTO ") == "auto" and parse_batch_size("8") == 8
    for bad in ("0", "-2", "many"):
        with pytest.raises(FrankenscopeError, match="batch size"):
            parse_batch_size(bad)
    assert GenerationSpec(model="m", batch_size="auto").settings()["batch_size"] == "auto"
    # 7B-like KV row: 2 x 28 layers x 4 KV heads x 128 x (2048 + 512) tokens x 2 bytes = 146,800,640 bytes
    row = kv_bytes_per_row(layers=28, kv_heads=4, head_dim=128, tokens=2560)
    assert row == 146_800_640
    assert batch_size_for_memory(10 * 2**30, row) == int(10 * 2**30 * 0.8 // row) == 58
    models = {k: {"path": str(tmp_path / k)} for k in ("base", "in", "rl")}
    cfg = StudyConfig.model_validate({"name": "t", **models, "evaluation": {"batch_size": "auto"}})
    check_executor(cfg)  # local: fine
    with pytest.raises(ValueError):
        StudyConfig.model_validate({"name": "t", **models, "evaluation": {"batch_size": 0}})
    ray_cfg = StudyConfig.model_validate({**cfg.model_dump(by_alias=True), "executor": {"kind": "ray"}})
    with pytest.raises(FrankenscopeError, match="evaluation.batch_size: auto"):
        check_executor(ray_cfg)


def test_probe_batches_from_free_gpu_memory_before_the_models_load(tmp_path, monkeypatch):
    """`batch_for_free_memory`: free = the device's free memory - the models' weights in `dtype`; items =
    floor(0.8 x free / (rows per item x KV row bytes)); the default on the CPU."""
    import torch
    from safetensors.torch import save_file

    from frankenscope.evaluate.backends import batch_for_free_memory, kv_bytes_per_row

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 2, "num_attention_heads": 4,
                                                                    "num_key_value_heads": 2, "hidden_size": 64}}))
    save_file({"w": torch.zeros(1000)}, folder / "model.safetensors")
    kw = dict(rows_per_item=3, max_new_tokens=10, dtype="bfloat16", device_map=None, default=7)
    assert batch_for_free_memory([str(folder)], device="cpu", **kw) == 7
    assert batch_for_free_memory(["org/hub-id"], device="cuda:0", **kw) == 7
    seen = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (seen.append(str(dev)) or 10_000_000, 80_000_000))
    row = kv_bytes_per_row(layers=2, kv_heads=2, head_dim=16, tokens=2048 + 10, dtype_bytes=2)
    want = int((10_000_000 - 2 * 2000) * 0.8 // (3 * row))  # two models of 1000 bf16 parameters each
    assert batch_for_free_memory([str(folder), str(folder)], device="cuda:1", **kw) == want == 5
    assert seen == ["cuda:1"]


def test_probe_batch_options_accept_auto_and_name_bad_values(tmp_path):
    from frankenscope.errors import FrankenscopeError
    from frankenscope.probes.run import prepare_localize_reasoning
    from frankenscope.probes.skip import default_batch_items
    from frankenscope.testing.families import save_tiny

    model = save_tiny("qwen2-vl", tmp_path / "m")
    probe = prepare_localize_reasoning(str(model), tmp_path / "o", n=1, layers="0,1", batch_items="auto")
    assert probe.batch_items == default_batch_items(2)  # on the CPU
    assert prepare_localize_reasoning(str(model), tmp_path / "o", n=1, batch_items="3").batch_items == 3
    with pytest.raises(FrankenscopeError, match="batch size 'many'"):
        prepare_localize_reasoning(str(model), tmp_path / "o", n=1, batch_items="many")
