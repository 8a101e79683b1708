import copy
import random
import re
import string

import numpy as np
import pytest
import torch
from PIL import Image

from frankenscope.adapters import get_adapter
from frankenscope.loading import load_model, load_processor
from frankenscope.organism.model import build_organism
from frankenscope.organism.processor import OrganismProcessor
from frankenscope.organism.tokenizer import build_tokenizer


def test_tokenizer_round_trip(tmp_path):
    tok = build_tokenizer()
    text = "How many shapes? 3 + 4 = 7.\nAnswer: 7 \\boxed{7} (x1,y1)  ####  unknownword Zebras"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(tok("How many shapes? 12")["input_ids"]) == [
        "How", " many", " shapes", "?", " ", "1", "2"]  # task words whole, digits one by one
    assert tok.convert_ids_to_tokens(tok(" Zebra")["input_ids"]) == [" ", "##Z", "##e", "##b", "##r", "##a"]
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " \n"
    for _ in range(200):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tok.decode(tok(s)["input_ids"]) == s, repr(s)
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(tmp_path)
    assert back(text)["input_ids"] == ids
    assert back.convert_tokens_to_ids("<|image_pad|>") == tok.convert_tokens_to_ids("<|image_pad|>")


def test_every_task_word_is_one_token():
    from frankenscope.organism.tasks import ITEM_TASKS, generate_items

    tok = build_tokenizer()
    for task in ITEM_TASKS:
        for it, _ in generate_items(task, 60, 3):
            for text in (it.prompt, it.answer, it.description or "", it.solution or ""):
                for word in re.findall(r"[A-Za-z]+", text):
                    assert len(tok(" " + word)["input_ids"]) == 1, (task, word)
    # the M_v2r control's prompt ("Image description: ...", IN's described:* examples) too
    assert len(tok("Image description:")["input_ids"]) == 3


def test_presets_have_expected_sizes():
    m_micro, _ = build_organism("micro")
    m_small, _ = build_organism("small")
    n_micro = sum(p.numel() for p in m_micro.parameters())
    n_small = sum(p.numel() for p in m_small.parameters())
    assert 0.8e6 < n_micro < 1.5e6
    assert 5e6 < n_small < 7e6


def test_image_token_count_per_size(micro):
    model, proc = micro
    ad = get_adapter(model)
    prompt = ad.build_prompt(proc, "What is it?")
    tid = ad.image_token_id(model)
    # smart-resize to multiples of 28 px; tokens = (h/28)*(w/28), clamped to [112^2, 224^2] pixels
    for size, tokens in [((112, 112), 16), ((224, 224), 64), ((168, 112), 24), ((56, 56), 16)]:
        enc = proc(text=[prompt], images=[Image.new("RGB", size)], return_tensors="pt")
        spans = ad.image_spans(enc["input_ids"], tid)[0]
        assert len(spans) == 1
        assert spans[0][1] - spans[0][0] == tokens, size
        assert int(enc["image_grid_thw"].prod()) == tokens * 4


def test_save_load_bit_identical(micro, micro_dir):
    model, _ = micro
    loaded = load_model(micro_dir)
    a, b = model.state_dict(), loaded.model.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert loaded.model.lm_head.weight.data_ptr() == loaded.model.model.language_model.embed_tokens.weight.data_ptr()
    assert isinstance(loaded.processor, OrganismProcessor)
    assert isinstance(load_processor(micro_dir), OrganismProcessor)


def test_from_pretrained_directly(micro_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    m = Qwen2_5_VLForConditionalGeneration.from_pretrained(micro_dir)
    p = OrganismProcessor.from_pretrained(micro_dir)
    assert m.config.architectures == ["Qwen2_5_VLForConditionalGeneration"]
    assert p.image_token_id == m.config.image_token_id


def test_build_is_deterministic():
    a, _ = build_organism("micro", seed=3)
    b, _ = build_organism("micro", seed=3)
    c, _ = build_organism("micro", seed=4)
    w = "model.language_model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_black_image_same_size():
    ad = get_adapter("Qwen2_5_VLForConditionalGeneration")
    img = Image.new("RGB", (140, 112), (200, 10, 10))
    black = ad.black_image(img)
    assert black.size == img.size and black.getextrema() == ((0, 0), (0, 0), (0, 0))


def test_per_example_loss_weights_examples_equally(micro):
    """Known value: the loss is the mean over examples of each example's mean token NLL."""
    from frankenscope.adapters import get_adapter
    from frankenscope.organism.sft import Example, collate, encode, per_example_loss

    model, proc = micro
    ad = get_adapter(model)
    exs = [Example("Q?", "yes"), Example("Describe.", "a long description of many characters")]
    enc = [encode(proc, ad, e) for e in exs]
    batch = collate(enc, proc.tokenizer.pad_token_id)
    with torch.no_grad():
        got = per_example_loss(model, batch)
        singles = [model(**collate([e], proc.tokenizer.pad_token_id)).loss for e in enc]
    assert torch.allclose(got, (singles[0] + singles[1]) / 2, atol=1e-5)


def test_encode_labels_cover_exactly_the_response(micro):
    """Labels are -100 on exactly the tokens of the prompt processed on its own; the rest is the target."""
    from frankenscope.adapters import get_adapter
    from frankenscope.organism.sft import Example, encode
    from frankenscope.organism.tasks import generate_items

    model, proc = micro
    ad = get_adapter(model)
    (it, img), = generate_items("digit_sum", 1, 0)
    for ex in (Example("Describe the image.", it.description, img), Example("What is 2 + 3?", "2 + 3 = 5.\nAnswer: 5"),
               Example(it.prompt, it.solution, img)):
        enc = encode(proc, ad, ex)
        prompt = ad.build_prompt(proc, ex.text, n_images=0 if ex.image is None else 1)
        n_prompt = len(proc(text=[prompt], images=None if ex.image is None else [ex.image])["input_ids"][0])
        assert (enc["labels"][:n_prompt] == -100).all() and (enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]).all()
        target = proc.tokenizer.decode(enc["input_ids"][n_prompt:])
        assert target == ex.target + proc.tokenizer.eos_token


def test_mrope_sections_resolve_the_image_grid():
    """The width chunk starts >= 30x higher than with Qwen's (1/4, 3/8, 3/8) split (0.32 vs 0.0032 rad per
    column for `small`) and still ends in near position-invariant frequencies; the built model uses
    exactly these sections."""
    import pytest

    from frankenscope.errors import FrankenscopeError
    from frankenscope.organism.model import PRESETS, ROPE_THETA, architecture, mrope_section, organism_config
    from frankenscope.organism.processor import build_processor

    for preset, p in PRESETS.items():
        head_dim = p["hidden"] // p["heads"]
        t, h, w = mrope_section(head_dim)
        assert t + h + w == head_dim // 2 and min(t, h, w) >= 1
        omega = [ROPE_THETA ** (-2 * i / head_dim) for i in range(head_dim // 2)]
        height, width = omega[t:t + h], omega[t + h:]
        stock_width_top = omega[head_dim // 2 - 3 * (head_dim // 2) // 8]
        assert min(height) > max(width) >= 30 * stock_width_top and min(width) < 0.01, (preset, height, width)
        if preset == "small":
            assert min(height) > 0.4 and max(width) > 0.3
        cfg = organism_config(preset, build_processor())
        assert cfg.text_config.rope_parameters["mrope_section"] == [t, h, w] == architecture(preset)["mrope_section"]
    with pytest.raises(FrankenscopeError, match="head_dim 8"):
        mrope_section(8)


def test_architecture_is_part_of_the_base_key(monkeypatch):
    import frankenscope.organism.model as model_mod
    from frankenscope.organism.build import recipe_for, stage_recipe

    r = recipe_for("micro")
    before_base, before_in = stage_recipe(r, "base"), stage_recipe(r, "in")
    monkeypatch.setattr(model_mod, "ROPE_THETA", 1000.0)
    assert stage_recipe(r, "base") != before_base and stage_recipe(r, "in") == before_in


def test_encode_falls_back_when_the_target_does_not_tokenize_as_a_tail(micro):
    """A tokenizer that merges across the prompt/response boundary: the prompt is counted on its own."""
    from frankenscope.adapters import get_adapter
    from frankenscope.organism.sft import Example, encode

    model, proc = micro
    ad = get_adapter(model)

    class MergingTokenizer:
        def __init__(self, tok):
            self._tok = tok

        def __call__(self, text, add_special_tokens=True, **kw):
            if add_special_tokens is False:  # the response on its own: pretend it tokenizes differently
                return {"input_ids": [self._tok.pad_token_id]}
            return self._tok(text, add_special_tokens=add_special_tokens, **kw)

        def __getattr__(self, name):
            return getattr(self._tok, name)

    class Proc:
        def __init__(self, p):
            self._p, self.tokenizer = p, MergingTokenizer(p.tokenizer)

        def __call__(self, *a, **kw):
            return self._p(*a, **kw)

        def __getattr__(self, name):
            return getattr(self._p, name)

    ex = Example("Describe the image.", "The image shows a red circle.", Image.new("RGB", (112, 112), (240, 240, 240)))
    got, want = encode(Proc(proc), ad, ex), encode(proc, ad, ex)
    assert torch.equal(got["labels"], want["labels"]) and torch.equal(got["input_ids"], want["input_ids"])
    assert (got["labels"] != -100).sum() == len(proc.tokenizer(ex.target + proc.tokenizer.eos_token,
                                                                add_special_tokens=False)["input_ids"])


def test_epoch_batches_cover_every_example_once_and_group_by_length():
    from frankenscope.organism.sft import epoch_batches

    lengths = [random.Random(i).randint(5, 100) for i in range(203)]
    for group in (1, 4, 16):
        batches = epoch_batches(lengths, 8, group, random.Random(0))
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(203))  # an epoch: every example exactly once
        assert sorted(len(b) for b in batches)[1:] == [8] * (len(batches) - 1)
    def waste(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths)
    plain, grouped = (epoch_batches(lengths, 8, g, random.Random(0)) for g in (1, 16))
    assert waste(grouped) < 1.1 < 1.3 < waste(plain)
    # group 1 is plain shuffling: the same rng gives the same permutation, cut into consecutive batches
    perm = random.Random(0).sample(range(203), 203)
    assert sorted(map(tuple, plain)) == sorted(tuple(perm[k:k + 8]) for k in range(0, 203, 8))
    with pytest.raises(ValueError, match="group"):
        epoch_batches(lengths, 8, 0, random.Random(0))


def test_train_sft_reports_padding_and_rejects_empty_data(micro):
    from frankenscope.organism.sft import Example, train_sft

    model, proc = micro
    exs = [Example("Q?", "yes"), Example("Describe.", "a long description of many characters")] * 4
    model = copy.deepcopy(model)
    stats = train_sft(model, proc, get_adapter(model), exs, steps=2, batch_size=4, length_group=2, progress=False)
    assert stats["padding"] == 1.0  # two lengths, each batch holds one length only: no padding at all
    with pytest.raises(ValueError, match="at least one example"):
        train_sft(model, proc, get_adapter(model), [], steps=1, progress=False)


def test_fused_adamw_takes_the_same_steps_as_the_default(micro):
    """The fused optimizer is a faster kernel for the same AdamW update: same losses and weights (to
    float32 rounding) after a few steps from the same start."""
    from frankenscope.organism.sft import Example, train_sft

    model, proc = micro
    exs = [Example("Q?", "yes"), Example("Describe.", "a red circle"), Example("Count?", "3")] * 4
    runs = []
    for fused in (False, True):
        m = copy.deepcopy(model)
        stats = train_sft(m, proc, get_adapter(m), exs, steps=4, batch_size=4, fused=fused, seed=1, progress=False)
        runs.append((stats, dict(m.named_parameters())))
    (s0, p0), (s1, p1) = runs
    assert s0["final_loss"] == pytest.approx(s1["final_loss"], rel=1e-4)
    moved = 0
    for name, w in p0.items():
        torch.testing.assert_close(p1[name], w, rtol=1e-4, atol=1e-6, msg=name)
        moved += int(not torch.equal(w, dict(model.named_parameters())[name]))
    assert moved > 0


def test_patch_embed_as_matmul_equals_the_conv_and_restores_it(micro):
    from frankenscope.organism.sft import patch_embed_as_matmul

    model, _ = micro
    model = copy.deepcopy(model)
    pe = model.model.visual.patch_embed
    x = torch.randn(32, pe.proj.weight[0].numel())
    ref = pe(x)
    ref.sum().backward()
    g_ref, pe.proj.weight.grad = pe.proj.weight.grad.clone(), None
    with patch_embed_as_matmul(model) as n:
        assert n == 1
        out = pe(x)
        out.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pe.proj.weight.grad, g_ref, rtol=1e-5, atol=1e-5)
    assert "forward" not in vars(pe)  # the class's own forward is back
    assert torch.equal(pe(x), ref)


def test_fast_encode_is_bit_identical_to_the_processor(micro, monkeypatch):
    """The organism's fast path (vectorised pixels, placeholder expanded by hand, tokenizer alone) gives
    exactly the processor's tensors and dtypes; images it cannot take (a resize needed, RGBA) fall back."""
    from frankenscope.organism.processor import OrganismProcessor
    from frankenscope.organism.sft import Example, encode
    from frankenscope.organism.tasks import generate_items

    model, proc = micro
    ad = get_adapter(model)
    rng = np.random.default_rng(0)
    exs = [Example(it.prompt, it.solution or it.answer, img) for task in ("digit_sum", "recognition", "grounding")
           for it, img in generate_items(task, 3, 1)]
    exs += [Example("Describe the image.", "a wide image", Image.fromarray(rng.integers(0, 256, (112, 224, 3), np.uint8))),
            Example("Grey?", "yes", Image.fromarray(rng.integers(0, 256, (112, 112), np.uint8))),
            Example("What is 2 + 3?", "2 + 3 = 5.\nAnswer: 5")]
    fast = [encode(proc, ad, ex) for ex in exs]
    assert all(proc.fast_image_inputs(ex.image) is not None for ex in exs if ex.image is not None)
    assert proc.fast_image_inputs(Image.new("RGB", (100, 112))) is None  # would be resized
    assert proc.fast_image_inputs(Image.new("RGBA", (112, 112))) is None  # the processor blends alpha
    monkeypatch.setattr(OrganismProcessor, "fast_image_inputs", lambda self, image: None)
    for ex, got in zip(exs, fast, strict=True):
        want = encode(proc, ad, ex)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), (ex.text, k)
