import dataclasses
import json
import re

import pytest
import torch

from frankenscope.adapters import (
    DecoderLayerSpec,
    NameRule,
    VLMAdapter,
    get_adapter,
    get_module,
    supported_architectures,
)
from frankenscope.adapters.qwen2vl import QWEN2_VL
from frankenscope.errors import FrankenscopeError
from frankenscope.organism.model import save_folder
from frankenscope.organism.processor import build_processor
from frankenscope.testing.tiny import tiny_qwen2vl
from frankenscope.weights.freeze import apply_freeze, freeze_plan


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


# -- the declarative spec -------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_families():
    """{family name: tiny model} for the two families the Qwen2-VL spec serves."""
    from frankenscope.testing.families import build_tiny

    return {name: build_tiny(name)[0] for name in ("qwen2-vl", "qwen2.5-vl")}


@pytest.mark.parametrize("which", ["organism", "tiny_qwen2vl"])
def test_every_spec_module_path_resolves(which, micro):
    model = micro[0] if which == "organism" else tiny_qwen2vl()
    ad = get_adapter(model)
    ad.check_model(model)
    paths = ad.spec.module_paths()
    assert set(paths) >= {"decoder_layers", "vision_blocks", "projector", "embed_tokens", "final_norm", "lm_head",
                          "attention", "q_proj", "k_proj", "v_proj", "o_proj", "mlp", "mlp_out"}
    for path in paths.values():
        assert isinstance(get_module(model, path), torch.nn.Module), path
    assert ad.decoder_layers(model) is get_module(model, paths["decoder_layers"])
    assert ad.projector(model) is model.model.visual.merger
    assert ad.lm_head(model) is model.lm_head and ad.final_norm(model) is model.model.language_model.norm
    assert ad.mlp_output(model, 1) is model.model.language_model.layers[1].mlp.down_proj
    assert ad.num_vision_blocks(model) == len(model.model.visual.blocks)
    tok = model.config
    assert ad.image_token_id(model) == tok.image_token_id
    assert ad.image_marker_ids(model) == (tok.vision_start_token_id, tok.vision_end_token_id)


def test_spec_agrees_with_the_family_registry(qwen_families):
    """The facts that tests/test_families.py checks on the tiny models are the spec's paths."""
    from frankenscope.testing.families import get_family

    for name, model in qwen_families.items():
        facts, ad = get_family(name).facts, get_adapter(model)
        assert facts.architecture in ad.architectures
        assert (ad.spec.decoder_layers, ad.spec.embed_tokens, ad.spec.final_norm, ad.spec.lm_head) == \
            (facts.llm_layers, facts.embed_tokens, facts.final_norm, facts.lm_head)
        assert ad.spec.projector == facts.projector[0] and ad.spec.vision_blocks.startswith(facts.vision_tower + ".")
        assert ad.spec.image_token_id_field == facts.image_token_id_field
        ad.check_model(model)


def test_bad_module_path_is_named(micro):
    model, _ = micro
    with pytest.raises(FrankenscopeError, match=r"model\.language_model\.blocks"):
        get_module(model, "model.language_model.blocks")
    spec = dataclasses.replace(QWEN2_VL, decoder_layers="model.text_model.layers",
                               layer=DecoderLayerSpec(mlp_out="fc2"))
    ad = VLMAdapter(spec)
    with pytest.raises(FrankenscopeError, match=r"model\.text_model\.layers"):
        ad.check_model(model)
    with pytest.raises(FrankenscopeError, match=r"model\.text_model\.layers"):
        ad.num_layers(model)
    good = VLMAdapter(dataclasses.replace(QWEN2_VL, layer=DecoderLayerSpec(mlp_out="fc2")))
    with pytest.raises(FrankenscopeError, match=r"model\.language_model\.layers\.0\.mlp\.fc2"):
        good.check_model(model)
    with pytest.raises(FrankenscopeError, match=r"model\.language_model\.layers\.1\.mlp\.fc2"):
        good.mlp_output(model, 1)


def test_spec_validation():
    with pytest.raises(FrankenscopeError, match="component"):
        NameRule(component="decoder", root="model.", spellings=r"model\.", tail="layers.{layer}.")
    with pytest.raises(FrankenscopeError, match="do not match the root"):
        NameRule(component="llm", root="model.language_model.", spellings=r"model\.", tail="layers.{layer}.")
    no_layers = tuple(r for r in QWEN2_VL.name_rules if r.component != "llm")
    with pytest.raises(FrankenscopeError, match="decoder layers"):
        dataclasses.replace(QWEN2_VL, name_rules=no_layers)
    with pytest.raises(FrankenscopeError, match="image_layout_keys"):
        dataclasses.replace(QWEN2_VL, image_layout_keys=("image_sizes",))
    with pytest.raises(FrankenscopeError, match="input_ids"):
        dataclasses.replace(QWEN2_VL, sequence_keys=("mm_token_type_ids",))


def test_name_rule_patterns():
    rule = next(r for r in QWEN2_VL.name_rules if r.component == "llm")
    rx = re.compile(rule.pattern(2))
    for name in ("model.language_model.layers.2.mlp.up_proj.weight", "model.layers.2.self_attn.q_proj.bias",
                 "module.model.layers.2.input_layernorm.weight"):
        assert rx.match(name), name
    for name in ("model.language_model.layers.21.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight",
                 "model.visual.blocks.2.mlp.fc1.weight"):
        assert not rx.match(name), name
    with pytest.raises(FrankenscopeError, match="no layer index"):
        next(r for r in QWEN2_VL.name_rules if r.component == "projector").pattern(0)


def _old_matrix_kind(name: str) -> str:
    """The classification the diff used before the adapters declared it (name substrings)."""
    n = name.lower()
    if any(k in n for k in ("q_proj", "k_proj", "v_proj", "o_proj", "qkv", "attn")):
        return "attention"
    if any(k in n for k in ("gate_proj", "up_proj", "down_proj", "fc1", "fc2", "mlp")):
        return "mlp"
    return "other"


def test_matrix_kind_unchanged_on_supported_families(micro, qwen_families):
    models = {"organism": micro[0], **qwen_families}
    for label, model in models.items():
        ad = get_adapter(model)
        names = [n for n, _ in model.named_parameters()]
        kinds = {n: ad.matrix_kind(n) for n in names}
        assert kinds == {n: _old_matrix_kind(n) for n in names}, label
        assert {"attention", "mlp", "other"} == set(kinds.values()), label
    ad = get_adapter("Qwen2VLForConditionalGeneration")
    assert ad.matrix_kind("model.layers.0.self_attn.o_proj.weight") == "attention"  # on-disk spelling too
    assert ad.matrix_kind("visual.merger.mlp.0.weight") == "mlp"
    assert ad.matrix_kind("model.language_model.layers.0.post_attention_layernorm.weight") == "other"


def test_sequence_keys_truncate_and_extend():
    ad = get_adapter("Qwen2VLForConditionalGeneration")
    enc = {"input_ids": torch.tensor([[1, 5, 5, 2]]), "mm_token_type_ids": torch.tensor([[0, 1, 1, 0]]),
           "image_grid_thw": torch.tensor([[1, 2, 4]]), "pixel_values": torch.ones(8, 3)}
    cut = ad.truncate_inputs(enc, 2)
    assert cut["input_ids"].tolist() == [[1, 5]] and cut["mm_token_type_ids"].tolist() == [[0, 1]]
    assert cut["image_grid_thw"] is enc["image_grid_thw"] and cut["pixel_values"] is enc["pixel_values"]
    full = ad.append_text_tokens(enc, torch.tensor([[7, 8]]))
    assert full["input_ids"].tolist() == [[1, 5, 5, 2, 7, 8]]
    assert full["mm_token_type_ids"].tolist() == [[0, 1, 1, 0, 0, 0]]
    assert enc["input_ids"].shape[1] == 4  # the input is left as it was
    other = dict(enc, image_grid_thw=torch.tensor([[1, 4, 2]]))
    assert ad.same_image_layout(enc, dict(enc)) and not ad.same_image_layout(enc, other)
    assert ad.same_image_layout(enc, {"input_ids": enc["input_ids"]})  # no grid: nothing to compare


# -- freezing asks the adapter --------------------------------------------------------------


def test_freeze_plan_that_matches_nothing_raises(micro):
    model, _ = micro
    rules = tuple(dataclasses.replace(r, tail="blocks.{layer}.") if r.component == "llm" else r
                  for r in QWEN2_VL.name_rules)
    misfit = VLMAdapter(dataclasses.replace(QWEN2_VL, name_rules=rules))
    with pytest.raises(FrankenscopeError, match="does not match any known"):
        freeze_plan(misfit, model, "late")

    class StalePatterns(VLMAdapter):  # patterns that miss the in-memory naming
        def layer_patterns(self, layers, component="llm"):
            return [rf"^model\.layers\.{i}\." for i in layers]

    with pytest.raises(FrankenscopeError, match="0 parameters match the patterns, 24 belong to those layers"):
        freeze_plan(StalePatterns(QWEN2_VL), model, "late")
    with pytest.raises(FrankenscopeError, match="match no parameter"):
        apply_freeze(model, [r"^model\.language_model\.blocks\.3\."])
    assert all(p.requires_grad for p in model.parameters())
