"""Causal probes: the swap engines (fast vs naive oracle), Fact 1, layer skipping, attention mass, hook
hygiene, the paper's probe-pair layout and the CLI commands."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from frankenscope.adapters import get_adapter
from frankenscope.data.schema import Item, ProbePair
from frankenscope.errors import FrankenscopeError
from frankenscope.organism.model import build_organism, save_folder
from frankenscope.organism.suite import probe_inputs as organism_probe_inputs
from frankenscope.probes.hooks import (
    capture_attention,
    capture_projections,
    count_hooks,
    record_layer_inputs,
    replace_hidden_states,
    skip_layers,
    swap_projections,
)
from frankenscope.probes.swap import (
    answers_differ,
    encode_pair,
    sweep_pair,
)

FIXTURE_PAIRS = Path(__file__).parent / "fixtures" / "paper_pairs"


@pytest.fixture(scope="module")
def rand64():
    """A micro organism with initializer_range 0.2 (swaps change answers) in float64, and its adapter."""
    model, proc = build_organism("micro", seed=1, initializer_range=0.2)
    return model.double().eval(), proc, get_adapter(model)


@pytest.fixture(scope="module")
def pairs():
    return organism_probe_inputs(n=2, seed=0)  # 2 pairs of each of the 4 probe tasks


def _encode(rand, inp, source=None):
    model, proc, ad = rand
    img_t, img_s = inp.images()
    return encode_pair(model, proc, ad, inp.pair, img_t, img_s if source is None else source)


def _run(model, ep, **kw):
    kwargs = {k: v for k, v in ep.target.items() if k != "attention_mask"}
    with torch.inference_mode():
        return model(**kwargs, position_ids=ep.positions, **kw).logits


# --------------------------------------------------------------------------- swap engines


def test_fast_engine_subset_of_layers(rand64, pairs):
    model, proc, ad = rand64
    ep = _encode(rand64, pairs[0])
    full = sweep_pair(model, proc, ad, ep, list(range(ad.num_layers(model))), engine="fast", keep_logits=True)
    part = sweep_pair(model, proc, ad, ep, [1, 3], engine="fast", keep_logits=True)
    torch.testing.assert_close(part.first_logits, full.first_logits[[1, 3, -1]], rtol=0, atol=1e-10)


@pytest.mark.parametrize("engine", ["fast", "naive"])
def test_swap_with_source_equal_to_target_changes_nothing(rand64, pairs, engine):
    model, proc, ad = rand64
    for inp in pairs[::2]:
        ep = _encode(rand64, inp, source=inp.images()[0])
        for mode in ("cumulative", "single"):
            out = sweep_pair(model, proc, ad, ep, list(range(ad.num_layers(model))), mode=mode, engine=engine,
                             max_new_tokens=6, keep_logits=True)
            assert all(t == out.tokens[-1] for t in out.tokens)
            torch.testing.assert_close(out.first_logits, out.first_logits[-1:].expand_as(out.first_logits),
                                       rtol=0, atol=1e-10)


def test_swap_past_the_last_layer_changes_nothing(rand64, pairs):
    model, proc, ad = rand64
    n_layers = ad.num_layers(model)
    ep = _encode(rand64, pairs[0])
    i0, i1 = ep.span
    with capture_projections(model, ad, range(n_layers), span=ep.span) as src, torch.inference_mode():
        kwargs = {k: v for k, v in ep.source.items() if k != "attention_mask"}
        model(**kwargs, position_ids=ep.positions)
    clean = _run(model, ep)
    with swap_projections(model, ad, src, (i0, i1), range(n_layers, n_layers), ep.prompt_len):
        torch.testing.assert_close(_run(model, ep), clean, rtol=0, atol=0)
    with swap_projections(model, ad, src, (i0, i1), [n_layers - 1], ep.prompt_len):
        assert not torch.allclose(_run(model, ep)[:, i1:], clean[:, i1:])  # the last layer alone still matters
    # The engines' unswapped row ("swap from L") equals a plain run and plain greedy generation.
    out = sweep_pair(model, proc, ad, ep, list(range(n_layers)), max_new_tokens=6, keep_logits=True)
    torch.testing.assert_close(out.first_logits[-1], clean[0, -1], rtol=0, atol=1e-10)
    kwargs = {k: v for k, v in ep.target.items()}
    with torch.inference_mode():
        gen = model.generate(**kwargs, max_new_tokens=6, do_sample=False)
    expected = gen[0, ep.prompt_len:].tolist()
    assert out.tokens[-1] == expected[:len(out.tokens[-1])]


def test_change_rules():
    assert not answers_differ("Answer: 3.", "3")
    assert answers_differ("3", "4")
    assert not answers_differ("The answer is backpropagation.", "backpropagation", "reference")
    # the exact rule compares extracted final answers: "the answer is X" states X
    assert not answers_differ("The answer is backpropagation.", "backpropagation", "exact")
    assert answers_differ("It is a cat, I think.", "It is a dog, I think.", "exact")
    assert answers_differ("cat", "cats", "reference")


# --------------------------------------------------------------------------- skip


def _text_inputs(proc, ad, prompts):
    tok = proc.tokenizer
    tok.padding_side = "left"
    return proc(text=[ad.build_prompt(proc, p, 0) for p in prompts], return_tensors="pt", padding=True)


def test_skipping_every_layer_gives_head_of_embeddings(rand64):
    model, proc, ad = rand64
    enc = _text_inputs(proc, ad, ["How many?"])
    with torch.inference_mode():
        with skip_layers(model, ad, range(ad.num_layers(model))):
            logits = model(**enc).logits
        expected = ad.lm_head(model)(ad.final_norm(model)(ad.embed_tokens(model)(enc["input_ids"])))
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------- attention


def test_attention_responses_stop_before_an_image_token(pairs, tmp_path):
    """A model that emits an image token in its response is cut there (teacher forcing it would ask for image
    features no image supplies: 'Image features and image tokens do not match')."""
    from frankenscope.probes.attention import attention_profile, generate_ids

    model, proc = build_organism("micro", seed=3)
    model.set_attn_implementation("eager")
    ad = get_adapter(model)
    image_id = ad.image_token_id(model)
    with torch.no_grad():  # the image token always wins the greedy choice after the first step
        model.lm_head.weight[image_id] = 50 * model.lm_head.weight.abs().max()
    img_path = tmp_path / "a.png"
    pairs[0].images()[0].save(img_path)
    item = Item(id="x", task="t", prompt="How many?", answer="3", answer_type="number", category="v2r",
                image=str(img_path))
    ids = generate_ids(model, proc, ad, [item], [pairs[0].images()[0]], max_new_tokens=4)
    assert image_id not in ids[0]
    res = attention_profile(model, proc, ad, [item], layers=[0], max_new_tokens=4)  # no crash
    assert len(res) == 1


# --------------------------------------------------------------------------- hooks


def test_hooks_are_removed_after_every_context(rand64, pairs):
    model, proc, ad = rand64
    n_layers = ad.num_layers(model)
    ep = _encode(rand64, pairs[2])
    untouched = copy.deepcopy(model)
    expected = _run(untouched, ep)
    with capture_projections(model, ad, range(n_layers), span=ep.span) as kv:
        _run(model, ep)
    with record_layer_inputs(model, ad, range(n_layers), positions=slice(*ep.span)) as rec:
        _run(model, ep)
    model.set_attn_implementation("eager")
    untouched.set_attn_implementation("eager")
    expected_eager = _run(untouched, ep)
    contexts = [
        lambda: capture_projections(model, ad, range(n_layers)),
        lambda: record_layer_inputs(model, ad, range(n_layers), keep_kwargs=[0]),
        lambda: swap_projections(model, ad, kv, ep.span, range(n_layers), ep.prompt_len),
        lambda: replace_hidden_states(model, ad, 1, ep.span, rec.hidden[1] * 0, ep.prompt_len),
        lambda: skip_layers(model, ad, {0: True, 2: torch.tensor([True])}),
        lambda: capture_attention(model, ad, range(n_layers), lambda j, w: None),
    ]
    try:
        for make in contexts:
            with make():
                assert count_hooks(model) > 0
                _run(model, ep)
            assert count_hooks(model) == 0
            torch.testing.assert_close(_run(model, ep), expected_eager, rtol=0, atol=0)
            with pytest.raises(RuntimeError, match="boom"), make():
                raise RuntimeError("boom")
            assert count_hooks(model) == 0
    finally:
        model.set_attn_implementation("sdpa")
    with pytest.raises(FrankenscopeError, match="eager"), capture_attention(model, ad, [0], lambda j, w: None):
        _run(model, ep)  # sdpa returns no weights: a clear error, and the hook is still removed
    assert count_hooks(model) == 0
    torch.testing.assert_close(_run(model, ep), expected, rtol=0, atol=0)


def test_prompt_positions_are_mrope(rand64, pairs):
    model, proc, ad = rand64
    ep = _encode(rand64, pairs[0])
    assert ep.positions.shape == (3, 1, ep.prompt_len)
    assert torch.equal(ad.position_ids(model, ep.target), ep.positions)
    assert int(ep.positions[0, 0, -1]) < ep.prompt_len - 1  # image rows compress the position range
    # the explicit ids are the ones the model derives itself: same logits with and without them
    with torch.inference_mode():
        implicit = model(**ep.target).logits
        explicit = model(**ep.target, position_ids=ep.positions).logits
    torch.testing.assert_close(explicit, implicit, rtol=0, atol=0)
    text_only = {"input_ids": ep.target["input_ids"][:, :5]}
    assert torch.equal(ad.position_ids(model, text_only), torch.arange(5).unsqueeze(0))


# --------------------------------------------------------------------------- CLI and the paper layout


@pytest.fixture(scope="module")
def cli_app():
    from frankenscope.cli import app

    return app


def _invoke(app, args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_cli_localize_vision_reads_paper_layout(cli_app, micro_dir, tmp_path):
    out = tmp_path / "v"
    res = _invoke(cli_app, ["localize", "vision", micro_dir, "--pairs", FIXTURE_PAIRS, "--out", out,
                            "--max-new-tokens", "4", "--no-progress"])
    doc = json.loads((out / "localize_vision.json").read_text())
    assert doc["kind"] == "localize_vision" and doc["schema_version"] == 1
    assert set(doc["tasks"]) == {"counting", "grounding", "all"}
    assert doc["tasks"]["counting"]["n_pairs"] == 2 and len(doc["tasks"]["all"]["per_layer"]) == 4
    rec = next(r for r in doc["records"] if r["task"] == "grounding")
    assert rec["source_answer"].count(",") == 3 and rec["answer_type"] == "box"
    assert (out / "fig4a_change_rate.png").stat().st_size > 0
    assert "change rate per layer" in res.output


def test_cli_localize_vision_organism_and_errors(cli_app, micro_dir, tmp_path):
    out = tmp_path / "o"
    _invoke(cli_app, ["localize", "vision", micro_dir, "--out", out, "--n", "1", "--layers", "1-2", "--mode",
                      "single", "--engine", "naive", "--max-new-tokens", "3", "--no-progress", "--no-plots"])
    doc = json.loads((out / "localize_vision.json").read_text())
    assert doc["settings"]["mode"] == "single" and doc["layers"] == [1, 2]
    assert set(doc["tasks"]) == {"counting", "ocr", "grounding", "recognition", "all"}
    # A pair whose images give different token counts fails with its id.
    bad = tmp_path / "bad" / "counting"
    (bad / "images").mkdir(parents=True)
    Image.new("RGB", (112, 112), (200, 200, 200)).save(bad / "images" / "t.png")
    Image.new("RGB", (224, 224), (200, 200, 200)).save(bad / "images" / "s.png")
    pair = ProbePair("pair_x", "counting", "images/t.png", "images/s.png", "How many?", "1", "2", "number")
    row = {"id": pair.id, "task": "counting", "target_image": pair.target_image, "source_image": pair.source_image,
           "prompt": pair.prompt, "meta": {"target_answer": "1", "source_answer": "2"}}
    (bad / "data.jsonl").write_text(json.dumps(row) + "\n")
    res = CliRunner().invoke(cli_app, ["localize", "vision", str(micro_dir), "--pairs", str(bad), "--out",
                                       str(tmp_path / "b"), "--no-progress"])
    assert res.exit_code == 2 and "pair_x" in res.output
    _invoke(cli_app, ["localize", "vision", micro_dir, "--pairs", bad, "--out", tmp_path / "b", "--resize-source",
                      "--max-new-tokens", "2", "--no-progress", "--no-plots"])


def test_cli_localize_reasoning(cli_app, micro_dir, tmp_path):
    out = tmp_path / "r"
    _invoke(cli_app, ["localize", "reasoning", micro_dir, "--out", out, "--n", "2", "--tasks",
                      "word_problem,more_than", "--max-new-tokens", "4", "--no-progress"])
    doc = json.loads((out / "localize_reasoning.json").read_text())
    assert doc["kind"] == "localize_reasoning" and set(doc["tasks"]) == {"word_problem", "more_than", "all"}
    row = doc["tasks"]["all"]["per_layer"][0]
    assert row["error"]["n"] == 4 and {"diff", "ci_low", "ci_high"} <= set(row["increase"])
    assert (out / "fig4b_skip_error.png").is_file()


def test_cli_attention(cli_app, micro_dir, tmp_path):
    other, proc = build_organism("micro", seed=5)
    rl_dir = save_folder(other, proc, tmp_path / "rl")
    out = tmp_path / "a"
    _invoke(cli_app, ["attention", "--models", micro_dir, rl_dir, "--out", out, "--n", "2", "--tasks", "more_than",
                      "--max-new-tokens", "4", "--no-progress"])
    doc = json.loads((out / "attention.json").read_text())
    assert doc["kind"] == "attention" and set(doc["models"]) == {"IN", "RL"}
    layer0 = doc["models"]["IN"]["per_layer"][0]
    assert 0 < layer0["mass"]["mean"] < 1
    assert layer0["per_token"]["mean"] == pytest.approx(layer0["mass"]["mean"] / 16)
    assert "RL - IN" in doc["differences"] and (out / "fig3_attention.png").is_file()


def test_probe_datasets_by_paper_name(tmp_path):
    """`--dataset gsm8k,math500` reads the paper's text sets from a data root; name:PATH points at one folder;
    an unknown name is refused naming the accepted forms."""
    from frankenscope.probes.run import load_dataset_items

    root = tmp_path / "data"
    (root / "MATH-500").mkdir(parents=True)
    (root / "MATH-500" / "test.jsonl").write_text("\n".join(json.dumps(
        {"problem": f"{i}+1?", "solution": "", "answer": str(i + 1), "unique_id": f"t/{i}.json"}) for i in range(3)))
    (root / "gsm8k").mkdir()
    (root / "gsm8k" / "test.jsonl").write_text("\n".join(json.dumps(
        {"question": f"{i}*2?", "answer": f"so\n#### {2 * i}"}) for i in range(4)))
    items, source = load_dataset_items("gsm8k,math500", tmp_path / "out", tasks=None, default_tasks=(), n=2, seed=0,
                                       data_root=str(root))
    assert [it.id for it in items] == ["gsm8k:0", "gsm8k:1", "math500:t/0.json", "math500:t/1.json"]
    assert [it.answer for it in items] == ["0", "2", "1", "2"]
    assert "gsm8k:" in source and "math500:" in source
    only, _ = load_dataset_items(f"math500:{root / 'MATH-500'}", tmp_path / "out", tasks=None, default_tasks=(),
                                 n=None, seed=0)
    assert len(only) == 3
    with pytest.raises(FrankenscopeError, match="neither an existing file or folder nor a known dataset"):
        load_dataset_items("mathh500", tmp_path / "out", tasks=None, default_tasks=(), n=None, seed=0)
    with pytest.raises(FrankenscopeError, match="GSM8K not found under"):
        load_dataset_items("gsm8k", tmp_path / "out", tasks=None, default_tasks=(), n=None, seed=0,
                           data_root=str(tmp_path / "empty"))
