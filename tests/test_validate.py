"""`frankenscope validate`: every planted-effect check passes on a micro organism, and each check fails
(or loses its power and says so) when the analysis it checks is deliberately broken."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import frankenscope.probes.attention as attention_mod
import frankenscope.probes.skip as skip_mod
import frankenscope.probes.swap as swap_mod
import frankenscope.probes.sweep as sweep_mod
import frankenscope.weights.diff as diff_mod
import frankenscope.weights.merge as merge_mod
from frankenscope.organism.model import build_organism, save_folder
from frankenscope.validate import (
    CHECKS,
    ValidateSettings,
    expected_ranks,
    hash_folder,
    planted_spectrum,
    planted_update,
    uniform_mass,
    validate,
)

FAST = ValidateSettings(n=2, max_new_tokens=8)
#: fault-injection runs: one item (pair) per task is enough to see the fault
FAULT = ValidateSettings(n=1, max_new_tokens=6)


pytestmark = pytest.mark.slow

def _sha_tree(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def sensitive_dir(tmp_path_factory):
    """A micro organism with initializer_range 0.2: its answers depend on the image, the layers and the weights
    (at the default 0.02 every variant decodes the same tokens and "nothing changes" would prove nothing)."""
    model, proc = build_organism("micro", seed=1, initializer_range=0.2)
    return save_folder(model, proc, tmp_path_factory.mktemp("validate") / "micro")


@pytest.fixture(scope="module")
def full_run(sensitive_dir, tmp_path_factory):
    before = _sha_tree(sensitive_dir)
    out = tmp_path_factory.mktemp("validate-out")
    doc = validate(sensitive_dir, out, settings=FAST, echo=lambda _: None)
    return doc, out, before


def _check(doc, name):
    return next(c for c in doc["checks"] if c["name"] == name)


def test_every_check_passes_on_the_micro_organism(full_run, sensitive_dir):
    doc, out, before = full_run
    assert [c["name"] for c in doc["checks"]] == list(CHECKS)
    assert {c["name"]: c["status"] for c in doc["checks"]} == {c: "pass" for c in CHECKS}
    assert doc["passed"] and doc["kind"] == "validate" and doc["schema_version"] == 1
    # the user's checkpoint is only read: the same bytes before and after, and no work files left behind
    assert doc["inputs_unchanged"] and _sha_tree(sensitive_dir) == before
    assert not (out / ".work").exists()
    md = (out / "validate.md").read_text()
    assert "| check | planted edit | predicted | observed [interval] | tolerance (why) | result |" in md
    assert md.count("| pass |") == len(CHECKS)
    assert json.loads((out / "validate.json").read_text())["passed"] is True


def test_nothing_changes_checks_have_power(full_run):
    """The predictions "nothing changes" are not trivially true: the unedited model does change."""
    doc, _, _ = full_run
    blind, dead, transfer, att = (_check(doc, n) for n in ("blind", "dead_layer", "transfer", "attention"))
    assert blind["details"]["swap_changed_blind"] == 0 < blind["details"]["swap_changed_model"]
    power = [c for c in blind["criteria"] if c["power"]]
    assert len(power) == 2 and all(c["ok"] for c in power)
    assert dead["details"]["changed_dead"] == 0 < dead["details"]["changed_model"]
    inc = dead["details"]["increase"]
    assert inc["diff"] == 0.0 and inc["n_broken"] == 0 and inc["n_fixed"] == 0  # no item flips either way
    assert inc["ci_low"] < 0 < inc["ci_high"]  # and the interval stays honest (positive width) at finite n
    assert transfer["details"]["differ_hybrid"] == 0 < transfer["details"]["differ_in"]
    per = att["details"]["per_item"]
    assert per and all(abs(r["observed"] - r["predicted"]) <= 1e-5 * r["predicted"] for r in per)
    assert any(abs(r["A"] - r["predicted"]) > 0.01 * r["predicted"] for r in per)
    assert att["details"]["max_other_layer_diff"] == 0.0


def test_planted_spectrum_formulas():
    s = planted_spectrum(4)
    assert s == [1.0, 0.75, 0.5, 0.25]
    e = expected_ranks(s)
    assert e["stable_rank"] == pytest.approx(1.875)
    p = [0.4, 0.3, 0.2, 0.1]
    assert e["effective_rank"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    d = planted_update((12, 7), [3.0, 2.0, 1.0], seed=0)
    assert torch.allclose(torch.linalg.svdvals(d)[:3], torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert float(torch.linalg.svdvals(d)[3]) < 1e-12
    # uniform causal attention: token at position p = P + t sees p + 1 keys, |V| of them image tokens
    assert uniform_mass(10, 2, 4) == pytest.approx(4 * (1 / 11 + 1 / 12) / 2)


def _run(sensitive_dir, tmp_path, check, settings=FAULT):
    doc = validate(sensitive_dir, tmp_path / "out", checks=[check], settings=settings, echo=lambda _: None)
    return _check(doc, check), doc


# --------------------------------------------------------------------------- fault injection


def test_blind_fails_when_the_fast_swap_engine_masks_wrongly(sensitive_dir, tmp_path, monkeypatch):
    """A fast engine without the offset causal mask (the fast sweep's first pitfall) changes answers even when
    source and target are identical: the blind check sees swaps change answers and fails."""
    monkeypatch.setattr(sweep_mod, "_suffix_mask", lambda *a, **k: None)
    c, doc = _run(sensitive_dir, tmp_path, "blind")
    assert c["status"] == "fail" and not doc["passed"]
    assert c["details"]["swap_changed_blind"] > 0


def test_blind_is_inconclusive_when_the_swap_engine_swaps_nothing(sensitive_dir, tmp_path, monkeypatch):
    """An engine that swaps in the target's own K/V never changes an answer: the blind prediction holds
    trivially, and the power criterion (the unedited model must change) catches it."""
    real = swap_mod.fast_prompt_variants

    def no_swap(model, adapter, ep, *args, **kwargs):
        return real(model, adapter, swap_mod.EncodedPair(ep.pair_id, ep.target, ep.target, ep.span, ep.prompt_len,
                                                         ep.positions), *args, **kwargs)

    monkeypatch.setattr(swap_mod, "fast_prompt_variants", no_swap)
    c, doc = _run(sensitive_dir, tmp_path, "blind")
    assert c["status"] == "inconclusive" and not doc["passed"]
    assert c["details"]["swap_changed_model"] == 0


def test_blind_is_inconclusive_when_the_black_image_control_shows_the_image(sensitive_dir, tmp_path, monkeypatch):
    """An evaluation whose "black" condition still shows the real image gives M_vis = 0 on any model: the power
    criterion (the unedited model's answers change with the black image) catches it."""
    from frankenscope.adapters.base import VLMAdapter

    monkeypatch.setattr(VLMAdapter, "black_image", staticmethod(lambda image: image))
    c, _ = _run(sensitive_dir, tmp_path, "blind")
    assert c["status"] == "inconclusive"
    assert [k["what"] for k in c["criteria"] if not k["ok"]] == [
        "power: the unedited model's response changes with the black image on some M_vis item"]


def test_dead_layer_fails_when_the_skip_probe_skips_the_wrong_layer(sensitive_dir, tmp_path, monkeypatch):
    real = skip_mod.row_gates

    def shifted(n_items, layers, device=None):
        return {layer + 1: g for layer, g in real(n_items, layers, device).items()}

    monkeypatch.setattr(skip_mod, "row_gates", shifted)
    c, _ = _run(sensitive_dir, tmp_path, "dead_layer")
    assert c["status"] == "fail" and c["details"]["changed_dead"] > 0


def _drop_down_proj(monkeypatch):
    real = diff_mod._check_compatible
    monkeypatch.setattr(diff_mod, "_check_compatible",
                        lambda readers: [n for n in real(readers) if "down_proj" not in n])


def test_dead_layer_fails_when_the_diff_drops_a_tensor(sensitive_dir, tmp_path, monkeypatch):
    _drop_down_proj(monkeypatch)
    c, _ = _run(sensitive_dir, tmp_path, "dead_layer")
    assert c["status"] == "fail"
    assert [k["what"] for k in c["criteria"] if not k["ok"]] == [
        "tensors with non-zero diff energy", "relative norm of each zeroed matrix (delta = -W)"]


def test_planted_update_fails_when_the_diff_drops_a_tensor(sensitive_dir, tmp_path, monkeypatch):
    _drop_down_proj(monkeypatch)
    c, _ = _run(sensitive_dir, tmp_path, "planted_update")
    assert c["status"] == "fail"
    assert "edited matrices present in the diff" in c["reason"]


def test_planted_update_fails_when_the_spectrum_is_truncated(sensitive_dir, tmp_path, monkeypatch):
    real = diff_mod.singular_values

    def truncated(d, method="svd"):
        s = real(d, method).clone()
        s[3:] = 0  # an SVD that loses everything past the third value
        return s

    monkeypatch.setattr(diff_mod, "singular_values", truncated)
    c, _ = _run(sensitive_dir, tmp_path, "planted_update")
    assert c["status"] == "fail"
    failed = {k["what"] for k in c["criteria"] if not k["ok"]}
    assert "numerical rank of every edited matrix's delta" in failed
    assert "effective rank of every edited matrix" in failed  # (stable rank uses ||D||_F, not the spectrum)


def test_transfer_fails_when_the_merge_takes_a_tensor_from_the_wrong_donor(sensitive_dir, tmp_path, monkeypatch):
    real = merge_mod._source_plan

    def wrong(readers, regions, layers, non_layer):
        items = real(readers, regions, layers, non_layer)
        other = {"IN": "RL", "RL": "IN"}
        for i, (name, lab, _) in enumerate(items):
            if "layers.1.mlp.up_proj" in name:  # one tensor of the mid region comes from the other donor
                items[i] = (name, other[lab], readers[other[lab]].entry(readers[lab].entry(name).canonical))
        return items

    monkeypatch.setattr(merge_mod, "_source_plan", wrong)
    c, _ = _run(sensitive_dir, tmp_path, "transfer")
    assert c["status"] == "fail"
    bad = [k for k in c["criteria"] if not k["ok"]]
    assert len(bad) >= 4  # every hybrid, and RL:RL:RL's responses no longer equal RL's
    assert any("RL:RL:RL" in k["what"] for k in bad)


def test_attention_fails_when_the_probe_shifts_layers(sensitive_dir, tmp_path, monkeypatch):
    real = attention_mod.capture_attention

    def shifted(model, adapter, layers, reducer):
        n = adapter.num_layers(model)
        return real(model, adapter, [(j + 1) % n for j in layers], lambda j, w: reducer((j - 1) % n, w))

    monkeypatch.setattr(attention_mod, "capture_attention", shifted)
    c, _ = _run(sensitive_dir, tmp_path, "attention")
    assert c["status"] == "fail"
    failed = {k["what"] for k in c["criteria"] if not k["ok"]}
    assert "largest relative |mass B - uniform prediction| in the edited layers" in failed
    assert "largest |mass A - mass B| outside the edited layers" in failed


# --------------------------------------------------------------------------- applicability and the CLI


def test_planted_update_not_applicable_in_bfloat16(sensitive_dir, tmp_path):
    c, doc = _run(sensitive_dir, tmp_path, "planted_update", ValidateSettings(n=1, max_new_tokens=4, dtype="bfloat16"))
    assert c["status"] == "not applicable" and "float32" in c["reason"]
    assert not doc["passed"]


def test_dead_layer_in_bfloat16_diffs_against_an_unedited_resave(sensitive_dir, tmp_path):
    """Variants in another dtype than the stored one are diffed against the model re-saved in that dtype, so
    the rounding of the cast is not mistaken for planted energy."""
    c, _ = _run(sensitive_dir, tmp_path, "dead_layer", ValidateSettings(n=1, max_new_tokens=6, dtype="bfloat16"))
    assert c["status"] == "pass", c["reason"]
    assert len(c["details"]["nonzero_tensors"]) == 2


def test_every_check_passes_on_a_tiny_qwen2_vl(tmp_path):
    """The other adapter architecture (Qwen2VLForConditionalGeneration, the real family's tokenizer/processor
    layout from `frankenscope tiny`), one item per task."""
    from frankenscope.testing.families import register_auto_processors, save_tiny

    register_auto_processors()
    folder = save_tiny("qwen2-vl", tmp_path / "q2", seed=0, initializer_range=0.2)
    doc = validate(folder, tmp_path / "out", settings=FAULT, echo=lambda _: None)
    assert {c["name"]: c["status"] for c in doc["checks"]} == {c: "pass" for c in CHECKS}, \
        [(c["name"], c["reason"]) for c in doc["checks"]]


def test_cli_validate(sensitive_dir, tmp_path):
    from typer.testing import CliRunner

    from frankenscope.cli import app

    r = CliRunner().invoke(app, ["validate", str(sensitive_dir), "--out", str(tmp_path / "v"),
                                 "--checks", "planted_update,dead_layer", "--n", "1", "--max-new-tokens", "6",
                                 "--dead-layer", "1"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "v" / "validate.json").read_text())
    assert [c["status"] for c in doc["checks"]] == ["pass", "pass"]
    assert "Dead layer (layer 1)" in (tmp_path / "v" / "validate.md").read_text()
    r = CliRunner().invoke(app, ["validate", str(sensitive_dir), "--out", str(tmp_path / "w"), "--checks", "nope"])
    assert r.exit_code == 2 and "unknown check" in r.output
    r = CliRunner().invoke(app, ["validate", str(sensitive_dir), "--out", str(sensitive_dir / "v")])
    assert r.exit_code == 2 and "overlaps the input" in r.output and not (sensitive_dir / "v").exists()


# --------------------------------------------------------------------------- frozen transfer (organism)


@pytest.fixture(scope="module")
def micro_org(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from frankenscope.organism.build import build

    root = tmp_path_factory.mktemp("org") / "organism"
    build(root, preset="micro", seed=0, progress=False, log=lambda *a: None)
    return root


def _planted_rl(model: Any, processor: Any, rows: Any, **kw: Any) -> dict[str, Any]:
    """A stand-in for GRPO that changes every trainable parameter (the micro organism's real RL gets zero
    reward and changes nothing, so the check would have no power); frozen parameters are left alone."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.is_floating_point():
                p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=g))
    return {"steps": 0, "train_loss": 0.0, "reward_curve": []}


def test_frozen_transfer_puts_all_of_the_gain_in_the_trained_region(micro_org: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("frankenscope.organism.rl.train_grpo", _planted_rl)
    before = hash_folder(micro_org / "in")
    doc = validate(str(micro_org / "in"), tmp_path / "v", in_=str(micro_org / "in"), rl=str(micro_org / "rl"),
                   checks=["frozen_transfer"], settings=ValidateSettings(n=1), echo=lambda s: None)
    c = _check(doc, "frozen_transfer")
    assert c["status"] == "pass", c
    assert c["details"]["moved"] == [] and c["details"]["trained_tensors"] > 0
    assert hash_folder(micro_org / "in") == before and not (micro_org / "rl-frozen-early+mid").exists()


def test_frozen_transfer_fails_when_the_freeze_does_not_hold(micro_org: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("frankenscope.organism.rl.train_grpo", _planted_rl)
    monkeypatch.setattr("frankenscope.weights.freeze.apply_freeze", lambda model, patterns: [])  # freezes nothing
    doc = validate(str(micro_org / "in"), tmp_path / "v", in_=str(micro_org / "in"), rl=str(micro_org / "rl"),
                   checks=["frozen_transfer"], settings=ValidateSettings(n=1), echo=lambda s: None)
    assert _check(doc, "frozen_transfer")["status"] == "fail"


def test_frozen_transfer_is_not_applicable_without_an_organism(micro_dir: Path, tmp_path: Path) -> None:
    doc = validate(str(micro_dir), tmp_path / "v", in_=str(micro_dir), rl=str(micro_dir), checks=["frozen_transfer"],
                   echo=lambda s: None)
    assert _check(doc, "frozen_transfer")["status"] == "not applicable"
