"""The Ray Data vLLM pipeline (`executor.vllm_pipeline: ray-data`): its rows, and its plumbing on a local Ray
cluster with a stand-in for the vLLM processor (CI has no GPU and no vLLM)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.backends import GenerationSpec
from frankenscope.evaluate.ray_data import pipeline_rows, run_pipeline
from frankenscope.evaluate.shards import Shard, append_batch, read_records


def _shards(tmp_path: Path, black: bool = False) -> list[Shard]:
    img = tmp_path / "red.png"
    Image.new("RGB", (8, 6), (255, 0, 0)).save(img)
    spec = GenerationSpec(model="m", backend="vllm", system="Think.", max_new_tokens=7, batch_size=4)
    items = [Item("a", "t", "How many?", "1", "number", image=str(img)), Item("b", "t", "2+2?", "4", "number",
                                                                             category="text")]
    return [Shard("s0", spec, black, [[("k0", items[0])]]), Shard("s1", spec, black, [[("k1", items[1])]])]


def _image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_rows_are_chat_messages_image_first_and_skip_recorded_keys(tmp_path: Path) -> None:
    rows = pipeline_rows(_shards(tmp_path), tmp_path / "rec")
    assert [(r["shard"], r["key"]) for r in rows] == [("s0", "k0"), ("s1", "k1")]
    system, user = rows[0]["messages"]
    assert system == {"role": "system", "content": "Think."}
    assert [c["type"] for c in user["content"]] == ["image_url", "text"] and user["content"][1]["text"] == "How many?"
    assert _image(user["content"][0]["image_url"]["url"]).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert [c["type"] for c in rows[1]["messages"][1]["content"]] == ["text"]
    assert rows[0]["sampling_params"] == {"temperature": 0.0, "max_tokens": 7, "repetition_penalty": 1.0,
                                          "skip_special_tokens": True}
    black = pipeline_rows(_shards(tmp_path, black=True), tmp_path / "rec")
    im = _image(black[0]["messages"][1]["content"][0]["image_url"]["url"]).convert("RGB")
    assert im.size == (8, 6) and im.getextrema() == ((0, 0), (0, 0), (0, 0))
    (tmp_path / "rec").mkdir()
    append_batch(tmp_path / "rec" / "s0.jsonl", [("k0", "done before")])
    assert [r["key"] for r in pipeline_rows(_shards(tmp_path), tmp_path / "rec")] == ["k1"]
    other = Shard("s2", GenerationSpec(model="other", backend="vllm"), False, [])
    with pytest.raises(FrankenscopeError, match="one model"):
        pipeline_rows([*_shards(tmp_path), other], tmp_path / "rec")


def test_missing_vllm_names_the_install_command() -> None:
    from frankenscope.evaluate.ray_data import build_vllm_processor

    with pytest.raises(FrankenscopeError, match=r"pip install 'frankenscope\[vllm\]'"):
        build_vllm_processor(GenerationSpec(model="m", backend="vllm"), 1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Use 'expr' instead of 'fn'")
def test_pipeline_streams_responses_into_each_shards_records_and_resumes(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        def stand_in(ds):  # what the vLLM processor returns: the row's columns plus generated_text
            return ds.map(lambda r: {"shard": r["shard"], "key": r["key"],
                                     "generated_text": f"{r['messages'][-1]['content'][-1]['text']} -> ok"})

        shards, rec = _shards(tmp_path), tmp_path / "rec"
        assert run_pipeline(shards, rec, processor=stand_in) == {"generated": 2, "reused": 0}
        assert read_records(rec / "s0.jsonl") == {"k0": "How many? -> ok"}
        assert read_records(rec / "s1.jsonl") == {"k1": "2+2? -> ok"}
        assert run_pipeline(shards, rec, processor=stand_in) == {"generated": 0, "reused": 2}

        def drops(ds):
            return stand_in(ds).filter(lambda r: r["key"] != "k1")

        (rec / "s1.jsonl").unlink()
        with pytest.raises(FrankenscopeError, match="returned 0 responses for 1 prompts"):
            run_pipeline(shards, rec, processor=drops)
    finally:
        if started:
            ray.shutdown()


def test_config_accepts_the_pipeline_choice(tmp_path: Path) -> None:
    from frankenscope.study.config import StudyConfig

    models = {k: {"path": str(tmp_path / k)} for k in ("base", "in", "rl")}
    cfg = StudyConfig.model_validate({"name": "t", **models, "executor": {"kind": "ray", "vllm_pipeline": "ray-data"}})
    assert cfg.executor.vllm_pipeline == "ray-data"
    with pytest.raises(ValueError, match="vllm_pipeline"):
        StudyConfig.model_validate({"name": "t", **models, "executor": {"vllm_pipeline": "spark"}})


def test_the_ray_executor_runs_one_pipeline_per_model_with_replicas_from_the_gpus(tmp_path: Path) -> None:
    from frankenscope.study.config import StudyConfig
    from frankenscope.study.executors import _pipeline, _RayRun

    submitted = []

    class FakeRay:
        def cluster_resources(self):
            return {"CPU": 16.0, "GPU": 8.0}

        def remote(self, fn):
            class Task:
                def options(self, **kw):
                    self.kw = kw
                    return self

                def remote(self, *args):
                    submitted.append((fn, args, self.kw))
                    return object()
            return Task()

    models = {k: {"path": str(tmp_path / k)} for k in ("base", "in", "rl")}
    cfg = StudyConfig.model_validate({"name": "t", **models, "evaluation": {"backend": "vllm",
                                                                          "vllm": {"tensor_parallel_size": 2}},
                                      "executor": {"kind": "ray", "vllm_pipeline": "ray-data"}})
    run = _RayRun(FakeRay(), cfg, tmp_path, lambda s: None, lambda j: None, lambda j: None)
    a, b = _shards(tmp_path)
    c = Shard("s2", GenerationSpec(model="other", backend="vllm"), False, [])
    run._submit_pipelines([a, b, c])
    assert [(fn, args[0], args[2], kw["num_gpus"]) for fn, args, kw in submitted] == [
        (_pipeline, [a, b], 4, 0.0), (_pipeline, [c], 4, 0.0)]
    assert [what for what, _, _ in run.pending.values()] == ["pipeline", "pipeline"]
    assert [name for _, _, name in run.pending.values()] == ["s0,s1", "s2"]
