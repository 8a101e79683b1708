"""`finegrained_eval`: the fine-grained evaluation (`frankenscope eval MODEL... --metrics fine-grained` and the study).

It builds the metric sets of a suite, runs every model through the four conditions (with the
response cache, so a rerun or an interrupted run only generates what is missing), grades, computes
M_vis / M_v2r / M_rea / benchmark accuracy with CIs, compares consecutive models, and writes:

    OUT/finegrained.json        versioned summary (kind "finegrained"): settings, sets, per-model metrics,
                                2x2 tables, comparisons
    OUT/models/<label>.json     per-model records (every response, extracted answer and grade); the label
                                as a safe file name ('IN:IN:RL' -> IN_IN_RL.json)
    OUT/table.md                markdown tables (abilities x models, transitions, comparisons)
    OUT/finegrained.png         bar plot like the paper's Fig. 2
    OUT/splits/*.json           the subsampled ids (when n is given), re-read by later runs
    OUT/cache.sqlite            response / judge / description cache (unless `cache` names another file)
    OUT/suite/                  the organism suite, when no data folder is given
    OUT/descriptions.json       descriptions used for M_v2r on the paper suite (when any were generated)

Suites and metric sets:

- organism: the built-in synthetic suite. M_vis over the perception AND v2r items (every item with
  an image: both kinds can be answered only by looking, and the description control is separate),
  M_v2r over the v2r items (exact descriptions from the generator), M_rea over the text items; the
  "benchmark" row is the accuracy over all those items (image or text condition).
- paper: MathVista testmini general-vqa (M_vis), math-targeted-vqa (M_v2r), MATH-500 (M_rea), from
  `data` (a folder holding MathVista/ and MATH-500/, see frankenscope.data.datasets) and, when
  `benchmarks` is given, the average accuracy over those benchmarks (PAPER_BENCHMARKS = "paper").
  The paper used n=100 per set with seed 123.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError, FrankenscopeRuntimeError
from frankenscope.evaluate.backends import AUTO_CPU_BATCH, GenerationSpec, parse_batch_size
from frankenscope.evaluate.cache import CachedGenerator, ResponseCache
from frankenscope.evaluate.extract import grader_identity
from frankenscope.evaluate.finegrained import (
    MetricSets,
    compare_models,
    indicators,
    labels_by_condition,
    model_metrics,
    run_conditions,
)
from frankenscope.evaluate.prompts import PromptStyle, styles_for
from frankenscope.evaluate.report import format_table, write_report
from frankenscope.io import fault_point, safe_filename, write_result
from frankenscope.providers import suite as suite_provider

if TYPE_CHECKING:
    from frankenscope.evaluate.shards import GenerationRequest

FINEGRAINED_SCHEMA_VERSION = 1
PAPER_MAX_IMAGE_PIXELS = 1280 * 720
SUITES = ("organism", "paper")

GeneratorFactory = Callable[[str, PromptStyle], Callable[..., list[str]]]


# --------------------------------------------------------------------------- metric sets


def _split(items: list[Item], n: int | None, seed: int, out: Path, name: str, used: list[str]) -> list[Item]:
    """Subsample n items (None: all) with the split file out/splits/<name>_seed<seed>_n<n>.json (its path,
    relative to out, is appended to `used`)."""
    from frankenscope.data.datasets import split_file_name, subsample

    if n is None:
        return items
    path = out / "splits" / split_file_name(name, n, seed)
    used.append(str(path.relative_to(out)))
    return subsample(items, n, seed, path, name=name)


def _dataset_dir(root: Path, key: str, from_hub: bool) -> Path:
    from frankenscope.data.datasets import DATASETS, dataset_folder

    try:
        return dataset_folder(root, key)
    except FrankenscopeError:
        if from_hub:
            return root / DATASETS[key].folders[0]
        raise


def paper_sets(out: Path, data: Path | None, n: int | None, seed: int, benchmarks: list[str],
               prompts: dict[str, str], from_hub: bool, used: list[str]) -> tuple[MetricSets, Path]:
    """Metric sets of the paper suite from local dataset folders under `data`."""
    from frankenscope.data.datasets import load_dataset_items, load_math500, load_mathvista

    if data is None:
        env = os.environ.get("FRANKENSCOPE_DATA")
        if not env:
            raise FrankenscopeError(
                "the paper suite needs its datasets: pass data=DIR (--data DIR) or set FRANKENSCOPE_DATA to a folder "
                "holding MathVista/ (testmini: testmini.json + images/, or data/testmini-*.parquet) and MATH-500/ "
                "(test.jsonl); optional MathVerse/, MathVision/, LogicVista/, gsm8k/ for benchmarks")
        data = Path(env)
    image_dir = out / "images"
    mv = load_mathvista(_dataset_dir(data, "mathvista", from_hub), prompt=prompts["mathvista"],
                        image_dir=image_dir / "mathvista", from_hub=from_hub)
    general = [it for it in mv if it.meta.get("metadata", {}).get("category") == "general-vqa"]
    math_vqa = [it for it in mv if it.meta.get("metadata", {}).get("category") == "math-targeted-vqa"]
    math500 = load_math500(_dataset_dir(data, "math500", from_hub), from_hub=from_hub)
    sets = MetricSets(vis=_split(general, n, seed, out, "mathvista_general_vqa", used),
                      v2r=_split(math_vqa, n, seed, out, "mathvista_math_vqa", used),
                      rea=_split(math500, n, seed, out, "math500", used))
    for name in benchmarks:
        items = mv if name == "mathvista" else load_dataset_items(
            name, _dataset_dir(data, name, from_hub), image_dir=image_dir / name, from_hub=from_hub, prompts=prompts)
        sets.bench[name] = _split(items, n, seed, out, f"bench_{name}", used)
    sets.definitions = {
        "vis": "MathVista testmini, metadata.category == general-vqa (image vs black image)",
        "v2r": "MathVista testmini, metadata.category == math-targeted-vqa (image vs black image + description)",
        "rea": "MATH-500 test, text only",
        "benchmark": "mean over benchmarks of accuracy: " + (", ".join(benchmarks) or "none"),
    }
    return sets, data


def resolve_dataset_prompts(prompts: dict[str, str] | None = None, use_query: bool | None = None) -> dict[str, str]:
    """The prompt mode of each dataset that has several (`datasets.PROMPT_MODES`), defaults filled in and every
    value checked. `use_query` is the older switch for MathVista (True: "query", False: "question")."""
    from frankenscope.data.datasets import PROMPT_MODES

    given = dict(prompts or {})
    if use_query is not None:
        given.setdefault("mathvista", "query" if use_query else "question")
    unknown = sorted(set(given) - set(PROMPT_MODES))
    if unknown:
        raise FrankenscopeError(f"prompt modes given for {unknown}; only {', '.join(PROMPT_MODES)} have several")
    out = {}
    for key, (modes, default) in PROMPT_MODES.items():
        out[key] = given.get(key, default)
        if out[key] not in modes:
            raise FrankenscopeError(f"{key} prompt mode {out[key]!r}: choose one of {', '.join(modes)}")
    return out


def parse_benchmarks(benchmarks: str | list[str] | None) -> list[str]:
    from frankenscope.data.datasets import DATASETS, PAPER_BENCHMARKS

    if not benchmarks:
        return []
    names = [b.strip().lower() for b in (benchmarks.split(",") if isinstance(benchmarks, str) else benchmarks)]
    out: list[str] = []
    for b in names:
        for name in (PAPER_BENCHMARKS if b == "paper" else (b.replace("-", "").replace("_", ""),)):
            if name not in DATASETS:
                raise FrankenscopeError(f"unknown benchmark {b!r}; choose from {', '.join(DATASETS)} or 'paper'")
            if name not in out:
                out.append(name)
    return out


# --------------------------------------------------------------------------- descriptions


def _read_descriptions(path: Path) -> dict[str, str]:
    """id -> description from a JSON object {id: text | {description}}, JSON Lines rows {id, description}, or
    MathVista's caption/OCR file format {"model", "url", "date", "texts": {pid: caption}} (keys are MathVista
    pids, which items match through meta["source_id"]; empty captions are left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FrankenscopeError(f"cannot read descriptions file {path}: {e}") from e
    out: dict[str, str] = {}
    try:
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    out[str(row["id"])] = str(row["description"])
        else:
            doc = json.loads(text)
            if isinstance(doc, dict) and isinstance(doc.get("texts"), dict):
                for k, v in doc["texts"].items():
                    if isinstance(v, str) and v.strip():
                        out[str(k)] = v.strip()
                return out
            for k, v in doc.items():
                out[str(k)] = str(v["description"] if isinstance(v, dict) else v)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FrankenscopeError(f"{path}: expected {{id: description}} JSON, jsonl rows {{id, description}} or "
                                f"MathVista's caption file {{\"texts\": {{pid: caption}}}} ({e})") from e
    return out


def _attach_descriptions(sets: MetricSets, out: Path, descriptions: Path | None, describer: Any,
                         echo: Callable[[str], None]) -> dict[str, Any]:
    """Fill in missing descriptions of the M_v2r items (file first, then the describer); return provenance."""
    known = _read_descriptions(descriptions) if descriptions else {}
    generated: dict[str, dict[str, str]] = {}
    filled: list[Item] = []
    for it in sets.v2r:
        desc = it.description or known.get(it.id) or known.get(str(it.meta.get("source_id")))
        if not desc and describer is not None:
            desc = describer.describe(it)
            if desc:
                generated[it.id] = {"description": desc, "model": describer.model}
        filled.append(replace(it, description=desc) if desc != it.description else it)
    sets.v2r = filled
    missing = [it.id for it in filled if not it.description]
    if missing and describer is not None:
        stats = describer.client.stats
        last = stats.errors[-1] if stats.errors else "no usable reply"
        if len(missing) == len(filled):
            raise FrankenscopeRuntimeError(
                f"the describer returned no description for any of the {len(filled)} M_v2r item(s) "
                f"({stats.failures} failed request(s), last error: {last}); check the endpoint and rerun "
                f"(successful descriptions are cached)")
        echo(f"warning: the describer returned no description for {len(missing)} of {len(filled)} M_v2r "
             f"item(s), which are recorded ungraded (last error: {last})")
    elif missing and len(missing) == len(filled):
        raise FrankenscopeError(
            "M_v2r needs a description of each image: give a descriptions file (JSON {id: text} or jsonl rows "
            "{id, description}), or enable the describer (judge/describe with FRANKENSCOPE_JUDGE_BASE_URL and "
            "FRANKENSCOPE_JUDGE_MODEL set)")
    elif missing:
        echo(f"warning: {len(missing)} M_v2r item(s) have no description and are recorded ungraded "
             f"(first: {missing[:3]})")
    if generated:
        path = out / "descriptions.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        from frankenscope.io import write_json_atomic

        write_json_atomic(path, {**old, **generated})
    return {"file": str(descriptions) if descriptions else None, "generated": len(generated),
            "missing": len(missing)}


# --------------------------------------------------------------------------- models


class _LazyGenerator:
    """Builds the real generator on first use, so a fully cached model is never loaded."""

    def __init__(self, make: Callable[[], Callable[..., list[str]]]) -> None:
        self._make = make
        self.generator: Callable[..., list[str]] | None = None

    def __call__(self, items: list[Item], **kwargs: Any) -> list[str]:
        if self.generator is None:
            self.generator = self._make()
        return self.generator(items, **kwargs)


def _labels(models: list[str], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(models) or len(set(map(safe_filename, labels))) != len(labels):
            raise FrankenscopeError(f"need {len(models)} distinct labels (distinct also as file names, where "
                                    f"characters other than letters, digits, '.', '_', '-' become '_'), got {labels}")
        return labels
    out: list[str] = []
    for m in models:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(m.rstrip("/")).name or m) or "model"
        label, k = base, 2
        while label in out:
            label, k = f"{base}-{k}", k + 1
        out.append(label)
    return out


def _fingerprint(model: str) -> str:
    from frankenscope.evaluate.runner import model_fingerprint

    return model_fingerprint(model) if Path(model).is_dir() else f"id:{model}"


def finegrained_requests(models: list[str], out: Path, *, suite: str = "organism", data: Path | None = None,
                         prompt_style: str | list[str] = "plain", labels: list[str] | None = None,
                         n: int | None = None, n_per_task: int = 50, seed: int = 0,
                         benchmarks: str | list[str] | None = None, batch_size: int | str = 16, max_new_tokens: int = 64,
                         max_image_pixels: int | None = None, dtype: str = "float32", device: str | None = None,
                         device_map: str | None = None, attn_implementation: str = "sdpa",
                         descriptions: Path | None = None, prompts: dict[str, str] | None = None,
                         use_query: bool | None = None, from_hub: bool = False, backend: str = "hf",
                         vllm: dict[str, Any] | None = None, **_ignored: Any) -> list[GenerationRequest]:
    """The generations `finegrained_eval` with the same arguments asks for, without generating anything: one
    `GenerationRequest` per (model, condition), items rendered and ordered exactly as `run_conditions` passes
    them to the generator. Writes what finegrained_eval would write first (the suite, split files), so a
    finegrained_eval run afterwards finds every response in the cache once the requests were generated.
    Generated descriptions (the describer) are not supported here: M_v2r items need descriptions in the
    data or the `descriptions` file. Other finegrained_eval arguments (judge, cache, ...) are ignored.
    """
    from frankenscope.evaluate.finegrained import CONDITIONS
    from frankenscope.evaluate.shards import GenerationRequest

    if not models:
        raise FrankenscopeError("finegrained_requests: give at least one model")
    if suite not in SUITES:
        raise FrankenscopeError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    styles = styles_for(models, prompt_style)
    names = _labels(models, labels)
    bench_names = parse_benchmarks(benchmarks)
    if max_image_pixels is None and suite == "paper":
        max_image_pixels = PAPER_MAX_IMAGE_PIXELS
    sets, _, _ = _metric_sets(suite, out, data, n, n_per_task, seed, bench_names,
                              resolve_dataset_prompts(prompts, use_query), from_hub, [])
    if sets.v2r:
        _attach_descriptions(sets, out, descriptions, None, lambda s: None)
    requests: list[GenerationRequest] = []
    for model, style, label in zip(models, styles, names, strict=True):
        spec = GenerationSpec(model=model, backend=backend, system=style.system, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, max_image_pixels=max_image_pixels, dtype=dtype, device=device,
                              device_map=device_map, attn_implementation=attn_implementation, vllm=dict(vllm or {}))
        fingerprint = _fingerprint(model)
        for cond, items in sets.plan().items():
            black, with_desc = CONDITIONS[cond]
            runnable = [style.apply(it, with_description=with_desc) for it in items if not with_desc or it.description]
            if runnable:
                requests.append(GenerationRequest(spec=spec, fingerprint=fingerprint, black_image=black,
                                                  items=runnable, label=f"{label}/{cond}"))
    return requests


def finegrained_eval(models: list[str], out: Path, *, suite: str = "organism", data: Path | None = None,
                     prompt_style: str | list[str] = "plain", labels: list[str] | None = None,
                     n: int | None = None, n_per_task: int = 50, seed: int = 0,
                     benchmarks: str | list[str] | None = None, batch_size: int | str = 16, max_new_tokens: int = 64,
                     max_image_pixels: int | None = None, dtype: str = "float32", device: str | None = None,
                     device_map: str | None = None, attn_implementation: str = "sdpa",
                     cache: Path | None = None, judge: bool = False, describe: bool | None = None,
                     descriptions: Path | None = None, prompts: dict[str, str] | None = None,
                     use_query: bool | None = None, from_hub: bool = False,
                     reference: str | None = None, n_boot: int = 2000, progress: bool = True,
                     echo: Callable[[str], None] = print,
                     generator_factory: GeneratorFactory | None = None, backend: str = "hf",
                     vllm: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-grained evaluation of one or more models; writes the files listed in the module docstring and
    returns the `finegrained.json` document.

    models: HF folders or hub ids, in the order to compare (Base, IN, RL, ...); labels name them in tables
        (default: folder names). prompt_style: one style for all or one per model (list or comma-separated;
        names from prompts.PROMPT_STYLES or .json files). n: items per metric set and per benchmark,
        drawn with `seed` and saved under out/splits (None: all). n_per_task: organism suite size per task.
    benchmarks: paper suite only, dataset keys or "paper" (= MathVista, MathVerse, MathVision, LogicVista).
    max_image_pixels: downscale larger images before the processor (default: none for the organism,
        1280*720 for the paper suite). cache: SQLite file (default out/cache.sqlite).
    dtype, device, device_map ("auto": across the visible GPUs; wins over device), attn_implementation:
        how every model is loaded (`loading.load_model`).
    judge: grade with the LLM judge from FRANKENSCOPE_JUDGE_* (the judge's verdict is the label; a failed
        call leaves the item ungraded). describe: generate missing M_v2r descriptions with that endpoint
        (default: same as judge). descriptions: a file of descriptions to use first.
    prompts: the prompt mode of MathVista ("query": its hint query, the default; "question": question + choices
        + unit, as the reference code) and MathVerse ("query_cot", the default; "query_wo"; "question");
        `use_query` is the older MathVista switch.
    reference: a label whose column the table's other cells are compared to. generator_factory: build the
        generator for (model, style) yourself (API models, tests); default: the `backend`'s generator.
    backend: "hf" (transformers, batched) or "vllm" (`frankenscope[vllm]`; `vllm` holds its engine settings:
        tensor_parallel_size, gpu_memory_utilization, max_model_len, enable_prefix_caching), see
        evaluate/backends.py; the backend is part of every response's cache key.
    """
    _check_inputs(models, suite, n, n_per_task, check_sources=generator_factory is None)
    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    styles, names = styles_for(models, prompt_style), _labels(models, labels)
    bench_names = parse_benchmarks(benchmarks)
    if bench_names and suite != "paper":
        raise FrankenscopeError("benchmarks are read from the paper's datasets: use them with suite 'paper'")
    if max_image_pixels is None and suite == "paper":
        max_image_pixels = PAPER_MAX_IMAGE_PIXELS
    describe = judge if describe is None else describe
    dataset_prompts = resolve_dataset_prompts(prompts, use_query)
    judge_config = None
    if judge or describe:  # read the endpoint settings first, so a missing variable fails before any work
        from frankenscope.evaluate.judge import JudgeConfig

        judge_config = JudgeConfig.from_env()
    specs = [GenerationSpec(model=m, backend=backend, system=st.system, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, max_image_pixels=max_image_pixels, dtype=dtype, device=device,
                            device_map=device_map, attn_implementation=attn_implementation, vllm=dict(vllm or {}),
                            progress=progress) for m, st in zip(models, styles, strict=True)]
    split_files: list[str] = []
    sets, data_path, bench_label = _metric_sets(suite, out, data, n, n_per_task, seed, bench_names, dataset_prompts,
                                                from_hub, split_files)
    store = ResponseCache(cache or out / "cache.sqlite")
    try:
        client = judge_fn = describer = None
        if judge_config is not None:
            from frankenscope.evaluate.judge import ChatClient, Describer, LLMJudge

            client = ChatClient(judge_config, store)
            judge_fn = LLMJudge(client).grade if judge else None
            describer = Describer(client, max_image_pixels) if describe else None
        desc_info = _attach_descriptions(sets, out, descriptions, describer, echo) if sets.v2r else {}
        model_docs, inds, failed_models = [], [], []
        inputs = {"suite": suite, "data": str(data_path)}
        for spec, style, label in zip(specs, styles, names, strict=True):
            doc, ind, failure = _evaluate_model(spec, style, label, out, sets, generator_factory, store, judge_fn,
                                                seed, n_boot, inputs, echo)
            model_docs.append(doc)
            inds.append(ind)
            failed_models += [failure] if failure else []
        comparisons = [{"a": names[i], "b": names[i + 1], "metrics": compare_models(inds[i], inds[i + 1], seed, n_boot)}
                       for i in range(len(models) - 1)]
        payload = {
            "suite": suite, "data": str(data_path), "benchmark_label": bench_label,
            "settings": {"n": n, "n_per_task": n_per_task if suite == "organism" else None, "seed": seed,
                         "grader": grader_identity(),
                         "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                         "max_image_pixels": max_image_pixels, "dtype": dtype,
                         "dataset_prompts": dataset_prompts if suite == "paper" else None,
                         "device": device, "device_map": device_map, "attn_implementation": attn_implementation,
                         "benchmarks": bench_names, "n_boot": n_boot, "cache": str(store.path),
                         "judge": judge_config.public() if judge_config and judge else None,
                         "describer": judge_config.public() if judge_config and describe else None},
            "sets": {"definitions": sets.definitions, "ids": sets.ids(), "split_files": split_files},
            "descriptions": desc_info,
            "judge_stats": asdict(client.stats) if client is not None else None,
            "models": model_docs,
            "comparisons": comparisons,
            "wall_s": round(time.time() - t_start, 2),
        }
    finally:
        store.close()
    path = write_result(out / "finegrained.json", kind="finegrained", schema_version=FINEGRAINED_SCHEMA_VERSION,
                        payload=payload, seed=seed, inputs={"models": models, "labels": names, **inputs})
    fault_point("finegrained:after_result")
    doc = json.loads(path.read_text())
    write_report(doc, out, reference)
    echo(format_table(doc, reference))
    echo(f"wrote {path}, {out / 'table.md'}, {out / 'finegrained.png'}")
    if failed_models:
        raise FrankenscopeRuntimeError("; ".join(failed_models) + " (results were written with those items "
                                       "ungraded; rerun when the judge works: its successful verdicts are cached)")
    return doc


def _check_inputs(models: list[str], suite: str, n: int | None, n_per_task: int, check_sources: bool) -> None:
    """Refuse bad arguments, and every unreadable model source, before anything is written or loaded."""
    if not models:
        raise FrankenscopeError("finegrained_eval: give at least one model")
    if suite not in SUITES:
        raise FrankenscopeError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    for name, value in (("n", n), ("n_per_task", n_per_task)):
        if value is not None and value < 1:
            raise FrankenscopeError(f"{name} must be >= 1, got {value}")
    if check_sources:
        from frankenscope.loading import check_model_source

        for model in models:
            check_model_source(model)


def _metric_sets(suite: str, out: Path, data: Path | None, n: int | None, n_per_task: int, seed: int,
                 bench_names: list[str], dataset_prompts: dict[str, str], from_hub: bool,
                 split_files: list[str]) -> tuple[MetricSets, Path, str]:
    """(the checked metric sets, the data path they came from, the benchmark row's label); the subsample
    files written go to `split_files`."""
    if suite == "organism":
        sets, data_path = suite_provider(suite).metric_sets(
            out, data, n_per_task, seed, lambda items, name: _split(items, n, seed, out, name, split_files))
        bench_label = "Suite accuracy (all items)"
    else:
        sets, data_path = paper_sets(out, data, n, seed, bench_names, dataset_prompts, from_hub, split_files)
        bench_label = "Average benchmark accuracy"
    sets.check()
    if not (sets.vis or sets.v2r or sets.rea):
        raise FrankenscopeError(f"{data_path}: no items for any metric (need items with categories "
                                "perception/v2r with images, or text items)")
    return sets, data_path, bench_label


def _evaluate_model(spec: GenerationSpec, style: PromptStyle, label: str, out: Path, sets: MetricSets,
                    factory: GeneratorFactory | None, store: ResponseCache, judge_fn: Any, seed: int, n_boot: int,
                    inputs: dict[str, str], echo: Callable[[str], None],
                    ) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Run one model through the four conditions (cached), grade, and write OUT/models/<label>.json.
    Returns (its entry in finegrained.json, its per-metric indicators, a judge-failure error or None).
    The generator is `spec.build()`, or `factory(model, style)` (recorded as generator "custom")."""
    t0, model = time.time(), spec.model
    echo(f"== {label} ({model}), prompt style {style.name} ==")
    settings = spec.settings() if factory is None else {**spec.settings(), "generator": "custom"}
    fingerprint = _fingerprint(model)
    make = spec.build if factory is None else (lambda: factory(model, style))
    cached = CachedGenerator(_LazyGenerator(make), store, fingerprint, settings)
    records = run_conditions(cached, style, sets, judge_fn, log=echo)
    failure = _report_judge_failures(records, label, judge_fn is not None, echo)
    summary = model_metrics(records, sets, seed=seed, n_boot=n_boot)
    records_file = out / "models" / f"{safe_filename(label)}.json"
    header = {"label": label, "model_source": model, "model_fingerprint": fingerprint,
              "prompt_style": style.to_dict(), "generation": settings}
    write_result(records_file, kind="finegrained-model", schema_version=FINEGRAINED_SCHEMA_VERSION,
                 payload={**header, **summary, "records": [asdict(r) for r in records]}, seed=seed,
                 inputs={"model_source": model, "model_fingerprint": fingerprint, **inputs})
    echo(f"  generated {cached.misses}, cached {cached.hits}, {time.time() - t0:.1f}s")
    doc = {**header, **summary, "cache": {"hits": cached.hits, "misses": cached.misses, "generator_calls": cached.calls},
           "records_file": str(records_file.relative_to(out)), "wall_s": round(time.time() - t0, 2)}
    return doc, indicators(labels_by_condition(records), sets), failure


def _report_judge_failures(records: list[Any], label: str, judged: bool, echo: Callable[[str], None]) -> str | None:
    """Warn how many of a model's responses the judge failed to grade; return an error text when it graded
    none of them (which would otherwise leave every metric at N = 0)."""
    if not judged:
        return None
    asked = [r for r in records if r.response is not None]
    failed = [r for r in asked if r.judge_correct is None]
    if not failed:
        return None
    last = failed[-1].error or "request failed"
    echo(f"  warning: the judge failed on {len(failed)} of {len(asked)} responses of {label}; they are "
         f"ungraded (last error: {last})")
    return f"the judge graded none of the {len(asked)} responses of {label} (last error: {last})" \
        if len(failed) == len(asked) else None


# --------------------------------------------------------------------------- per-task accuracy (one model)


def accuracy_eval(model: str, out: Path, *, suite: str = "organism", data: Path | None = None,
                  tasks: str | None = None, n: int | None = None, batch_size: int | str = 16, max_new_tokens: int = 64,
                  seed: int = 0, dtype: str = "float32", device: str | None = None, device_map: str | None = None,
                  attn_implementation: str = "sdpa", prompt_style: str = "plain", cache: Path | None = None,
                  progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Per-task accuracy of one model (`frankenscope eval MODEL --metrics accuracy`); writes OUT/results.json
    and returns its summary.

    data: a suite folder, task folder or jsonl (default: the organism suite drawn into OUT/suite). Prompts
    are rendered through `prompt_style`. Responses go through the response cache (default OUT/cache.sqlite),
    committed in chunks, so an interrupted run resumes where it stopped and a rerun of a finished one loads
    no model.
    """
    from frankenscope.data.io import first_n_per_task, load_items
    from frankenscope.evaluate.prompts import get_prompt_style
    from frankenscope.evaluate.runner import evaluate, write_eval_result
    from frankenscope.evaluate.runner import format_table as accuracy_table
    from frankenscope.loading import check_model_source

    if n is not None and n < 1:
        raise FrankenscopeError(f"--n must be >= 1, got {n}")
    batch_size = parse_batch_size(batch_size)
    if max_new_tokens < 1:
        raise FrankenscopeError(f"--max-new-tokens must be >= 1 (got {max_new_tokens})")
    if data is None and suite != "organism":
        raise FrankenscopeError(f"unknown suite {suite!r}; use 'organism' or pass --data PATH")
    style = get_prompt_style(prompt_style)
    check_model_source(model)
    if data is not None:
        items = load_items(data)
    else:
        data = out / "suite"
        try:
            current = json.loads((data / "suite.json").read_text())
        except (OSError, ValueError):
            current = {}
        if not isinstance(current, dict) or current.get("seed") != seed:
                suite_provider(suite).write_suite(data, seed=seed)
        items = load_items(data)
    if tasks:
        wanted = {t.strip() for t in tasks.split(",")}
        unknown = wanted - {it.task for it in items}
        if unknown:
            raise FrankenscopeError(f"--tasks names {sorted(unknown)}, not in {data}")
        items = [it for it in items if it.task in wanted]
    items = first_n_per_task(items, n)
    spec = GenerationSpec(model=model, system=style.system, max_new_tokens=max_new_tokens, batch_size=batch_size,
                          dtype=dtype, device=device, device_map=device_map,
                          attn_implementation=attn_implementation, progress=progress)
    settings = spec.settings()
    fp = _fingerprint(model)
    t0 = time.time()
    with ResponseCache(cache or out / "cache.sqlite") as store:
        cached = CachedGenerator(_LazyGenerator(spec.build), store, fp, settings,
                                 chunk_size=(batch_size if isinstance(batch_size, int) else AUTO_CPU_BATCH) * 4)
        result = evaluate([style.apply(it) for it in items], cached, seed=seed)
    run = {**settings, "greedy": True, "grader": grader_identity(), "prompt_style": style.to_dict(),
           "data": str(data), "n_items": len(items), "wall_s": round(time.time() - t0, 2),
           "device": device, "device_map": device_map, "attn_implementation": attn_implementation,
           "cache": {"path": str(cache or out / "cache.sqlite"), "hits": cached.hits, "misses": cached.misses}}
    write_eval_result(result, out, model_source=model, model_fingerprint=fp, seed=seed, settings=run)
    echo(accuracy_table(result))
    echo(f"generated {cached.misses}, cached {cached.hits}")
    return result.summary()
