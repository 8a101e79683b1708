"""Streaming reader, weight diffs (kernels, aggregation, plots) and region-wise merges."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import typer
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from frankenscope.errors import FrankenscopeError
from frankenscope.organism.model import build_organism, save_folder
from frankenscope.testing.tiny import tiny_qwen2vl
from frankenscope.weights.cli import diff_cmd, merge_cmd
from frankenscope.weights.diff import (
    diff_models,
    diff_pair,
    effective_rank,
    frobenius,
    log_volume,
    normalized_spectrum,
    singular_values,
    spectral_metrics,
    spectral_norm,
    stable_rank,
)
from frankenscope.weights.merge import PAPER_PLANS, merge, merge_all_hybrids, plan_dirname
from frankenscope.weights.partition import partition
from frankenscope.weights.reader import INDEX_FILE, CheckpointReader

PLANTED = "model.layers.2.mlp.down_proj.weight"  # on-disk name of the planted rank-1 update
PLANTED_BIAS = "visual.blocks.0.attn.qkv.bias"


# ------------------------------------------------------------------------------------------
# fixtures: micro organisms saved as HF folders, and edited copies of them
# ------------------------------------------------------------------------------------------
def _clone(src: Path, dst: Path, edit=None, config_edit=None) -> Path:
    """Copy an HF folder, optionally editing its tensors {name: tensor} and config dict."""
    shutil.copytree(src, dst)
    if edit is not None:
        tensors = load_file(src / "model.safetensors")
        tensors = edit(dict(tensors))
        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    if config_edit is not None:
        cfg = json.loads((src / "config.json").read_text())
        config_edit(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def orgs(tmp_path_factory):
    """Base, IN, RL: micro organisms with different seeds; PERT: Base plus a planted rank-1 update."""
    root = tmp_path_factory.mktemp("weights")
    out = {}
    for label, seed in (("base", 0), ("in", 1), ("rl", 2)):
        model, proc = build_organism("micro", seed=seed)
        out[label] = save_folder(model, proc, root / label)

    def plant(t):
        g = torch.Generator().manual_seed(7)
        w = t[PLANTED]
        u, v = torch.randn(w.shape[0], 1, generator=g), torch.randn(1, w.shape[1], generator=g)
        t[PLANTED] = w + 0.01 * u @ v
        t[PLANTED_BIAS] = t[PLANTED_BIAS] + 0.5
        return t

    out["pert"] = _clone(out["base"], root / "pert", plant)
    out["root"] = root
    return out


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    rd = CheckpointReader(folder)
    return {e.disk_name: rd.get(e.disk_name) for e in rd.entries()}


def _no_nan(text: str) -> dict:
    def bad(c):
        raise AssertionError(f"non-JSON constant {c}")

    return json.loads(text, parse_constant=bad)


# ------------------------------------------------------------------------------------------
# kernels on matrices with known singular values
# ------------------------------------------------------------------------------------------
def _with_singular_values(m: int, n: int, s: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = len(s)
    u, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    return (u * torch.tensor(s, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("shape,s", [
    ((64, 40), [5.0, 3.0, 2.0, 1.0, 0.5, 0.25]),          # low rank, tall
    ((30, 90), [4.0 * 0.9**i for i in range(30)]),        # full rank, wide
    ((200, 120), [2.0 * 0.97**i for i in range(120)]),    # more than top_k values
])
@pytest.mark.parametrize("method", ["svd", "gram"])
def test_metrics_match_closed_forms(shape, s, method):
    d = _with_singular_values(*shape, s).to(torch.float32)
    st = torch.tensor(s, dtype=torch.float64)
    k = 50
    got = spectral_metrics(d, top_k=k, method=method)
    fro = math.sqrt(sum(x * x for x in s))
    assert frobenius(d) == pytest.approx(fro, rel=1e-6)
    assert got["spectral_norm"] == pytest.approx(s[0], rel=1e-5)
    assert got["stable_rank"] == pytest.approx(fro**2 / s[0] ** 2, rel=1e-5)
    p = st / st.sum()
    assert got["effective_rank"] == pytest.approx(math.exp(-float((p * p.log()).sum())), rel=1e-4)
    assert got["numerical_rank"] == len(s)
    want = [math.log(x / s[0]) for x in s[:k]]
    assert got["spectrum"] == pytest.approx(want, abs=2e-4)
    assert got["log_volume"] == pytest.approx(sum(math.log(x) for x in s[:k]), abs=1e-3)


def test_kernels_on_simple_cases():
    s = singular_values(torch.diag(torch.tensor([3.0, 4.0, 0.0])))
    assert s.tolist() == pytest.approx([4.0, 3.0, 0.0])
    # two equal singular values: effective rank 2, stable rank 2, flat spectrum
    eq = torch.tensor([2.0, 2.0], dtype=torch.float64)
    assert effective_rank(eq) == pytest.approx(2.0)
    assert stable_rank(math.sqrt(8.0), spectral_norm(eq)) == pytest.approx(2.0)
    assert normalized_spectrum(eq) == pytest.approx([0.0, 0.0])
    assert log_volume(eq, k=1) == pytest.approx(math.log(2.0))
    # a Conv3d-like weight is reshaped to (out, -1)
    conv = _with_singular_values(8, 3 * 2 * 2 * 2, [3.0, 1.0]).reshape(8, 3, 2, 2, 2).float()
    assert spectral_metrics(conv)["spectral_norm"] == pytest.approx(3.0, rel=1e-5)


def test_all_zero_delta_has_no_nan():
    got = spectral_metrics(torch.zeros(16, 8))
    assert got == {"spectral_norm": 0.0, "stable_rank": 0.0, "effective_rank": 0.0, "log_volume": None,
                   "numerical_rank": 0, "spectrum": []}


# ------------------------------------------------------------------------------------------
# reader
# ------------------------------------------------------------------------------------------
def _write_sharded(src: Path, dst: Path, n_shards: int = 3) -> Path:
    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    tensors = load_file(src / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for i in range(n_shards):
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::n_shards]}
        save_file(part, dst / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (dst / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def test_reader_names_shapes_and_layout(orgs):
    rd = CheckpointReader(orgs["base"])
    assert rd.architecture == "Qwen2_5_VLForConditionalGeneration"
    assert (rd.n_layers, rd.n_vision_blocks) == (4, 2)
    assert "model.layers.0.mlp.up_proj.weight" in rd.names()
    assert "model.language_model.layers.0.mlp.up_proj.weight" in rd.canonical_names()
    assert "model.visual.blocks.1.attn.qkv.weight" in rd.canonical_names()
    # both namings address the same tensor
    a = rd.get("model.layers.0.mlp.up_proj.weight")
    b = rd.get("model.language_model.layers.0.mlp.up_proj.weight")
    assert torch.equal(a, b) and rd.shape("visual.patch_embed.proj.weight") == (64, 3, 2, 14, 14)
    assert rd.dtype("model.norm.weight") == torch.float32
    assert rd.tied_embeddings and any("tied" in n for n in rd.notes)
    assert not any("lm_head" in c for c in rd.canonical_names())
    assert rd.fingerprint() != CheckpointReader(orgs["in"]).fingerprint()
    assert rd.fingerprint(full=True) == CheckpointReader(orgs["base"]).fingerprint(full=True)


def test_sharded_checkpoint_reads_like_single_file(orgs, tmp_path):
    sharded = _write_sharded(orgs["base"], tmp_path / "sharded")
    one, many = CheckpointReader(orgs["base"]), CheckpointReader(sharded)
    assert len(many.files) == 3
    assert sorted(one.canonical_names()) == sorted(many.canonical_names())
    for name in one.canonical_names():
        assert torch.equal(one.get(name), many.get(name)), name
    doc = diff_pair(orgs["base"], sharded, tmp_path / "d", plots=False, spectral=False, progress=False)
    assert doc["totals"]["delta"]["max_abs"] == 0.0


def test_reader_single_file_and_in_memory_names(orgs, tmp_path):
    tensors = load_file(orgs["base"] / "model.safetensors")
    renamed = {("model.language_model." + n[len("model."):]) if n.startswith("model.") else "model." + n: t
               for n, t in tensors.items()}
    f = tmp_path / "weights.safetensors"
    save_file(renamed, f, metadata={"format": "pt"})
    with pytest.raises(FrankenscopeError, match="architecture"):
        CheckpointReader(f)
    rd = CheckpointReader(f, architecture="Qwen2_5_VLForConditionalGeneration")
    assert sorted(rd.canonical_names()) == sorted(CheckpointReader(orgs["base"]).canonical_names())
    assert (rd.n_layers, rd.n_vision_blocks) == (4, 2)  # counted from the names without a config


def test_reader_errors_name_the_path(orgs, tmp_path):
    with pytest.raises(FrankenscopeError, match="not found"):
        CheckpointReader(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrankenscopeError, match="model.safetensors"):
        CheckpointReader(empty)
    sharded = _write_sharded(orgs["base"], tmp_path / "broken")
    (sharded / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FrankenscopeError, match="model-00002-of-00003.safetensors"):
        CheckpointReader(sharded)


# ------------------------------------------------------------------------------------------
# diff
# ------------------------------------------------------------------------------------------
def test_diff_of_a_checkpoint_with_itself_is_zero_everywhere(orgs, tmp_path):
    doc = diff_pair(orgs["in"], orgs["in"], tmp_path / "self", progress=False)
    _no_nan((tmp_path / "self" / "diff.json").read_text())
    assert doc["kind"] == "diff" and doc["schema_version"] == 1
    assert len(doc["tensors"]) == 80  # every stored tensor, biases and norms included
    for t in doc["tensors"]:
        st = t["stats"]["delta"]
        assert st["fro"] == 0.0 and st["max_abs"] == 0.0, t["name"]
        if t["spectral"]:
            assert st["spectral_norm"] == 0.0 and st["stable_rank"] == 0.0 and st["effective_rank"] == 0.0
            assert st["spectrum"] == [] and st["log_volume"] is None
    for row in doc["layers"] + doc["regions"]:
        assert row["stats"]["delta"]["fro_sum"] == 0.0
    assert (tmp_path / "self" / "fig5_energy.png").stat().st_size > 0


def test_diff_three_way_values_and_layout(orgs, tmp_path):
    out = tmp_path / "d3"
    doc = diff_models(orgs["base"], orgs["in"], orgs["rl"], out, top_k=20, progress=False)
    assert set(doc["deltas"]) == {"in", "rl"}
    assert doc["deltas"]["rl"] == {"from": "in", "to": "rl"}
    assert set(doc["inputs"]) == {"base", "in", "rl"} and all(v["fingerprint"] for v in doc["inputs"].values())
    assert any("tied" in n for n in doc["notes"])
    # unified axis: vision blocks 0-1, projector 2, LLM layers 3-6
    rows = {r["unified_index"]: r for r in doc["layers"]}
    assert sorted(rows) == list(range(7))
    assert [rows[i]["section"] for i in range(7)] == ["vision"] * 2 + ["projector"] + ["llm"] * 4
    assert rows[0]["n"] == 5 and rows[2]["n"] == 3 and rows[3]["n"] == 7
    assert rows[3]["stats"]["in"]["attention"]["n"] == 4 and rows[3]["stats"]["in"]["mlp"]["n"] == 3
    # regions follow partition()
    assert {r["region"]: r["layers"] for r in doc["regions"]} == partition(4, "thirds")
    # one tensor against a direct computation
    b, i, r = (_tensors(orgs[k]) for k in ("base", "in", "rl"))
    t = next(t for t in doc["tensors"] if t["disk_name"] == "model.layers.1.self_attn.q_proj.weight")
    assert t["stats"]["in"]["fro"] == pytest.approx(float((i[t["disk_name"]] - b[t["disk_name"]]).norm()), rel=1e-5)
    assert t["stats"]["rl"]["relative"] == pytest.approx(
        float((r[t["disk_name"]] - i[t["disk_name"]]).norm() / i[t["disk_name"]].norm()), rel=1e-5)
    s = torch.linalg.svdvals((r[t["disk_name"]] - i[t["disk_name"]]).double())
    assert t["stats"]["rl"]["spectral_norm"] == pytest.approx(float(s[0]), rel=1e-6)
    assert len(t["stats"]["rl"]["spectrum"]) == 20
    # layer mean = mean over the layer's selected matrices
    layer = [x for x in doc["tensors"] if x["unified_index"] == 4 and x["selected"]]
    assert rows[4]["stats"]["in"]["fro_mean"] == pytest.approx(
        sum(x["stats"]["in"]["fro"] for x in layer) / len(layer))
    assert not any(x["selected"] for x in doc["tensors"] if "bias" in x["name"] or "norm" in x["name"])
    for name in ("fig5_energy.png", "fig6_spectra.png", "fig6_rank_trends.png"):
        assert (out / name).stat().st_size > 1000


def test_diff_finds_a_planted_rank_one_update(orgs, tmp_path):
    doc = diff_pair(orgs["base"], orgs["pert"], tmp_path / "p", progress=False, plots=False)
    changed = {t["disk_name"] for t in doc["tensors"] if t["stats"]["delta"]["max_abs"] > 0}
    assert changed == {PLANTED, PLANTED_BIAS}
    t = next(t for t in doc["tensors"] if t["disk_name"] == PLANTED)
    st = t["stats"]["delta"]
    assert st["numerical_rank"] == 1 and st["effective_rank"] == pytest.approx(1.0)
    assert st["stable_rank"] == pytest.approx(1.0, rel=1e-4) and st["spectrum"] == [0.0]
    energy = {r["unified_index"]: r["stats"]["delta"]["fro_sum"] for r in doc["layers"]}
    v = doc["layout"]["n_vision_blocks"]
    assert [i for i, e in energy.items() if e > 0] == [v + 1 + 2]  # the bias is not in the aggregates
    late = next(r for r in doc["regions"] if r["region"] == "late")
    assert late["stats"]["delta"]["fro_sum"] == pytest.approx(st["fro"])


def test_diff_refuses_mismatched_checkpoints(orgs, tmp_path):
    tiny = tmp_path / "tiny"
    tiny_qwen2vl().save_pretrained(tiny)
    with pytest.raises(FrankenscopeError, match="architecture"):
        diff_pair(orgs["base"], tiny, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------
# merge
# ------------------------------------------------------------------------------------------
def _assert_same(folder: Path, expected: dict[str, torch.Tensor]):
    got = _tensors(folder)
    assert set(got) == set(expected)
    for name, t in expected.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


@pytest.mark.parametrize("plan", PAPER_PLANS)
def test_merge_of_a_model_with_itself_is_bit_identical(orgs, tmp_path, plan):
    out = merge({"IN": orgs["in"], "RL": orgs["in"]}, plan, tmp_path / "m", progress=False)
    _assert_same(out, _tensors(orgs["in"]))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt" and f.metadata()["frankenscope_merge"] == plan
    for fname in ("config.json", "generation_config.json", "tokenizer.json", "processor_config.json"):
        assert (out / fname).read_bytes() == (orgs["in"] / fname).read_bytes()


def _expected(orgs, plan: str, non_layer: str | None) -> dict[str, torch.Tensor]:
    donors = {"IN": _tensors(orgs["in"]), "RL": _tensors(orgs["rl"])}
    regions = dict(zip(("early", "mid", "late"), plan.split(":"), strict=True))
    owner = {layer: regions[r] for r, ls in partition(4, "thirds").items() for layer in ls}
    host = non_layer or regions["early"]
    out = {}
    for name in donors["IN"]:
        if name.startswith("model.layers."):
            out[name] = donors[owner[int(name.split(".")[2])]][name]
        else:
            out[name] = donors[host][name]
    return out


def test_all_hybrids_take_every_tensor_from_the_right_donor(orgs, tmp_path):
    paths = merge_all_hybrids({"IN": orgs["in"], "RL": orgs["rl"]}, tmp_path / "hyb", progress=False)
    assert [p.name for p in paths] == [plan_dirname(p) for p in PAPER_PLANS]
    for plan, path in zip(PAPER_PLANS, paths, strict=True):
        _assert_same(path, _expected(orgs, plan, None))
        meta = json.loads((path / "merge.json").read_text())
        assert meta["plan"] == plan and meta["non_layer_from"] == "early"
        assert meta["non_layer_donor"] == plan.split(":")[0]
        recipe = yaml.safe_load((path / "merge.yaml").read_text())
        assert recipe["merge_method"] == "passthrough"
        covered = []
        for sl in recipe["modules"]["text_decoder"]["slices"]:
            lo, hi = sl["sources"][0]["layer_range"]
            donor = "IN" if sl["sources"][0]["model"] == str(orgs["in"]) else "RL"
            for layer in range(lo, hi):
                covered.append(layer)
                assert meta["layer_donors"][str(layer)] == donor
        assert covered == list(range(4))
        host = str(orgs["in"] if plan.split(":")[0] == "IN" else orgs["rl"])  # the non-layer donor
        assert recipe["base_model"] == host
        assert recipe["modules"]["vision_tower"] == recipe["modules"]["multi_modal_projector"] == {
            "models": [{"model": host}]}


def test_non_layer_parts_from_a_named_donor(orgs, tmp_path):
    out = merge({"IN": orgs["in"], "RL": orgs["rl"]}, "IN:RL:RL", tmp_path / "m", non_layer_from="RL",
                progress=False)
    _assert_same(out, _expected(orgs, "IN:RL:RL", "RL"))
    assert json.loads((out / "merge.json").read_text())["non_layer_donor"] == "RL"


def test_merge_in_shards_and_merged_model_generates(orgs, tmp_path):
    from frankenscope.loading import load_model

    out = merge({"IN": orgs["in"], "RL": orgs["rl"]}, "IN:RL:RL", tmp_path / "m", shard_bytes=1 << 20,
                progress=False)
    assert (out / INDEX_FILE).is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    _assert_same(out, _expected(orgs, "IN:RL:RL", None))
    loaded = load_model(out)
    tok = loaded.processor.tokenizer
    ids = torch.tensor([tok("2 + 3 =")["input_ids"]])
    gen = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                do_sample=False)
    assert gen.shape == (1, ids.shape[1] + 4) or gen.shape[1] > ids.shape[1]
    state = loaded.model.state_dict()
    rl = CheckpointReader(orgs["rl"])
    assert torch.equal(state["model.language_model.layers.3.mlp.up_proj.weight"],
                       rl.get("model.layers.3.mlp.up_proj.weight"))


def _drop_last_layer(t):
    return {n: v for n, v in t.items() if not n.startswith("model.layers.3.")}


def _three_layers(cfg):
    cfg["text_config"]["num_hidden_layers"] = 3
    cfg["text_config"]["layer_types"] = cfg["text_config"]["layer_types"][:3]


def _rename(t):
    t["model.layers.0.mlp.up_proj2.weight"] = t.pop("model.layers.0.mlp.up_proj.weight")
    return t


def _reshape(t):
    t["model.layers.1.self_attn.o_proj.weight"] = torch.zeros(128, 64)
    return t


def _half(t):
    t["model.norm.weight"] = t["model.norm.weight"].to(torch.bfloat16)
    return t


@pytest.mark.parametrize("case,msg", [
    ("tiny", "architecture"), ("fewer_layers", "LLM decoder layers"), ("renamed", "different tensors"),
    ("reshaped", "shape"), ("dtype", "dtype"), ("config_lies", "config says"),
])
def test_mismatched_donors_leave_no_output(orgs, tmp_path, case, msg):
    src = orgs["rl"]
    if case == "tiny":
        other = tmp_path / "tiny"
        tiny_qwen2vl().save_pretrained(other)
    elif case == "fewer_layers":
        other = _clone(src, tmp_path / "o", _drop_last_layer, _three_layers)
    elif case == "config_lies":
        other = _clone(src, tmp_path / "o", _drop_last_layer)
    else:
        other = _clone(src, tmp_path / "o", {"renamed": _rename, "reshaped": _reshape, "dtype": _half}[case])
    out = tmp_path / "out" / "merged"
    with pytest.raises(FrankenscopeError, match=msg):
        merge({"IN": orgs["in"], "RL": other}, "IN:RL:RL", out, progress=False)
    with pytest.raises(FrankenscopeError, match=msg):
        merge_all_hybrids({"IN": orgs["in"], "RL": other}, tmp_path / "out" / "all", progress=False)
    assert not (tmp_path / "out").exists()


def test_merge_refuses_bad_plans_and_outputs(orgs, tmp_path):
    donors = {"IN": orgs["in"], "RL": orgs["rl"]}
    for plan, msg in (("IN:RL", "three donors"), ("IN:XX:RL", "unknown donor")):
        with pytest.raises(FrankenscopeError, match=msg):
            merge(donors, plan, tmp_path / "m", progress=False)
    with pytest.raises(FrankenscopeError, match="non-layer-from"):
        merge(donors, "IN:RL:RL", tmp_path / "m", non_layer_from="base", progress=False)
    with pytest.raises(FrankenscopeError, match="both"):
        merge(donors, "IN:RL:RL", tmp_path / "m", partition="early=0-1;mid=1-2;late=3", progress=False)
    with pytest.raises(FrankenscopeError, match="overlaps donor"):
        merge(donors, "IN:RL:RL", orgs["root"], progress=False)
    assert not (tmp_path / "m").exists()
    # lower-case plans are accepted; explicit partitions are honoured
    out = merge(donors, "in:in:rl", tmp_path / "m", partition="early=0;mid=1-2;late=3", progress=False)
    assert json.loads((out / "merge.json").read_text())["layer_donors"] == {"0": "IN", "1": "IN", "2": "IN", "3": "RL"}
    # a parsed Partition is taken as it is and recorded by its text
    from frankenscope.weights.partition import Partition

    out2 = merge(donors, "in:in:rl", tmp_path / "m2", partition=Partition.parse("early=0;mid=1-2;late=3"),
                 progress=False)
    a, b = (json.loads((o / "merge.json").read_text()) for o in (out, out2))
    assert (b["partition"], b["layer_donors"]) == ("early=0;mid=1-2;late=3", a["layer_donors"])


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
@pytest.fixture()
def app():
    a = typer.Typer()
    a.command("diff")(diff_cmd)
    a.command("merge")(merge_cmd)
    return a


def test_cli_diff_and_merge(orgs, tmp_path, app):
    runner = CliRunner()
    r = runner.invoke(app, ["diff", "--from", str(orgs["base"]), "--to", str(orgs["pert"]), "--out",
                            str(tmp_path / "d"), "--no-plots", "--no-progress", "--no-spectral"])
    assert r.exit_code == 0, r.output
    assert "late" in r.output and (tmp_path / "d" / "diff.json").is_file()
    r = runner.invoke(app, ["diff", "--base", str(orgs["base"]), "--from", str(orgs["in"]), "--out",
                            str(tmp_path / "bad")])
    assert r.exit_code == 2 and "either" in r.output
    r = runner.invoke(app, ["merge", "--in", str(orgs["in"]), "--rl", str(orgs["rl"]), "--plan", "IN:RL:RL",
                            "--out", str(tmp_path / "m"), "--no-progress"])
    assert r.exit_code == 0, r.output
    _assert_same(tmp_path / "m", _expected(orgs, "IN:RL:RL", None))
    r = runner.invoke(app, ["merge", "--in", str(orgs["in"]), "--rl", str(orgs["rl"]), "--all-hybrids",
                            "--non-layer-from", "IN", "--out", str(tmp_path / "all"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(map(plan_dirname, PAPER_PLANS))
    _assert_same(tmp_path / "all" / "RL_IN_IN", _expected(orgs, "RL:IN:IN", "IN"))
    r = runner.invoke(app, ["merge", "--in", str(orgs["in"]), "--rl", str(tmp_path / "nope"), "--plan",
                            "IN:RL:RL", "--out", str(tmp_path / "m2")])
    assert r.exit_code == 2 and "not found" in r.output and not (tmp_path / "m2").exists()
