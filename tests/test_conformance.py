"""The family conformance suite: every registered family with a tiny builder runs every analysis exactly.

One tiny random model per family (frankenscope.testing.families, float64, initializer_range 0.2 so that
swaps change answers), built once per module. Per family:

* every parameter maps to exactly one component/layer, in memory, on disk and in the hub spellings;
* fast swap sweep == naive oracle (float64 logits and every decoded token), cumulative and single;
* replacing the image positions' hidden states at layer l == cumulative K/V swap from l;
* a batch with one layer skip per row == each skip run alone;
* attention mass == a hand computation (q and k zeroed: uniform attention over each row's allowed keys);
* diff(X, X) = 0; merge(IN, IN) == IN; a hybrid takes each tensor from the right donor;
* freeze plans name exactly the region's parameters (in memory and on disk);
* batched evaluation == unbatched;
* bad inputs (mismatched image-token layouts, unsupported image modes) fail with the pair and family named.

A family is registered only when it passes this suite (test_every_registered_architecture_is_covered).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from frankenscope.adapters import VLMAdapter, get_adapter, supported_architectures
from frankenscope.data.schema import Item, ProbePair
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.runner import HFGenerator
from frankenscope.probes.attention import response_attention
from frankenscope.probes.hooks import (
    capture_projections,
    count_hooks,
    record_layer_inputs,
    replace_hidden_states,
    skip_layers,
    swap_projections,
)
from frankenscope.probes.skip import row_gates, skip_generate
from frankenscope.probes.swap import encode_pair, sweep_pair
from frankenscope.testing.families import (
    FAMILIES,
    build_tiny,
    component_of,
    get_family,
    register_auto_processors,
)
from frankenscope.weights.diff import diff_pair
from frankenscope.weights.freeze import freeze_plan
from frankenscope.weights.merge import merge
from frankenscope.weights.partition import partition
from frankenscope.weights.reader import CheckpointReader

#: Families under test: those with a tiny builder whose architecture has a registered adapter.
CONFORMING = [name for name, fam in FAMILIES.items() if fam.facts.architecture in supported_architectures()]
#: Architectures served by a family's spec without a builder of their own, and the family whose tiny model
#: stands for them (same module layout; test_idefics3_shares_the_smolvlm_layout builds one).
SERVED_BY = {"Idefics3ForConditionalGeneration": "smolvlm"}
#: Seeds per family where the default (0) gives a random model whose swaps change no answer.
SEEDS = {"gemma3": 1}
#: Adapter component -> the family registry's component (FamilyFacts prefixes, an independent oracle).
REGISTRY_COMPONENT = {"vision": "vision", "projector": "projector", "llm": "llm_layers", "embed": "llm_other",
                      "final_norm": "llm_other", "lm_head": "llm_other"}
#: Hub spellings of published checkpoints (the layout transformers' checkpoint conversion reads) that must
#: map to the in-memory name on the right: (family, hub name, in-memory name, component, layer).
HUB_NAMES = [
    ("llava-onevision", "vision_tower.vision_model.encoder.layers.3.self_attn.q_proj.weight",
     "model.vision_tower.encoder.layers.3.self_attn.q_proj.weight", "vision", 3),
    ("llava-onevision", "image_newline", "model.image_newline", "projector", None),
    ("llava-onevision", "language_model.lm_head.weight", "lm_head.weight", "lm_head", None),
    ("gemma3", "vision_tower.vision_model.post_layernorm.weight", "model.vision_tower.post_layernorm.weight",
     "vision", None),
    ("gemma3", "multi_modal_projector.mm_input_projection_weight",
     "model.multi_modal_projector.mm_input_projection_weight", "projector", None),
    ("gemma3", "language_model.model.layers.7.mlp.down_proj.weight",
     "model.language_model.layers.7.mlp.down_proj.weight", "llm", 7),
    ("internvl", "vision_tower.encoder.layer.2.attention.q_proj.weight",
     "model.vision_tower.encoder.layer.2.attention.q_proj.weight", "vision", 2),
    ("internvl", "language_model.model.embed_tokens.weight", "model.language_model.embed_tokens.weight", "embed",
     None),
    ("smolvlm", "model.connector.modality_projection.proj.weight", "model.connector.modality_projection.proj.weight",
     "projector", None),
    ("smolvlm", "model.text_model.layers.5.self_attn.o_proj.weight", "model.text_model.layers.5.self_attn.o_proj.weight",
     "llm", 5),
    ("qwen3-vl", "model.visual.deepstack_merger_list.1.linear_fc2.weight",
     "model.visual.deepstack_merger_list.1.linear_fc2.weight", "projector", None),
    ("qwen3-vl", "module.model.language_model.layers.2.mlp.up_proj.weight",
     "model.language_model.layers.2.mlp.up_proj.weight", "llm", 2),
    ("qwen2.5-vl", "visual.merger.mlp.0.weight", "model.visual.merger.mlp.0.weight", "projector", None),
    ("qwen2-vl", "model.layers.1.self_attn.k_proj.bias", "model.language_model.layers.1.self_attn.k_proj.bias",
     "llm", 1),
]
ATOL = 1e-10  # float64: both engines agree to rounding (~1e-15); a real difference is far larger


@dataclass
class Fam:
    name: str
    model: Any  # float64, sdpa, eval mode; do not mutate
    processor: Any
    adapter: VLMAdapter
    folder: Path  # the float32 checkpoint as save_pretrained writes it
    other: Path  # a second checkpoint of the same family (another seed): the "RL" donor
    images: tuple[Image.Image, Image.Image]  # target and source, same size, different content
    mismatched: Image.Image | None  # an image whose token layout differs from the target's (None: impossible)


def _image(size: tuple[int, int], seed: int) -> Image.Image:
    """Blocks of saturated colours (different per seed): structured content survives pooling and tiling."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((-(-h // 4), -(-w // 4), 1), dtype=np.uint8))[:h, :w])


def _save(model: Any, processor: Any, path: Path) -> Path:
    register_auto_processors()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=CONFORMING)
def fam(request, tmp_path_factory) -> Fam:
    name = request.param
    seed = SEEDS.get(name, 0)
    model, processor = build_tiny(name, seed=seed, initializer_range=0.2)
    root = tmp_path_factory.mktemp(name.replace(".", "_"))
    folder = _save(model, processor, root / "in")
    other_model, _ = build_tiny(name, seed=seed + 10, initializer_range=0.2)
    other = _save(other_model, processor, root / "rl")
    sizes = get_family(name).image_sizes
    mismatched = _image(sizes[1], 3)
    enc = [processor(text=[_prompt(processor, get_adapter(model))], images=[im], return_tensors="pt")["input_ids"]
           for im in (_image(sizes[0], 1), mismatched)]
    if torch.equal(enc[0], enc[1]):
        mismatched = None  # a fixed number of image tokens whatever the size (Gemma 3)
    return Fam(name, model.double().eval(), processor, get_adapter(model), folder, other,
               (_image(sizes[0], 1), _image(sizes[0], 2)), mismatched)


def _prompt(processor: Any, adapter: VLMAdapter, text: str = "How many shapes?") -> str:
    return adapter.build_prompt(processor, text, 1)


def _pair(pid: str = "p0") -> ProbePair:
    return ProbePair(pid, "counting", "t.png", "s.png", "How many shapes?", "1", "2", "number")


def _run(model: Any, ep: Any) -> torch.Tensor:
    kwargs = {k: v for k, v in ep.target.items() if k != "attention_mask"}
    with torch.inference_mode():
        return model(**kwargs, position_ids=ep.positions).logits


def test_every_registered_architecture_is_covered():
    """A family is registered only with a tiny builder in this suite (or a builder of a same-layout family)."""
    built = {FAMILIES[n].facts.architecture for n in CONFORMING}
    assert set(supported_architectures()) == built | set(SERVED_BY)
    assert {"qwen2-vl", "qwen2.5-vl", "qwen3-vl", "internvl", "llava-onevision", "gemma3", "smolvlm"} <= set(CONFORMING)


# --------------------------------------------------------------------------- parameter names


def _check_names(fam: Fam, names: list[str], *, on_disk: bool) -> dict[tuple[str, int | None], int]:
    facts = get_family(fam.name).facts
    seen: dict[tuple[str, int | None], int] = {}
    for name in names:
        loc = fam.adapter.param_location(name)  # raises unless a rule matches
        reg, reg_layer = component_of(facts, name, on_disk=on_disk)  # the registry's independent mapping
        assert REGISTRY_COMPONENT[loc.component] == reg, name
        if loc.component == "llm":
            assert loc.layer == reg_layer, name
        seen[(loc.component, loc.layer)] = seen.get((loc.component, loc.layer), 0) + 1
    return seen


def test_every_parameter_maps_to_one_component_and_layer(fam: Fam):
    model, ad = fam.model, fam.adapter
    ad.check_model(model)
    memory = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    seen = _check_names(fam, memory, on_disk=False)
    assert all(ad.canonical_name(n) == n for n in memory)
    # layers by module ownership: the spec's module paths and its name rules agree
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    for comp, blocks in (("llm", ad.decoder_layers(model)), ("vision", ad.vision_blocks(model))):
        for i, block in enumerate(blocks):
            locs = {ad.param_location(names[id(p)]) for p in block.parameters()}
            assert {(x.component, x.layer) for x in locs} == {(comp, i)}
    for proj in ad.projectors(model):
        assert {ad.param_location(names[id(p)]).component for p in proj.parameters()} == {"projector"}
    assert {i for c, i in seen if c == "llm"} == set(range(ad.num_layers(model)))
    assert {i for c, i in seen if c == "vision"} - {None} == set(range(ad.num_vision_blocks(model)))
    assert {c for c, _ in seen} == {"vision", "projector", "embed", "llm", "final_norm", "lm_head"}
    # on disk (save_pretrained's layout): the same places, and every name has its in-memory counterpart
    with safe_open(str(fam.folder / "model.safetensors"), "pt") as f:
        disk = list(f.keys())
    _check_names(fam, disk, on_disk=True)
    for key in disk:
        canon = ad.canonical_name(key)
        assert canon in memory, (key, canon)
        assert ad.param_location(key) == ad.param_location(canon)
    with pytest.raises(FrankenscopeError, match=fam.adapter.spec.name):
        ad.param_location("some.unknown.weight")


@pytest.mark.parametrize("family,hub,memory,component,layer", HUB_NAMES, ids=[f"{f}-{h}" for f, h, *_ in HUB_NAMES])
def test_hub_spellings_map_to_memory_names(family, hub, memory, component, layer):
    ad = get_adapter(get_family(family).facts.architecture)
    assert ad.canonical_name(hub) == memory
    loc = ad.param_location(hub)
    assert (loc.component, loc.layer) == (component, layer)


def test_idefics3_shares_the_smolvlm_layout():
    """Idefics3 (served by the SmolVLM spec) has the same modules and names: a model built from the tiny
    SmolVLM config resolves every spec path and maps every parameter."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    smol, _ = build_tiny("smolvlm")
    cfg = Idefics3Config(**{k: v for k, v in smol.config.to_dict().items() if k not in ("model_type", "architectures")})
    model = Idefics3ForConditionalGeneration(cfg)
    model.config.architectures = ["Idefics3ForConditionalGeneration"]
    ad = get_adapter(model)
    assert ad.spec.name == "smolvlm"
    ad.check_model(model)
    locs = {(ad.param_location(n).component) for n, _ in model.named_parameters()}
    assert locs == {"vision", "projector", "embed", "llm", "final_norm", "lm_head"}


# --------------------------------------------------------------------------- swap


@pytest.fixture(scope="module")
def pair(fam: Fam) -> Any:
    return encode_pair(fam.model, fam.processor, fam.adapter, _pair(), *fam.images)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["cumulative", "single"])
def test_fast_sweep_equals_naive(fam: Fam, pair, mode, attn):
    model, proc, ad = fam.model, fam.processor, fam.adapter
    model.set_attn_implementation(attn)
    try:
        # eager attention takes its softmax in float32 (~1e-7 on these logits) in some families
        _check_fast_equals_naive(model, proc, ad, pair, mode, fam.name, ATOL if attn == "sdpa" else 1e-5)
    finally:
        model.set_attn_implementation("sdpa")


def _check_fast_equals_naive(model: Any, proc: Any, ad: VLMAdapter, pair: Any, mode: str, name: str,
                             atol: float) -> None:
    _run(model, pair)  # some families register hooks of their own on their first forward pass
    hooks_before = count_hooks(model)
    layers = list(range(ad.num_layers(model)))
    fast = sweep_pair(model, proc, ad, pair, layers, mode=mode, engine="fast", max_new_tokens=5, keep_logits=True)
    naive = sweep_pair(model, proc, ad, pair, layers, mode=mode, engine="naive", max_new_tokens=5, keep_logits=True)
    assert fast.tokens == naive.tokens
    torch.testing.assert_close(fast.first_logits, naive.first_logits, rtol=0, atol=atol)
    # not vacuous: the swap moves the logits, and some variant answers differently from the unswapped run
    assert float((fast.first_logits[:-1] - fast.first_logits[-1]).abs().max()) > 1e-3
    assert any(t != fast.tokens[-1] for t in fast.tokens[:-1]), name
    # the unswapped row is a plain forward pass
    torch.testing.assert_close(fast.first_logits[-1], _run(model, pair)[0, -1], rtol=0, atol=atol)
    assert count_hooks(model) == hooks_before


def test_hidden_state_replacement_equals_cumulative_kv_swap(fam: Fam, pair):
    """Replacing the swap span's hidden states at the input of layer l == their K/V swapped in every layer >= l,
    for every l after the last layer where the model adds vision features at image positions (Qwen3-VL's
    deepstack: there the replaced states get the target's features added, the swapped K/V the source's)."""
    model, ad = fam.model, fam.adapter
    n_layers = ad.num_layers(model)
    i0, i1 = pair.span
    src = {k: v for k, v in pair.source.items() if k != "attention_mask"}
    with capture_projections(model, ad, range(n_layers), span=pair.span) as kv, \
            record_layer_inputs(model, ad, range(n_layers), positions=slice(i0, i1)) as rec, torch.inference_mode():
        model(**src, position_ids=pair.positions)
    clean = _run(model, pair)
    injected = ad.image_injection_layers(model)
    for layer in range(n_layers):
        with replace_hidden_states(model, ad, layer, pair.span, rec.hidden[layer], pair.prompt_len):
            by_hidden = _run(model, pair)
        with swap_projections(model, ad, kv, pair.span, range(layer, n_layers), pair.prompt_len):
            by_kv = _run(model, pair)
        assert not torch.allclose(by_kv[:, i1:], clean[:, i1:], atol=1e-6)
        if any(j >= layer for j in injected):
            assert not torch.allclose(by_hidden[:, i1:], by_kv[:, i1:], atol=1e-6)
        else:
            torch.testing.assert_close(by_hidden[:, i1:], by_kv[:, i1:], rtol=0, atol=ATOL)


def test_fast_engine_fallback_is_announced(fam: Fam, pair):
    """A spec that marks the fast engine as not exact makes the probes run the naive engine and say why."""
    spec = dataclasses.replace(fam.adapter.spec, fast_sweep=False, fast_sweep_blocker="recurrent state")
    ad = type(fam.adapter)(spec)
    with pytest.warns(UserWarning, match=rf"{spec.name}: the fast swap engine is not exact.*recurrent state"):
        out = sweep_pair(fam.model, fam.processor, ad, pair, [0], engine="fast", max_new_tokens=2, keep_logits=True)
    naive = sweep_pair(fam.model, fam.processor, fam.adapter, pair, [0], engine="naive", max_new_tokens=2,
                       keep_logits=True)
    assert torch.equal(out.first_logits, naive.first_logits)
    with pytest.raises(FrankenscopeError, match="fast_sweep_blocker"):
        dataclasses.replace(fam.adapter.spec, fast_sweep=False)


# --------------------------------------------------------------------------- skip and attention


def test_batched_skip_equals_single_skip(fam: Fam):
    model, proc, ad = fam.model, fam.processor, fam.adapter
    layers = list(range(ad.num_layers(model)))
    img = fam.images[0]
    prompt = _prompt(proc, ad)
    batch = proc(text=[prompt] * (1 + len(layers)), images=ad.processor_images([img] * (1 + len(layers))),
                 return_tensors="pt", padding=True)
    one = proc(text=[prompt], images=[img], return_tensors="pt")
    with torch.inference_mode():
        model(**one)  # some families register hooks of their own on their first forward pass
    hooks_before = count_hooks(model)
    with torch.inference_mode():
        with skip_layers(model, ad, row_gates(1, layers)):
            batched = model(**batch).logits
        torch.testing.assert_close(batched[0], model(**one).logits[0], rtol=0, atol=ATOL)
        for i, layer in enumerate(layers):
            with skip_layers(model, ad, [layer]):
                single = model(**one).logits[0]
            torch.testing.assert_close(batched[1 + i], single, rtol=0, atol=ATOL)
            assert not torch.allclose(single, batched[0])
    item = Item(id="s0", task="count", prompt="How many shapes?", answer="3", answer_type="number")
    texts = skip_generate(model, proc, ad, [item], layers, images=[img], max_new_tokens=3)[0]
    for i, layer in enumerate(layers):
        with torch.inference_mode(), skip_layers(model, ad, [layer]):
            ids = model.generate(**one, max_new_tokens=3, do_sample=False)
        assert texts[1 + i] == proc.tokenizer.decode(ids[0, one["input_ids"].shape[1]:], skip_special_tokens=True)
    assert count_hooks(model) == hooks_before


def _allowed_keys(text_cfg: Any, layer: int, p: int) -> range:
    """Keys a query at position p attends to in a text position's causal (or sliding-window) row."""
    types = getattr(text_cfg, "layer_types", None)
    window = getattr(text_cfg, "sliding_window", None)
    if types is not None and types[layer] == "sliding_attention" and window:
        return range(max(0, p - window + 1), p + 1)
    return range(p + 1)


def test_attention_mass_matches_hand_computation(fam: Fam):
    """With every q and k projection zeroed, each attention row is uniform over its allowed keys, so response
    position p puts |V ∩ keys(p)| / |keys(p)| on the image; the mass is the mean over the response."""
    model = copy.deepcopy(fam.model)
    model.set_attn_implementation("eager")
    proc, ad = fam.processor, fam.adapter
    with torch.no_grad():
        for j in range(ad.num_layers(model)):
            proj = ad.attention_projections(model, j)
            for lin in (proj.q, proj.k):
                lin.weight.zero_()
                if lin.bias is not None:
                    lin.bias.zero_()
    response = proc.tokenizer.encode("3 and 4", add_special_tokens=False)
    layers = list(range(ad.num_layers(model)))
    mass, per_token, n_img = response_attention(model, proc, ad, "How many?", fam.images[0], response, layers)
    ids = proc(text=[_prompt(proc, ad, "How many?")], images=[fam.images[0]], return_tensors="pt")["input_ids"]
    image_pos = set(torch.nonzero(ad.image_token_mask(model, ids)[0]).flatten().tolist())
    assert n_img == len(image_pos) > 0
    n_prompt, text_cfg = ids.shape[1], model.config.get_text_config()
    for j in layers:
        rows = [_allowed_keys(text_cfg, j, p) for p in range(n_prompt, n_prompt + len(response))]
        expected = sum(len(image_pos.intersection(r)) / len(r) for r in rows) / len(rows)
        assert mass[j] == pytest.approx(expected, rel=1e-6, abs=1e-9), j  # eager softmax runs in float32
        assert per_token[j] == pytest.approx(expected / n_img, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------- weights


def test_diff_of_a_checkpoint_with_itself_is_zero(fam: Fam, tmp_path):
    doc = diff_pair(fam.folder, fam.folder, tmp_path / "d", progress=False, plots=False)
    with safe_open(str(fam.folder / "model.safetensors"), "pt") as f:
        n_tensors = len(list(f.keys()))
    assert len(doc["tensors"]) == n_tensors
    assert all(t["stats"]["delta"]["fro"] == 0.0 and t["stats"]["delta"]["max_abs"] == 0.0 for t in doc["tensors"])
    rd = CheckpointReader(fam.folder)
    assert rd.n_layers == fam.adapter.num_layers(fam.model)
    assert {r["unified_index"] for r in doc["layers"]} == set(range(rd.n_vision_blocks + 1 + rd.n_layers))
    other = diff_pair(fam.folder, fam.other, tmp_path / "o", progress=False, plots=False)
    assert any(t["stats"]["delta"]["fro"] > 0 for t in other["tensors"] if t["selected"])


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    rd = CheckpointReader(folder)
    return {e.disk_name: rd.get(e.disk_name) for e in rd.entries()}


def test_merge_with_itself_is_identical_and_hybrids_take_the_right_donor(fam: Fam, tmp_path):
    same = merge({"IN": fam.folder, "RL": fam.folder}, "IN:RL:IN", tmp_path / "same", progress=False)
    ins, rls = _tensors(fam.folder), _tensors(fam.other)
    got = _tensors(same)
    assert set(got) == set(ins) and all(torch.equal(got[k], ins[k]) for k in ins)
    hybrid = _tensors(merge({"IN": fam.folder, "RL": fam.other}, "IN:RL:IN", tmp_path / "h", progress=False))
    owner = {layer: region for region, ls in partition(fam.adapter.num_layers(fam.model), "thirds").items()
             for layer in ls}
    assert set(hybrid) == set(ins)
    for name, t in hybrid.items():
        loc = fam.adapter.param_location(name)
        donor = rls if loc.component == "llm" and owner[loc.layer] == "mid" else ins
        assert torch.equal(t, donor[name]), name
        if not torch.equal(ins[name], rls[name]):
            assert not torch.equal(t, (ins if donor is rls else rls)[name])


def test_freeze_plan_names_exactly_the_region(fam: Fam):
    model, ad = fam.model, fam.adapter
    plan = freeze_plan(ad, model, "late")
    late = partition(ad.num_layers(model), "thirds")["late"]
    assert plan["layers"] == late
    expected = [n for n, _ in model.named_parameters()
                if ad.param_location(n).component == "llm" and ad.param_location(n).layer in late]
    assert plan["parameter_names"] == expected and expected
    rx = [re.compile(p) for p in plan["patterns"]]
    with safe_open(str(fam.folder / "model.safetensors"), "pt") as f:
        disk = [k for k in f.keys() if any(r.match(k) for r in rx)]  # noqa: SIM118 - safe_open has no __iter__
    assert sorted(ad.canonical_name(k) for k in disk) == sorted(expected)


# --------------------------------------------------------------------------- evaluation and bad inputs


def test_batched_evaluation_equals_unbatched(fam: Fam, tmp_path):
    sizes = get_family(fam.name).image_sizes
    items = []
    for k, size in enumerate([sizes[0], sizes[1], sizes[0]]):
        path = tmp_path / f"img{k}.png"
        _image(size, 20 + k).save(path)
        items.append(Item(id=f"i{k}", task="count", prompt=["How many?", "What colour is it?", "Describe it."][k],
                          answer="3", answer_type="number", image=str(path)))
    items.insert(1, Item(id="t0", task="arith", prompt="2+3=?", answer="5", answer_type="number", category="text"))
    single = HFGenerator(fam.model, fam.processor, fam.adapter, batch_size=1, max_new_tokens=4, progress=False)(items)
    batched = HFGenerator(fam.model, fam.processor, fam.adapter, batch_size=4, max_new_tokens=4, progress=False)(items)
    assert batched == single
    assert len(set(single)) > 1  # not vacuous: different items, different answers


def test_bad_inputs_name_the_pair_and_family(fam: Fam):
    model, proc, ad = fam.model, fam.processor, fam.adapter
    target, source = fam.images
    if fam.mismatched is not None:
        with pytest.raises(FrankenscopeError, match=rf"'bad'.*{re.escape(ad.spec.name)} visual-token swap needs "
                                                    r"the same token layout.*--resize-source"):
            encode_pair(model, proc, ad, _pair("bad"), target, fam.mismatched)
        ep = encode_pair(model, proc, ad, _pair("bad"), target, fam.mismatched, resize_source=True)
        assert ep.span[1] > ep.span[0]
    wide = source.convert("I;16")
    with pytest.raises(FrankenscopeError, match=r"'bad' \(source image\): image mode 'I;16' is not supported"):
        encode_pair(model, proc, ad, _pair("bad"), target, wide)
    encode_pair(model, proc, ad, _pair("ok"), target, source.convert("RGBA"))  # an RGB rendering exists: fine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FrankenscopeError, match=r"swap layers \[99\] are not in 0\.\."):
            sweep_pair(model, proc, ad, encode_pair(model, proc, ad, _pair(), target, source), [99])
