import json

import pytest
import torch
from safetensors import safe_open

from frankenscope.adapters import COMPONENTS, get_adapter, supported_architectures
from frankenscope.errors import FrankenscopeError
from frankenscope.organism.model import save_folder
from frankenscope.organism.processor import build_processor
from frankenscope.testing.tiny import tiny_qwen2vl


def _structural_truth(model, adapter):
    """(component, layer) of every in-memory parameter name, derived from module ownership."""
    truth = {}
    owners = [("vision", i, b) for i, b in enumerate(adapter.vision_blocks(model))]
    owners += [("llm", i, b) for i, b in enumerate(adapter.decoder_layers(model))]
    owners += [("projector", None, adapter.projector(model)), ("final_norm", None, adapter.final_norm(model)),
               ("embed", None, adapter.embed_tokens(model))]
    ids = {id(p): (c, i) for c, i, mod in owners for p in mod.parameters()}
    for name, p in model.named_parameters(remove_duplicate=False):
        if name.startswith("lm_head."):
            truth[name] = ("lm_head", None)
        elif id(p) in ids:
            truth[name] = ids[id(p)]
        else:  # the rest of the vision tower (patch embedding)
            assert name.startswith("model.visual."), name
            truth[name] = ("vision", None)
    return truth


@pytest.fixture(params=["organism", "qwen2vl"])
def model_and_dir(request, micro, tmp_path):
    if request.param == "organism":
        model, proc = micro
    else:
        model, proc = tiny_qwen2vl(), build_processor()
    return model, save_folder(model, proc, tmp_path / request.param)


def test_every_parameter_maps_in_both_namings(model_and_dir):
    model, folder = model_and_dir
    adapter = get_adapter(model)
    truth = _structural_truth(model, adapter)
    assert len(truth) == len(list(model.named_parameters(remove_duplicate=False)))
    for name, expected in truth.items():
        loc = adapter.param_location(name)
        assert (loc.component, loc.layer) == expected, name
        assert loc.component in COMPONENTS
        assert adapter.canonical_name(name) == name
    # On-disk names (legacy hub layout written by save_pretrained) map to the same place.
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        disk = list(f.keys())
    assert any(k.startswith("model.layers.") for k in disk) and any(k.startswith("visual.") for k in disk)
    for key in disk:
        canon = adapter.canonical_name(key)
        assert canon in truth, (key, canon)
        loc = adapter.param_location(key)
        assert (loc.component, loc.layer) == truth[canon], key
    # Every component that the model has is seen at least once; layers cover 0..L-1.
    llm_layers = {adapter.param_location(k).layer for k in disk if adapter.param_location(k).component == "llm"}
    assert llm_layers == set(range(adapter.num_layers(model)))


def test_unified_index_axis(micro):
    model, _ = micro
    ad = get_adapter(model)
    v, n = ad.num_vision_blocks(model), ad.num_layers(model)
    idx = {ad.param_location(k).unified_index(v) for k, _ in model.named_parameters()}
    assert idx - {None} == set(range(v + 1 + n))
    assert ad.param_location("model.layers.0.mlp.up_proj.weight").unified_index(v) == v + 1
    assert ad.param_location("visual.merger.mlp.0.weight").unified_index(v) == v


def test_wrapped_export_names():
    ad = get_adapter("Qwen2_5_VLForConditionalGeneration")
    loc = ad.param_location("module.model.layers.3.self_attn.q_proj.weight")
    assert (loc.component, loc.layer) == ("llm", 3)
    assert ad.canonical_name("language_model.model.layers.3.mlp.up_proj.weight") == \
        "model.language_model.layers.3.mlp.up_proj.weight"


def test_unknown_parameter_name_is_named():
    ad = get_adapter("Qwen2VLForConditionalGeneration")
    with pytest.raises(FrankenscopeError, match="foo.bar.weight"):
        ad.param_location("foo.bar.weight")


def test_unknown_architecture_lists_supported():
    with pytest.raises(FrankenscopeError) as e:
        get_adapter("LlavaForConditionalGeneration")
    msg = str(e.value)
    assert "LlavaForConditionalGeneration" in msg
    for arch in supported_architectures():
        assert arch in msg


def test_unknown_architecture_from_folder(micro_dir, tmp_path):
    from frankenscope.loading import load_model

    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((micro_dir / "config.json").read_text())
    cfg["architectures"] = ["MysteryVLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FrankenscopeError, match="MysteryVLM"):
        load_model(bad)


def test_module_lookups(micro):
    model, _ = micro
    ad = get_adapter(model)
    proj = ad.attention_projections(model, 1)
    assert proj.k is model.model.language_model.layers[1].self_attn.k_proj
    assert ad.mlp(model, 0) is model.model.language_model.layers[0].mlp
    with pytest.raises(FrankenscopeError, match="layer 9"):
        ad.attention(model, 9)


def test_image_spans_several_images_and_rows():
    ad = get_adapter("Qwen2VLForConditionalGeneration")
    t = 5
    ids = torch.tensor([[1, t, t, 2, t, 3, 3], [t, t, t, 0, 0, 0, t]])
    assert ad.image_spans(ids, t) == [[(1, 3), (4, 5)], [(0, 3), (6, 7)]]
    assert ad.image_spans(torch.tensor([1, 2]), t) == [[]]
