"""Tiny checkpoints of every registered family (frankenscope.testing.families): they load offline with the
Auto classes, are deterministic per seed, generate, and every declared fact (module paths, parameter
prefixes in memory and on disk, image-span layout) holds on them."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor
from typer.testing import CliRunner

from frankenscope.cli import app
from frankenscope.errors import FrankenscopeError
from frankenscope.testing.families import (
    FAMILIES,
    build_tiny,
    component_of,
    family_names,
    get_family,
    get_module,
    image_span_positions,
    register_auto_processors,
    save_tiny,
)

#: Per family and test image size (width, height): (image tokens, span length) the processor must produce.
#: Qwen: one token per 2x2 merge of patches, span + vision start/end; InternVL: 4 tokens per 56 px tile plus
#: a thumbnail tile when tiled, span + <img>/</img>; LLaVA-OneVision: base + unpadded grid + one newline
#: feature per grid row, all <image> tokens (no markers); Gemma3: always 4 soft tokens + boi/eoi; SmolVLM:
#: 4 tokens per 32 px tile (tiles + global), each tile behind <fake_token_around_image> and a row/col or
#: global marker, a newline after each tile row and one more before the global tile, one closing fake token.
EXPECTED: dict[str, tuple[tuple[int, int], ...]] = {
    "qwen2-vl": ((4, 6), (6, 8)),
    "qwen2.5-vl": ((4, 6), (6, 8)),
    "qwen3-vl": ((4, 6), (6, 8)),
    "internvl": ((4, 6), (12, 14)),
    "llava-onevision": ((10, 10), (14, 14)),
    "gemma3": ((4, 6), (4, 6)),
    "smolvlm": ((20, 34), (12, 21)),
    "qwen3.5": ((4, 6), (6, 8)),
}

PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]


@dataclass
class Tiny:
    name: str
    path: Path
    model: Any
    processor: Any


@pytest.fixture(scope="module", params=family_names())
def tiny(request, tmp_path_factory) -> Tiny:
    name = request.param
    path = save_tiny(name, tmp_path_factory.mktemp(name.replace(".", "_")) / "ckpt", seed=0, initializer_range=0.2)
    register_auto_processors()
    model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    processor = AutoProcessor.from_pretrained(str(path))
    return Tiny(name, path, model, processor)


def _encode(t: Tiny, size: tuple[int, int], colour=(200, 40, 40)) -> Any:
    text = t.processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    return t.processor(text=[text], images=[Image.new("RGB", size, colour)], return_tensors="pt")


def test_every_expected_family_is_registered():
    assert set(EXPECTED) == set(FAMILIES)


def test_loads_with_auto_classes_and_family_classes(tiny: Tiny):
    facts = get_family(tiny.name).facts
    assert type(tiny.model).__name__ == facts.architecture
    assert tiny.model.config.architectures == [facts.architecture]
    assert type(tiny.processor).__name__ == facts.processor_class
    assert type(tiny.processor.image_processor).__name__ == facts.image_processor_class
    assert "torchvision" not in sys.modules
    tok = tiny.processor.tokenizer
    image_id = tok.convert_tokens_to_ids(facts.image_token)
    assert getattr(tiny.model.config, facts.image_token_id_field) == image_id
    assert json.loads((tiny.path / "config.json").read_text())[facts.image_token_id_field] == image_id
    for marker in (facts.span_open, facts.span_close, facts.close_after):
        if marker is not None:
            assert tok.convert_tokens_to_ids(marker) != tok.unk_token_id, marker
    text = "What is in the image?\nDescribe it: 3 shapes, red."
    assert tok.decode(tok(text)["input_ids"]) == text


def test_same_seed_same_tensors_on_disk(tiny: Tiny, tmp_path):
    again = save_tiny(tiny.name, tmp_path / "again", seed=0, initializer_range=0.2)
    with safe_open(str(tiny.path / "model.safetensors"), "pt") as a, safe_open(str(again / "model.safetensors"),
                                                                                 "pt") as b:
        keys = sorted(a.keys())
        assert keys == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in keys)
    other, _ = build_tiny(tiny.name, seed=1, initializer_range=0.2)
    first = tiny.model.state_dict()
    assert any(not torch.equal(v, first[k]) for k, v in other.state_dict().items() if v.is_floating_point())


def test_module_paths(tiny: Tiny):
    facts = get_family(tiny.name).facts
    model, text_cfg = tiny.model, tiny.model.config.get_text_config()
    layers = get_module(model, facts.llm_layers)
    assert isinstance(layers, nn.ModuleList) and len(layers) == text_cfg.num_hidden_layers
    assert isinstance(get_module(model, facts.embed_tokens), nn.Embedding)
    assert get_module(model, facts.embed_tokens).weight.shape[0] == text_cfg.vocab_size
    head = get_module(model, facts.lm_head)
    assert isinstance(head, nn.Linear) and head.out_features == text_cfg.vocab_size
    assert isinstance(get_module(model, facts.final_norm), nn.Module)
    assert isinstance(get_module(model, facts.vision_tower), nn.Module)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    for i, layer in enumerate(layers):  # the module path and the declared prefixes agree
        assert {component_of(facts, names[id(p)]) for p in layer.parameters()} == {("llm_layers", i)}
    for path in facts.projector:
        obj = get_module(model, path)
        params = list(obj.parameters()) if isinstance(obj, nn.Module) else [obj]
        assert params and {component_of(facts, names[id(p)])[0] for p in params} == {"projector"}
    vision = {component_of(facts, names[id(p)])[0] for p in get_module(model, facts.vision_tower).parameters()}
    assert vision <= {"vision", "projector"} and "vision" in vision


def _check_partition(facts, keys: list[str], n_layers: int, *, on_disk: bool) -> None:
    seen: dict[tuple[str, int | None], int] = {}
    for k in keys:
        loc = component_of(facts, k, on_disk=on_disk)  # raises unless exactly one component matches
        seen[loc] = seen.get(loc, 0) + 1
    assert {c for c, _ in seen} == {"vision", "projector", "llm_layers", "llm_other"}
    assert sorted(i for c, i in seen if c == "llm_layers") == list(range(n_layers))


def test_every_parameter_in_exactly_one_component(tiny: Tiny):
    facts = get_family(tiny.name).facts
    n_layers = tiny.model.config.get_text_config().num_hidden_layers
    _check_partition(facts, list(tiny.model.state_dict()), n_layers, on_disk=False)
    with safe_open(str(tiny.path / "model.safetensors"), "pt") as f:
        disk = list(f.keys())
    _check_partition(facts, disk, n_layers, on_disk=True)
    with pytest.raises(FrankenscopeError, match="matches no component"):
        component_of(facts, "something.else.weight")


@pytest.mark.parametrize("which", [0, 1])
def test_image_span_layout_and_generate(tiny: Tiny, which: int):
    facts = get_family(tiny.name).facts
    fam = get_family(tiny.name)
    enc = _encode(tiny, fam.image_sizes[which])
    ids = enc["input_ids"][0]
    tok = tiny.processor.tokenizer
    image_id = tok.convert_tokens_to_ids(facts.image_token)
    spans = image_span_positions(tiny.name, ids, tok)
    assert len(spans) == 1
    span = spans[0]
    n_image, span_len = EXPECTED[tiny.name][which]
    assert (int((ids == image_id).sum()), len(span)) == (n_image, span_len)
    assert span == list(range(span[0], span[-1] + 1))
    assert int((ids[span] == image_id).sum()) == n_image  # every image token is inside the span
    first, last = tok.convert_ids_to_tokens([int(ids[span[0]]), int(ids[span[-1]])])
    assert first == (facts.span_open or facts.image_token) and last == (facts.span_close or facts.image_token)
    with torch.no_grad():
        out = tiny.model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert 1 <= out.shape[1] - ids.shape[0] <= 3


def test_image_span_token_counts_differ_with_size_only_where_documented():
    assert EXPECTED["gemma3"][0] == EXPECTED["gemma3"][1]  # fixed number of soft tokens
    assert EXPECTED["llava-onevision"][0] != EXPECTED["llava-onevision"][1]


def test_image_span_errors():
    tok = build_tiny("qwen2-vl")[1].tokenizer
    ids = tok("<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>")["input_ids"]
    with pytest.raises(FrankenscopeError, match="never closed"):
        image_span_positions("qwen2-vl", ids, tok)
    with pytest.raises(FrankenscopeError, match="one row"):
        image_span_positions("qwen2-vl", [ids], tok)
    with pytest.raises(FrankenscopeError, match="unknown family 'nope'"):
        image_span_positions("nope", ids, tok)


def test_cli_tiny(tmp_path):
    out = tmp_path / "tiny"
    res = CliRunner().invoke(app, ["tiny", "qwen2.5-vl", "--out", str(out), "--seed", "3", "--init-range", "0.2"])
    assert res.exit_code == 0, res.output
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
            "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    model = AutoModelForImageTextToText.from_pretrained(str(out))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    again = CliRunner().invoke(app, ["tiny", "qwen2.5-vl", "--out", str(out)])
    assert again.exit_code == 2 and "not an empty folder" in again.output


def test_cli_unknown_family(tmp_path):
    res = CliRunner().invoke(app, ["tiny", "llama-vision", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "unknown family 'llama-vision'" in res.output and "qwen2.5-vl" in res.output and "smolvlm" in res.output
    assert not (tmp_path / "x").exists()


def test_random_init_is_image_sensitive(tiny: Tiny):
    """At initializer_range 0.2 the image reaches the last position: two images of the same size give
    different next-token logits (the later swap/skip equality tests need models that are not degenerate)."""
    size = get_family(tiny.name).image_sizes[0]
    with torch.no_grad():
        a = tiny.model(**_encode(tiny, size, (200, 40, 40))).logits[0, -1]
        b = tiny.model(**_encode(tiny, size, (30, 90, 220))).logits[0, -1]
    assert (a - b).abs().max() > 1e-2 * a.abs().max()


def test_cli_rejects_a_bad_init_range(tmp_path):
    res = CliRunner().invoke(app, ["tiny", "gemma3", "--out", str(tmp_path / "g"), "--init-range", "0"])
    assert res.exit_code == 2 and "initializer_range must be > 0" in res.output


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "qwen3.5"])
def test_frankenscope_loader_on_families_it_supports(name, tmp_path):
    """Every family with an adapter also loads through `load_model` (which checks the adapter's module paths
    on the loaded model); qwen3.5 has no adapter and is named as unsupported."""
    from frankenscope.loading import load_model

    path = save_tiny(name, tmp_path / name)
    loaded = load_model(path)
    assert type(loaded.processor).__name__ == get_family(name).facts.processor_class
    assert loaded.adapter.num_layers(loaded.model) == 3


def test_loader_names_a_family_without_an_adapter(tmp_path):
    from frankenscope.loading import load_model

    path = save_tiny("qwen3.5", tmp_path / "q35")
    with pytest.raises(FrankenscopeError, match="unsupported architecture 'Qwen3_5ForConditionalGeneration'"):
        load_model(path)
