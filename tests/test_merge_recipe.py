"""merge.yaml is a recipe mergekit accepts for Qwen2.5-VL (its modular syntax) and, run by mergekit itself,
reproduces frankenscope's hybrid bit for bit; merged folders carry merge.json, never a donor's stage.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from frankenscope.organism.model import build_organism, save_folder
from frankenscope.weights.merge import PAPER_PLANS, merge, merge_all_hybrids

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def donors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("donors")
    out = {}
    for label, seed in (("IN", 1), ("RL", 2)):
        model, proc = build_organism("micro", seed=seed)
        out[label] = save_folder(model, proc, root / label)
        (out[label] / "stage.json").write_text(json.dumps({"stage": label.lower()}))  # as the organism writes
    return out


def test_mergekit_parses_every_hybrid_recipe(donors: dict[str, Path], tmp_path: Path) -> None:
    mergekit_config = pytest.importorskip("mergekit.config")  # in the dev extra, pinned with the rest
    for path in merge_all_hybrids(donors, tmp_path / "hyb", progress=False):
        recipe = yaml.safe_load((path / "merge.yaml").read_text())
        cfg = mergekit_config.MergeConfiguration.model_validate(recipe)
        assert cfg.modules is not None and set(cfg.modules) == {"text_decoder", "vision_tower",
                                                                 "multi_modal_projector"}
        assert not (path / "stage.json").exists()  # a hybrid is not the donor's stage
        assert json.loads((path / "merge.json").read_text())["kind"] == "merge"
    assert len(list((tmp_path / "hyb").iterdir())) == len(PAPER_PLANS)


def test_mergekit_run_reproduces_the_hybrid_bit_for_bit(donors: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("mergekit.merge")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    # IN:RL:IN: the first and last slices come from the non-layer donor, so mergekit's rule for embeddings and
    # final norm (first / last slice) and frankenscope's (non-layer donor) agree; the header says when they don't
    ours = merge(donors, "IN:RL:IN", tmp_path / "ours", progress=False)
    text = (ours / "merge.yaml").read_text()
    assert "Here they differ" not in text
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(tmp_path / "mk"), MergeOptions())
    theirs: dict[str, torch.Tensor] = {}
    for f in sorted((tmp_path / "mk").glob("*.safetensors")):
        theirs.update(load_file(str(f)))
    mine = load_file(str(ours / "model.safetensors"))
    assert set(mine) == set(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    other = merge(donors, "IN:IN:RL", tmp_path / "other", progress=False)
    assert "Here they differ: mergekit would take the final norm and lm_head from RL" in (other / "merge.yaml").read_text()
    shutil.rmtree(tmp_path / "mk")
