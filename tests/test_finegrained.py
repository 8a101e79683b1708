"""Fine-grained evaluation: metric formulas, McNemar, extraction, prompt styles, the response cache,
the LLM judge against a local fake server, dataset loaders and subsampling, reports, and an end-to-end
run on the micro organism."""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from frankenscope.data.datasets import (
    dataset_folder,
    load_dataset_items,
    load_gsm8k,
    load_logicvista,
    load_math500,
    load_mathverse,
    load_mathvision,
    load_mathvista,
    subsample,
    subsample_indices,
)
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError, FrankenscopeRuntimeError
from frankenscope.evaluate.cache import CachedGenerator, ResponseCache
from frankenscope.evaluate.extract import extract_answer, grade
from frankenscope.evaluate.finegrained import (
    MetricSets,
    Record,
    compare_models,
    grade_response,
    m_rea,
    m_v2r,
    m_vis,
    mcnemar_exact,
    model_metrics,
    paired_comparison,
    run_conditions,
    stratified_mean_ci,
    transitions,
)
from frankenscope.evaluate.judge import ChatClient, Describer, JudgeConfig, LLMJudge, parse_verdict
from frankenscope.evaluate.prompts import PROMPT_STYLES, PromptStyle, get_prompt_style, styles_for
from frankenscope.evaluate.report import format_comparisons, format_table, format_transitions
from frankenscope.evaluate.run import finegrained_eval

T, F = True, False


def item(answer: str, answer_type: str, id: str = "x", **kw: Any) -> Item:
    return Item(id=id, task=kw.pop("task", "t"), prompt=kw.pop("prompt", "q"), answer=answer,
                answer_type=answer_type, **kw)


# -- metric formulas ---------------------------------------------------------------------------------

def test_transitions_and_m_vis_exact() -> None:
    a = [T, T, T, F, F, T]  # with the image
    b = [F, T, F, F, T, None]  # black image; the last item is ungraded
    t = transitions(a, b)
    assert (t["N"], t["n_ungraded"], t["n_TT"], t["n_TF"], t["n_FT"], t["n_FF"]) == (5, 1, 1, 2, 1, 1)
    assert t["acc_A"] == pytest.approx(3 / 5) and t["acc_B"] == pytest.approx(2 / 5)
    assert t["delta_acc"] == pytest.approx(1 / 5) and t["net_gain"] == -1
    assert t["side_effect_rate"] == pytest.approx(2 / 3) and t["lift_rate"] == pytest.approx(1 / 2)
    m = m_vis(a, b)
    assert m["value"] == pytest.approx(2 / 5) and m["n"] == 5 and m["count"] == 2 and m["n_ungraded"] == 1
    assert 0.0 <= m["ci_low"] <= m["value"] <= m["ci_high"] <= 1.0


def test_m_v2r_and_m_rea_exact() -> None:
    a = [T, T, F, F, T, T]
    c = [T, T, T, F, F, T]  # black image + description
    m = m_v2r(a, c)
    assert m["value"] == pytest.approx(3 / 6) and m["count"] == 3 and m["n"] == 6
    r = m_rea([T, F, None, T])
    assert r["value"] == pytest.approx(2 / 3) and r["n"] == 3 and r["n_ungraded"] == 1
    allright = m_rea([T] * 4)
    # 4 of 4 right: Wilson [0.5101, 1] (a zero-width [1, 1] would claim certainty from four items)
    assert allright["value"] == 1.0 and allright["ci_low"] == pytest.approx(0.5101, abs=1e-4)
    assert allright["ci_high"] == 1.0
    empty = m_vis([None], [T])
    assert empty["n"] == 0 and math.isnan(empty["value"])


def test_model_metrics_from_records() -> None:
    imgs = [item("1", "number", id=f"p{i}", image="x.png", category="perception") for i in range(4)]
    v2r = [item("1", "number", id=f"v{i}", image="x.png", category="v2r", description="d") for i in range(2)]
    txt = [item("1", "number", id=f"t{i}", category="text") for i in range(3)]
    sets = MetricSets(vis=imgs, v2r=v2r, rea=txt, bench={"suite": imgs + v2r + txt})
    lab = {"image": {"p0": T, "p1": T, "p2": F, "p3": T, "v0": T, "v1": F},
           "black": {"p0": F, "p1": T, "p2": F, "p3": F},
           "black_desc": {"v0": T, "v1": T}, "text": {"t0": T, "t1": F, "t2": None}}
    records = [Record(i, "t", c, "r", "1", v, None, v) for c, d in lab.items() for i, v in d.items()]
    s = model_metrics(records, sets)
    assert s["metrics"]["M_vis"]["value"] == pytest.approx(2 / 4)
    assert s["metrics"]["M_v2r"]["value"] == pytest.approx(1 / 2)
    assert s["metrics"]["M_rea"]["value"] == pytest.approx(1 / 2) and s["metrics"]["M_rea"]["n_ungraded"] == 1
    # the suite pools every item in its own condition: 5 right of the 8 graded (t2 is ungraded)
    assert s["benchmarks"]["suite"]["value"] == pytest.approx(5 / 8)
    assert s["benchmarks"]["suite"]["count"] == 5 and s["benchmarks"]["suite"]["n"] == 8
    assert s["transitions"]["vis"]["n_TF"] == 2 and s["transitions"]["v2r"]["n_FT"] == 1


def test_mcnemar_exact_known_tables() -> None:
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(2, 12) == pytest.approx(212 / 16384)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert 0 < mcnemar_exact(400, 600) < 1e-9  # large tables do not overflow
    with pytest.raises(FrankenscopeError):
        mcnemar_exact(-1, 2)


def test_paired_comparison_and_stratified_ci() -> None:
    x = {"a": T, "b": T, "c": F, "d": F, "e": None}
    y = {"a": T, "b": F, "c": T, "d": T, "e": T, "f": T}
    c = paired_comparison(x, y, seed=1)
    assert c["n"] == 4 and c["n_a_only"] == 1 and c["n_b_only"] == 2
    assert c["diff"] == pytest.approx(0.75 - 0.5) and c["mcnemar_p"] == pytest.approx(1.0)
    assert c["ci_low"] <= c["diff"] <= c["ci_high"]
    value, lo, hi = stratified_mean_ci([[1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]], n_boot=500, seed=0)
    assert value == pytest.approx((0.5 + 7 / 8) / 2) and lo <= value <= hi
    cmp = compare_models({"M_rea": x, "bench:s": x}, {"M_rea": y, "bench:s": y})
    assert cmp["M_rea"]["n"] == 4 and cmp["benchmark"]["diff"] == pytest.approx(0.25)


# -- extraction and grading -------------------------------------------------------------------------

MC = {"choices": ["145°", "35°", "55°", "90°"]}


@pytest.mark.parametrize("text, expected", [
    ("3.5", "3.5"),  # the reference turns this into "5"
    ("The answer is 0.25", "0.25"),  # the value after the last answer cue
    ("Answer: 1:2", "1:2"),
    ("**B**", "B"),
    ("so **3.5** it is. Answer: **3.5**", "3.5"),
    ("first \\boxed{2}, on reflection \\boxed{3}", "3"),
    ("\\boxed{3} but <answer>5</answer>", "5"),  # answer tag first, then boxed
    ("<think>..</think><answer>the value is \\boxed{7}</answer>", "7"),
])
def test_extract_tricky(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_grade_tricky_strings() -> None:
    assert grade("\\boxed{3.5}", item("3.5", "number")) and not grade("\\boxed{3.5}", item("5", "number"))
    assert grade("Answer: 0.25", item("0.25", "number")) and not grade("0.25", item("25", "number"))
    assert grade("\\boxed{1:2}", item("1:2", "text")) and not grade("\\boxed{2}", item("1:2", "text"))
    assert grade("**3.5**", item("3.5", "number"))
    assert grade("\\boxed{2} then \\boxed{4}", item("4", "number"))
    assert not grade("\\boxed{4} then \\boxed{2}", item("4", "number"))


def test_grade_mcq_letters_only_when_multiple_choice() -> None:
    mc = item("145°", "choice", meta=MC)  # MathVista style: gold is the option text
    assert grade("\\boxed{A}", mc) and grade("**A**", mc) and grade("(A) 145°", mc)
    assert not grade("\\boxed{B}", mc)
    assert not grade("\\boxed{E}", mc)  # E is not an option
    assert grade("\\boxed{145}", mc)  # a bare number matching exactly one option
    assert not grade("\\boxed{35}", mc)
    assert not grade("\\boxed{B}", item("2", "number"))  # a letter is never an answer to a number item


def test_grade_precision_and_latex() -> None:
    gold = item("1.45", "number", meta={"precision": 2.0})
    assert grade("1.454", gold) and grade("1.4451", gold) and not grade("1.46", gold)
    assert not grade("1.454", item("1.45", "number"))  # no stated precision: tight tolerance
    assert grade("\\boxed{\\dfrac{14}{3}}", item("\\frac{14}{3}", "text"))
    assert grade("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", item("(3,\\frac{\\pi}{2})", "text"))
    assert not grade("\\boxed{\\frac{14}{5}}", item("\\frac{14}{3}", "text"))


def test_math_verify_decides_equivalent_forms() -> None:
    # math-verify is a pinned dependency: these grades no longer depend on what happens to be installed
    assert grade("\\boxed{14/3}", item("\\frac{14}{3}", "text"))
    assert grade("\\boxed{3\\sqrt{13}}", item("\\sqrt{117}", "text"))
    assert not grade("\\boxed{3\\sqrt{11}}", item("\\sqrt{117}", "text"))
    assert grade("\\boxed{\\frac12}", item("0.5", "number"))


# -- prompt styles ----------------------------------------------------------------------------------

def test_prompt_styles(tmp_path: Path) -> None:
    assert set(PROMPT_STYLES) >= {"plain", "boxed", "think_answer"}
    it = item("3", "number", prompt="How many?", description="two dots", image="x.png")
    plain = get_prompt_style("plain")
    assert plain.system is None and plain.apply(it).prompt == "How many?"
    assert plain.apply(it, with_description=True).prompt == "Image description: two dots\nHow many?"
    boxed = get_prompt_style("boxed").apply(it, with_description=True)
    assert "\\boxed{}" in boxed.prompt and boxed.prompt.endswith("Image Description:\ntwo dots\n\nQuestion:\nHow many?")
    assert boxed.meta["question"] == "How many?"
    assert "<answer>" in (get_prompt_style("think_answer").system or "")
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({"system": "S", "user_prefix": "P: ", "description_template": "{description}|{question}"}))
    style = get_prompt_style(str(custom))
    assert style.name == "mine" and style.render("q", "d") == "P: d|q"
    assert [s.name for s in styles_for(["a", "b"], "plain,boxed")] == ["plain", "boxed"]
    with pytest.raises(FrankenscopeError, match="one per model"):
        styles_for(["a", "b", "c"], "plain,boxed")
    with pytest.raises(FrankenscopeError, match="unknown prompt style"):
        get_prompt_style("qwen-auto")
    with pytest.raises(FrankenscopeError, match="needs a description"):
        plain.apply(item("3", "number"), with_description=True)


# -- response cache ---------------------------------------------------------------------------------

class CountingGenerator:
    """A stand-in model: answers every item correctly except with a black image; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.items = 0

    def __call__(self, items: list[Item], *, black_image: bool = False, use_description: bool = False,
                 images: Any = None) -> list[str]:
        self.calls += 1
        self.items += len(items)
        return [f"Answer: {'0' if black_image and 'description' not in it.prompt.lower() else it.answer}"
                for it in items]


def _png(path: Path, color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_cache_second_run_generates_nothing(tmp_path: Path) -> None:
    img = _png(tmp_path / "a.png")
    items = [item(str(i), "number", id=f"i{i}", prompt=f"q{i}", image=str(img) if i % 2 else None)
             for i in range(5)]
    inner = CountingGenerator()
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        gen = CachedGenerator(inner, cache, "fp", {"max_new_tokens": 8, "batch_size": 4}, chunk_size=2)
        first = gen(items)
        assert inner.calls == 3 and inner.items == 5 and gen.misses == 5
        assert gen(items) == first and inner.calls == 3 and gen.hits == 5  # nothing generated
        gen(items, black_image=True)  # a black image is another key for the 2 image items, not for text ones
        assert inner.items == 5 + 2
    with ResponseCache(tmp_path / "c.sqlite") as cache:  # a new process: still cached
        again = CachedGenerator(CountingGenerator(), cache, "fp", {"max_new_tokens": 8, "batch_size": 32})
        assert again(items) == first and again.generator.calls == 0  # batch size is not part of the key
        other = CachedGenerator(CountingGenerator(), cache, "fp", {"max_new_tokens": 9})
        other(items)
        assert other.generator.items == 5  # other settings, other key
        changed = CachedGenerator(CountingGenerator(), cache, "fp2", {"max_new_tokens": 8})
        changed(items[:1])
        assert changed.misses == 1  # another model fingerprint


def test_cache_key_follows_image_content(tmp_path: Path) -> None:
    img = _png(tmp_path / "a.png")
    it = item("1", "number", image=str(img))
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        gen = CachedGenerator(CountingGenerator(), cache, "fp", {})
        gen([it])
        _png(img, color=(0, 0, 255))  # same path, other pixels
        gen([it])
        assert gen.misses == 2


# -- LLM judge against a local fake OpenAI-compatible server -----------------------------------------

class FakeServer:
    """A chat-completions endpoint on 127.0.0.1 whose replies follow a script of (status, content)."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, content = outer.script[min(len(outer.requests), len(outer.script)) - 1]
                payload = (json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
                           if status == 200 else json.dumps({"error": "boom"})).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Any]:
    made: list[FakeServer] = []

    def start(script: list[tuple[int, str]]) -> FakeServer:
        made.append(FakeServer(script))
        return made[-1]

    yield start
    for s in made:
        s.close()


def _config(url: str, **kw: Any) -> JudgeConfig:
    return JudgeConfig(base_url=url, model="judge-1", api_key="k", timeout=5, max_retries=2, backoff=0.001, **kw)


VERDICT_TRUE = json.dumps({"is_correct": True, "extracted_answer": "3", "reason": "same"})


def test_judge_failure_is_ungraded_not_wrong(server: Any, tmp_path: Path) -> None:
    srv = server([(500, "")])
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        client = ChatClient(_config(srv.base_url), cache)
        judge = LLMJudge(client)
        it = item("3", "number", prompt="How many?")
        g = grade_response(it, "Answer: 3", judge.grade)
        assert g["rule_correct"] is True and g["judge_correct"] is None and g["correct"] is None
        assert "HTTP 500" in g["error"]
        assert len(srv.requests) == 3 and client.stats.retries == 2 and client.stats.failures == 1
        assert cache.count("judge") == 0  # failures are not cached
        # through the run: the item is ungraded, so it drops out of N instead of counting as wrong
        sets = MetricSets(vis=[], v2r=[], rea=[it])
        recs = run_conditions(CountingGenerator(), PROMPT_STYLES["plain"], sets, judge.grade)
        assert [r.correct for r in recs] == [None]
        m = model_metrics(recs, sets)["metrics"]["M_rea"]
        assert m["n"] == 0 and m["n_ungraded"] == 1


def test_judge_success_graded_and_cached(server: Any, tmp_path: Path) -> None:
    srv = server([(429, ""), (200, "```json\n" + VERDICT_TRUE + "\n```")])
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        client = ChatClient(_config(srv.base_url), cache)
        judge = LLMJudge(client)
        it = item("3", "number", prompt="How many?")
        g = grade_response(it, "I think three", judge.grade)
        assert g["rule_correct"] is False and g["judge_correct"] is True and g["correct"] is True
        assert len(srv.requests) == 2 and client.stats.retries == 1  # 429 then success
        req = srv.requests[-1]
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
        assert req["body"]["model"] == "judge-1" and req["body"]["temperature"] == 0
        assert "I think three" in req["body"]["messages"][1]["content"]
        assert judge.grade(it, "I think three", "I think three")["judge_correct"] is True
        assert len(srv.requests) == 2 and client.stats.cache_hits == 1  # served from the cache


def test_parse_verdict_and_config_from_env() -> None:
    assert parse_verdict('{"is_correct": false, "reason": "no"}')["is_correct"] is False
    assert parse_verdict('junk "is_correct": true junk')["is_correct"] is True
    assert parse_verdict('{"is_correct": "True"}')["is_correct"] is True
    assert parse_verdict("I cannot tell") is None
    with pytest.raises(FrankenscopeError, match="FRANKENSCOPE_JUDGE_BASE_URL"):
        JudgeConfig.from_env({})
    cfg = JudgeConfig.from_env({"FRANKENSCOPE_JUDGE_BASE_URL": "http://x/v1", "FRANKENSCOPE_JUDGE_MODEL": "m",
                                "FRANKENSCOPE_JUDGE_API_KEY": "secret", "FRANKENSCOPE_JUDGE_RETRIES": "1"})
    assert cfg.max_retries == 1 and cfg.api_key == "secret" and "api_key" not in cfg.public()


def test_describer(server: Any, tmp_path: Path) -> None:
    srv = server([(200, "Overview: a red rectangle.")])
    img = _png(tmp_path / "a.png")
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        d = Describer(ChatClient(_config(srv.base_url, describe_model="vision-1"), cache))
        it = item("1", "number", image=str(img))
        assert d.describe(it) == "Overview: a red rectangle."
        assert d.describe(it) == "Overview: a red rectangle." and len(srv.requests) == 1
        body = srv.requests[0]["body"]
        assert body["model"] == "vision-1"
        assert body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_finegrained_eval_with_failing_judge(server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = server([(503, "")])
    monkeypatch.setenv("FRANKENSCOPE_JUDGE_BASE_URL", srv.base_url)
    monkeypatch.setenv("FRANKENSCOPE_JUDGE_MODEL", "judge-1")
    monkeypatch.setenv("FRANKENSCOPE_JUDGE_RETRIES", "1")
    monkeypatch.setenv("FRANKENSCOPE_JUDGE_BACKOFF", "0.001")
    said: list[str] = []
    with pytest.raises(FrankenscopeRuntimeError, match="the judge graded none of the .* responses of stand-in"):
        finegrained_eval(["stand-in"], tmp_path / "out", n_per_task=1, judge=True, describe=False,
                         generator_factory=lambda m, s: CountingGenerator(), echo=said.append, n_boot=100)
    assert any("warning: the judge failed on" in line and "HTTP 503" in line for line in said), said
    doc = json.loads((tmp_path / "out" / "finegrained.json").read_text())  # results are still written
    m = doc["models"][0]["metrics"]
    assert all(m[k]["n"] == 0 and m[k]["n_ungraded"] > 0 for k in ("M_vis", "M_v2r", "M_rea"))
    stats = doc["judge_stats"]
    assert stats["failures"] == 5 and stats["skipped"] > 0  # gives up on a dead endpoint after 5 failures
    assert len(srv.requests) == 5 * 2 and doc["settings"]["judge"]["model"] == "judge-1"
    records = json.loads((tmp_path / "out" / doc["models"][0]["records_file"]).read_text())["records"]
    assert all(r["correct"] is None and r["rule_correct"] is not None for r in records)


# -- datasets ---------------------------------------------------------------------------------------

def _mathvista_rows() -> dict[str, dict[str, Any]]:
    meta = {"category": "general-vqa", "context": "natural image", "task": "vqa"}
    return {
        "1": {"pid": "1", "question": "How many cups?", "image": "images/1.png", "choices": None, "unit": None,
              "precision": None, "answer": "3", "question_type": "free_form", "answer_type": "integer",
              "query": "Hint: answer with an integer.\nQuestion: How many cups?", "metadata": meta},
        "2": {"pid": "2", "question": "What is x?", "image": "images/2.png", "choices": None, "unit": None,
              "precision": 2.0, "answer": "1.45", "question_type": "free_form", "answer_type": "float",
              "query": "Hint: two decimals.\nQuestion: What is x?",
              "metadata": {**meta, "category": "math-targeted-vqa"}},
        "3": {"pid": "3", "question": "Which angle?", "image": "images/3.png", "choices": ["145°", "35°"],
              "unit": None, "precision": None, "answer": "145°", "question_type": "multi_choice",
              "answer_type": "text", "query": "Hint: letter.\nQuestion: Which angle?\nChoices:\n(A) 145°\n(B) 35°",
              "metadata": {**meta, "category": "math-targeted-vqa"}},
        "4": {"pid": "4", "question": "List them.", "image": "images/4.png", "choices": None, "unit": None,
              "precision": None, "answer": "[1, 2]", "question_type": "free_form", "answer_type": "list",
              "query": "Q: List them.", "metadata": meta},
    }


def _write_mathvista(folder: Path) -> Path:
    for pid in "1234":
        _png(folder / "images" / f"{pid}.png")
    (folder / "testmini.json").write_text(json.dumps(_mathvista_rows()))
    return folder


def test_load_mathvista_json(tmp_path: Path) -> None:
    items = load_mathvista(_write_mathvista(tmp_path / "MathVista"))
    by = {it.id: it for it in items}
    assert list(by) == ["mathvista:1", "mathvista:2", "mathvista:3", "mathvista:4"]
    one, two, three, four = by.values()
    assert one.category == "perception" and one.answer_type == "number" and one.prompt.startswith("Hint")
    assert Path(one.image).is_file() and one.meta["source_id"] == "1"
    assert two.category == "v2r" and two.meta["precision"] == 2.0 and grade("1.454", two)
    assert three.answer_type == "choice" and three.meta["choices"] == ["145°", "35°"] and grade("\\boxed{A}", three)
    assert four.answer_type == "text"
    plain = load_mathvista(tmp_path / "MathVista", use_query=False)
    assert plain[2].prompt == "Which angle?\n\nChoices:\nA. 145°\nB. 35°"
    assert plain[0].prompt == "How many cups?"


def test_load_mathvista_parquet_with_embedded_images(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(_mathvista_rows().values())[:2]
    for r in rows:
        buf = io.BytesIO()
        Image.new("RGB", (5, 4), (1, 2, 3)).save(buf, format="PNG")
        r["decoded_image"] = {"bytes": buf.getvalue(), "path": None}
        r["choices"] = r["choices"] or []
    folder = tmp_path / "MathVista" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "testmini-00000-of-00001.parquet")
    items = load_mathvista(tmp_path / "MathVista", image_dir=tmp_path / "imgs")
    assert len(items) == 2 and all(Path(it.image).parent == tmp_path / "imgs" for it in items)
    with Image.open(items[0].image) as im:
        assert im.size == (5, 4)


def test_load_text_datasets(tmp_path: Path) -> None:
    m = tmp_path / "MATH-500"
    m.mkdir()
    rows = [{"problem": "1+1?", "solution": "...", "answer": "2", "subject": "Algebra", "level": 1,
             "unique_id": "test/algebra/1.json"},
            {"problem": "Half?", "solution": "...", "answer": "\\frac{1}{2}", "subject": "Algebra", "level": 2,
             "unique_id": "test/algebra/2.json"}]
    (m / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_math500(m)
    assert [it.id for it in items] == ["math500:test/algebra/1.json", "math500:test/algebra/2.json"]
    assert [it.answer_type for it in items] == ["number", "text"] and items[0].category == "text"
    assert items[1].meta["level"] == 2 and items[0].image is None
    g = tmp_path / "gsm8k"
    g.mkdir()
    (g / "test.jsonl").write_text(json.dumps({"question": "How much?", "answer": "3 * 411 = 1233\n#### 1,233"}) + "\n")
    gs = load_gsm8k(g)
    assert gs[0].id == "gsm8k:0" and gs[0].answer == "1233" and gs[0].solution == "3 * 411 = 1233"
    assert grade("\\boxed{1,233}", gs[0])
    assert [it.id for it in load_dataset_items("MATH-500", m, image_dir=tmp_path)] == [it.id for it in items]


def test_load_benchmark_datasets(tmp_path: Path) -> None:
    mv = tmp_path / "MathVerse"
    _png(mv / "images" / "image_1.png")
    (mv / "testmini.json").write_text(json.dumps([
        {"sample_index": "1", "problem_index": "1", "problem_version": "Text Lite",
         "question": "Find x.\nChoices:\nA:1\nB:2", "image": "image_1.png", "answer": "B",
         "question_type": "multi-choice", "metadata": {"subject": "plane geometry"}, "query_wo": "", "query_cot": ""},
        {"sample_index": "2", "problem_index": "1", "problem_version": "Text Only", "question": "Find y.",
         "image": "", "answer": "7", "question_type": "free-form", "metadata": {}}]))
    verse = load_mathverse(mv)
    assert verse[0].answer_type == "choice" and grade("\\boxed{B}", verse[0]) and not grade("A", verse[0])
    assert verse[0].image is not None and verse[1].image is None and verse[1].category == "text"

    vision = tmp_path / "MathVision"
    _png(vision / "images" / "1.jpg")
    (vision / "testmini.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "1", "question": "<image1>\nWhich shape?", "options": ["circle", "square"], "image": "images/1.jpg",
         "answer": "B", "solution": None, "level": 2, "subject": "metric geometry"},
        {"id": "2", "question": "<image1> How long?", "options": [], "image": "images/1.jpg", "answer": "12",
         "level": 3, "subject": "algebra"}]))
    mvis = load_mathvision(vision)
    assert mvis[0].prompt == "Which shape?\n\nChoices:\nA. circle\nB. square"
    assert grade("\\boxed{B}", mvis[0]) and grade("square", mvis[0]) and mvis[1].answer_type == "number"

    lv = tmp_path / "LogicVista" / "data"
    _png(lv / "images" / "q1.png")
    (lv / "dataset.json").write_text(json.dumps({
        "q1": {"imagename": "q1.png", "question": "Which? A. x B. y", "answer": "A", "skill": "inductive"},
        "q2": {"imagename": "q1.png", "question": "Which ones?", "answer": "C, A", "skill": "deductive"}}))
    logic = load_logicvista(tmp_path / "LogicVista")
    assert [it.id for it in logic] == ["logicvista:q1", "logicvista:q2"]
    assert logic[0].answer_type == "choice" and logic[1].answer == "A, C" and logic[1].answer_type == "choice"
    assert logic[0].meta["skill"] == "inductive" and Path(logic[0].image).is_file()


def test_load_from_hub_uses_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load(repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((repo, config, split))
        return [{"sample_index": "9", "question": "Q", "image": Image.new("RGB", (3, 3)), "answer": "4",
                 "question_type": "free-form"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    items = load_mathverse(tmp_path / "nowhere", from_hub=True, image_dir=tmp_path / "imgs")
    assert calls == [("AI4Math/MathVerse", "testmini", "testmini")] and Path(items[0].image).is_file()


def test_missing_dataset_helpful_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FrankenscopeError) as e:
        load_mathvista(tmp_path / "MathVista")
    msg = str(e.value)
    assert str(tmp_path / "MathVista" / "testmini.json") in msg and "data/testmini-*.parquet" in msg
    assert "hf download AI4Math/MathVista" in msg
    with pytest.raises(FrankenscopeError, match="MATH-500 not found under .*test.jsonl"):
        dataset_folder(tmp_path, "math500")
    monkeypatch.delenv("FRANKENSCOPE_DATA", raising=False)
    with pytest.raises(FrankenscopeError, match="MathVista/.*MATH-500/"):
        finegrained_eval(["m"], tmp_path / "out", suite="paper", echo=lambda s: None)
    with pytest.raises(FrankenscopeError, match="MathVista"):
        finegrained_eval(["m"], tmp_path / "out", suite="paper", data=tmp_path, echo=lambda s: None)


def test_subsample_deterministic_and_saved(tmp_path: Path) -> None:
    items = [item("1", "number", id=f"i{i}") for i in range(20)]
    split = tmp_path / "splits" / "x.json"
    first = subsample(items, 5, seed=123, split_file=split, name="x")
    expected = sorted(np.random.RandomState(123).choice(20, 5, replace=False))
    assert [it.id for it in first] == [f"i{i}" for i in expected] == [f"i{i}" for i in subsample_indices(20, 5, 123)]
    doc = json.loads(split.read_text())
    assert doc["ids"] == [it.id for it in first] and doc["seed"] == 123 and doc["pool_size"] == 20
    assert [it.id for it in subsample(items, 5, seed=123, split_file=split)] == doc["ids"]
    # the saved ids win over a new draw, even with another pool order
    assert [it.id for it in subsample(items[::-1], 5, seed=123, split_file=split)] == doc["ids"]
    assert subsample(items, 50, seed=1) == items and subsample(items, None, seed=1) == items
    with pytest.raises(FrankenscopeError, match="delete the file"):
        subsample(items[:3], 5, seed=123, split_file=split)


# -- reports ----------------------------------------------------------------------------------------

def _summary(v: float, n: int = 10) -> dict[str, Any]:
    return {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n": n, "count": int(v * n)}


def test_report_tables() -> None:
    t = {"N": 10, "n_ungraded": 0, "n_TT": 3, "n_TF": 4, "n_FT": 1, "n_FF": 2, "acc_A": 0.7, "acc_B": 0.4}
    doc = {"suite": "organism", "benchmark_label": "Suite accuracy (all items)",
           "models": [{"label": "IN", "prompt_style": {"name": "plain"}, "transitions": {"vis": t},
                       "metrics": {"M_vis": _summary(0.47), "M_rea": _summary(0.78)}},
                      {"label": "RL", "prompt_style": {"name": "plain"}, "transitions": {},
                       "metrics": {"M_vis": _summary(0.42), "M_rea": _summary(0.78)}}],
           "comparisons": [{"a": "IN", "b": "RL", "metrics": {"M_vis": {
               "n": 10, "diff": -0.05, "ci_low": -0.2, "ci_high": 0.1, "n_a_only": 2, "n_b_only": 1,
               "mcnemar_p": 1.0}}}]}
    table = format_table(doc, reference="IN")
    assert "| Vision (M_vis) | 10 | 47.0 [37.0, 57.0] | 42.0 [32.0, 52.0] (-5.0) |" in table
    assert "| Reasoning (M_rea) | 10 | 78.0 [68.0, 88.0] | 78.0 [68.0, 88.0] (+0.0) |" in table
    assert "| IN | vision (B = black image) | 10 | 3 | 4 | 1 | 2 | 70.0 | 40.0 | 0 |" in format_transitions(doc)
    assert "| IN -> RL | Vision (M_vis) | 10 | -5.0 [-20.0, +10.0] | 2 | 1 | 1 |" in format_comparisons(doc)


# -- end to end -------------------------------------------------------------------------------------

def test_finegrained_eval_stand_in_resumes(tmp_path: Path) -> None:
    made: list[CountingGenerator] = []

    def factory(model: str, style: PromptStyle) -> CountingGenerator:
        made.append(CountingGenerator())
        return made[-1]

    kw: dict[str, Any] = dict(n_per_task=2, n=3, seed=5, generator_factory=factory, echo=lambda s: None, n_boot=200)
    doc = finegrained_eval(["a", "b"], tmp_path / "out", prompt_style="plain,boxed", **kw)
    m = doc["models"][0]["metrics"]
    # the stand-in is right with the image, wrong with a black image, right with a description
    assert m["M_vis"]["value"] == 1.0 and m["M_v2r"]["value"] == 1.0 and m["M_rea"]["value"] == 1.0
    assert m["M_vis"]["n"] == 3 and m["M_v2r"]["n"] == 3 and m["M_rea"]["n"] == 2  # 2 text items in the suite
    assert [d["prompt_style"]["name"] for d in doc["models"]] == ["plain", "boxed"]
    assert doc["sets"]["split_files"] == [f"splits/organism2_{s}_seed5_n3.json" for s in ("vis", "v2r", "rea")]
    assert doc["comparisons"][0]["metrics"]["M_vis"]["diff"] == 0.0
    n_generated = sum(g.items for g in made)
    assert n_generated > 0 and len(made) == 2
    again = finegrained_eval(["a", "b"], tmp_path / "out", prompt_style="plain,boxed", **kw)
    assert len(made) == 2  # no generator was even built: everything came from the cache
    assert all(d["cache"]["misses"] == 0 and d["cache"]["generator_calls"] == 0 for d in again["models"])
    assert again["sets"]["ids"] == doc["sets"]["ids"]


def test_finegrained_eval_micro_organism(tmp_path: Path, micro_dir: Path) -> None:
    from frankenscope.organism.model import build_organism, save_folder

    other = save_folder(*build_organism("micro", seed=1), tmp_path / "micro1")
    out = tmp_path / "fg"
    doc = finegrained_eval([str(micro_dir), str(other)], out, labels=["base", "other"], n_per_task=2,
                           max_new_tokens=4, batch_size=16, progress=False, echo=lambda s: None, n_boot=200)
    assert doc["kind"] == "finegrained" and doc["schema_version"] == 1
    assert (out / "finegrained.json").is_file() and (out / "table.md").is_file()
    with Image.open(out / "finegrained.png") as im:
        assert im.size[0] > 100
    assert len(doc["sets"]["ids"]["vis"]) == 14 and len(doc["sets"]["ids"]["v2r"]) == 4
    assert len(doc["sets"]["ids"]["rea"]) == 2
    for mdoc in doc["models"]:
        assert set(mdoc["metrics"]) == {"M_vis", "M_v2r", "M_rea", "benchmark"}
        assert mdoc["cache"]["misses"] == 14 + 14 + 4 + 2  # image, black, black+description, text
        assert mdoc["prompt_style"]["name"] == "plain" and mdoc["model_fingerprint"]
        records = json.loads((out / mdoc["records_file"]).read_text())["records"]
        assert len(records) == 34
    assert set(doc["comparisons"][0]["metrics"]) == {"M_vis", "M_v2r", "M_rea", "benchmark"}
    table = (out / "table.md").read_text()
    assert "Vision (M_vis)" in table and "| base | other |" in table and "McNemar" in table


def test_finegrained_eval_paper_suite_on_fixtures(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write_mathvista(root / "MathVista")
    (root / "MATH-500").mkdir(parents=True)
    (root / "MATH-500" / "test.jsonl").write_text("\n".join(json.dumps(
        {"problem": f"{i}+1?", "answer": str(i + 1), "unique_id": f"test/x/{i}.json", "subject": "A", "level": 1})
        for i in range(2)))
    (root / "gsm8k").mkdir()
    (root / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "2+2?", "answer": "so\n#### 4"}))
    gen = CountingGenerator()
    kw: dict[str, Any] = dict(suite="paper", data=root, prompt_style="boxed", generator_factory=lambda m, s: gen,
                              echo=lambda s: None, n_boot=100)
    with pytest.raises(FrankenscopeError, match="M_v2r needs a description"):
        finegrained_eval(["m"], tmp_path / "out", **kw)
    desc = tmp_path / "descriptions.json"
    desc.write_text(json.dumps({"mathvista:2": "a line of length 1.45", "3": {"description": "an angle of 145°"}}))
    doc = finegrained_eval(["m"], tmp_path / "out", descriptions=desc, benchmarks="mathvista,gsm8k", **kw)
    m = doc["models"][0]["metrics"]
    assert {k: (m[k]["value"], m[k]["n"]) for k in ("M_vis", "M_v2r", "M_rea")} == {
        "M_vis": (1.0, 2), "M_v2r": (1.0, 2), "M_rea": (1.0, 2)}
    assert m["benchmark"]["value"] == 1.0 and m["benchmark"]["benchmarks"] == ["gsm8k", "mathvista"]
    assert doc["sets"]["ids"]["vis"] == ["mathvista:1", "mathvista:4"]
    assert doc["settings"]["max_image_pixels"] == 1280 * 720 and doc["descriptions"]["missing"] == 0
    # image: 4 MathVista items; black: 2; black + description: 2; text: 2 MATH-500 + 1 GSM8K
    assert gen.items == 4 + 2 + 2 + 3
    assert "Average benchmark accuracy" in (tmp_path / "out" / "table.md").read_text()
