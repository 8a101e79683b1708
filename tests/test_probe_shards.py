"""Probes in shards (probes/shards.py): each probe run as k shards and combined writes exactly the files of the
whole run; shard planning never splits a batch; shard files are reused only under their own key."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

import frankenscope
from frankenscope.errors import FrankenscopeError
from frankenscope.organism.model import build_organism, save_folder
from frankenscope.probes.run import prepare_attention, prepare_localize_reasoning, prepare_localize_vision
from frankenscope.probes.shards import (
    PROBE_SHARDS_DIR,
    ProbeShard,
    combine_probe_shards,
    plan_probe_shards,
    run_probe,
    run_probe_shard,
    shard_path,
)

ROOT = Path(frankenscope.__file__).resolve().parents[2]


def _compare(a: Path, b: Path) -> list[tuple[str, list[str]]]:
    spec = importlib.util.spec_from_file_location("compare_results", ROOT / "scripts" / "compare_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.compare(a, b, mod.VOLATILE)


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second micro organism (another seed): the attention probe's RL."""
    model, processor = build_organism("micro", seed=1)
    return save_folder(model, processor, tmp_path_factory.mktemp("org1") / "micro1")


def _probes(micro_dir: Path, other_dir: Path) -> dict[str, Any]:
    """name -> (prepare(out), shard_items): small settings whose plans have several shards."""
    common = dict(seed=0, progress=False)
    return {
        # 4 pairs (1 per probe task), one batch each: shards of 3 + 1 pairs
        "vision": (lambda out: prepare_localize_vision(str(micro_dir), out, n=1, max_new_tokens=6, **common), 3),
        # 6 image items (more_than, digit_sum) then 3 text items (word_problem), 2 per batch:
        # [0 1] [2 3] [4 5] | [6 7] [8]; 4 items per shard: the third shard holds the image group's last batch
        # and the text group's first
        "reasoning": (lambda out: prepare_localize_reasoning(str(micro_dir), out, n=3, max_new_tokens=8,
                                                             batch_items=2, **common), 4),
        # 6 items with images, generated 2 per batch: 3 shards of one batch each
        "attention": (lambda out: prepare_attention({"IN": str(micro_dir), "RL": str(other_dir)}, out, n=3,
                                                    max_new_tokens=8, batch_size=2, **common), 2),
    }


@pytest.mark.parametrize("name", ["vision", "reasoning", "attention"])
def test_a_probe_in_shards_writes_the_files_of_the_whole_run(name: str, micro_dir: Path, other_dir: Path,
                                                             tmp_path: Path) -> None:
    prepare, shard_items = _probes(micro_dir, other_dir)[name]
    whole = tmp_path / "whole"
    _, whole_path, whole_fig = run_probe(prepare(whole))
    sharded = tmp_path / "sharded"
    probe = prepare(sharded)
    shards = plan_probe_shards(probe.batches(), shard_items)
    assert len(shards) >= 2
    if name == "reasoning":
        assert [len(s.items) for s in shards] == [4, 4, 1] and shards[1].items == [4, 5, 6, 7]
    for shard in reversed(shards):  # any order: each shard is computed alone
        assert run_probe_shard(probe, shard)["reused"] is False
        assert shard_path(probe, shard).is_file()
    _, path, fig = combine_probe_shards(probe, shard_items)
    assert not (sharded / PROBE_SHARDS_DIR).exists()
    assert path.relative_to(sharded) == whole_path.relative_to(whole)
    assert sorted(p.relative_to(sharded) for p in sharded.rglob("*")) == sorted(
        p.relative_to(whole) for p in whole.rglob("*"))
    assert _compare(whole, sharded) == []
    assert fig is not None and fig.read_bytes() == whole_fig.read_bytes()
    doc = json.loads(path.read_text())
    assert doc["wall_s"] >= 0 and len(doc["records"]) > 0
    # the comparison can fail: one changed record is a difference
    recs = doc["records"]
    first = recs[0] if isinstance(recs, list) else recs["IN"][0]
    first["id"] += "x"
    path.write_text(json.dumps(doc))
    assert [d[0] for d in _compare(whole, sharded)] == [str(path.relative_to(sharded))]


def test_shard_files_are_reused_under_their_key_only(micro_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "v"
    probe = prepare_localize_vision(str(micro_dir), out, n=1, max_new_tokens=4, progress=False)
    shards = plan_probe_shards(probe.batches(), 2)
    assert [s.items for s in shards] == [[0, 1], [2, 3]]
    assert run_probe_shard(probe, shards[0])["reused"] is False
    file = shard_path(probe, shards[0])
    written = file.read_text()

    def no_compute(batches: Any) -> Any:
        raise AssertionError("a reused shard computes nothing")

    monkeypatch.setattr(probe, "compute", no_compute)
    assert run_probe_shard(probe, shards[0]) == {"shard": 0, "items": 2, "reused": True}
    # the same shard of a probe with other settings is computed again
    other = prepare_localize_vision(str(micro_dir), out, n=1, max_new_tokens=5, progress=False)
    assert run_probe_shard(other, shards[0])["reused"] is False and file.read_text() != written
    # combining with a shard missing (or from other settings) fails, naming the file
    with pytest.raises(FrankenscopeError, match=r"0001\.json.*shard 1 are missing"):
        combine_probe_shards(other, 2)
    with pytest.raises(FrankenscopeError, match=r"0000\.json.*from other settings"):
        combine_probe_shards(probe, 2)
    # a whole (local) run removes shard files an interrupted sharded run left, and nothing else
    (out / PROBE_SHARDS_DIR / "notes.txt").write_text("mine")
    (out / PROBE_SHARDS_DIR / ".0001.json.123-abcd.tmp").write_text("{")
    run_probe(other)
    assert [f.name for f in (out / PROBE_SHARDS_DIR).iterdir()] == ["notes.txt"]
    (out / PROBE_SHARDS_DIR / "notes.txt").unlink()
    run_probe_shard(other, shards[1])
    run_probe(other)
    assert not (out / PROBE_SHARDS_DIR).exists()


def test_plans_take_whole_consecutive_batches() -> None:
    batches = [[0, 2], [4], [1, 3], [5, 6, 7, 8], [9]]
    for k in (1, 2, 3, 4, 5, 7, 100):
        shards = plan_probe_shards(batches, k)
        assert [list(b) for s in shards for b in s.batches] == batches  # every batch once, in run order
        assert all(len(s.items) <= k or len(s.batches) == 1 for s in shards)
        assert [s.index for s in shards] == list(range(len(shards)))
    assert [len(s.batches) for s in plan_probe_shards(batches, 3)] == [2, 1, 1, 1]
    assert plan_probe_shards(batches, 3)[0] == ProbeShard(0, ((0, 2), (4,)))
    assert plan_probe_shards(batches, None) == [ProbeShard(0, tuple(tuple(b) for b in batches))]
    with pytest.raises(FrankenscopeError, match="executor.probe_shard_items"):
        plan_probe_shards(batches, 0)
    with pytest.raises(FrankenscopeError, match="no items"):
        plan_probe_shards([], 4)
