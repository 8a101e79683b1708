"""`frankenscope study CONFIG --plan`: the work of every unit and GPU-hour estimates, without running anything.

Work is counted from the config alone (no data or weights are read beyond local config.json / safetensors
headers): per unit the models, conditions, items, generations, expected generated tokens and, for the
probes, sweep passes. Time is then estimated from `THROUGHPUTS`, per GPU and for a 7B model (scaled
linearly with the parameter count for other sizes). No GPU throughput of frankenscope has been measured
yet (benchmarks/gpu_check.py measures them on a GPU machine): every entry says whether it is measured or
an assumption, and the plan prints that next to the numbers. Replace an assumption with a measured number
by editing its entry (value and source).

Time model (all per GPU):
- generation, HF backend: a batch decodes for as many steps as its longest response (`HF_LONGEST_FACTOR` x
  the mean, capped at max_new_tokens), each step costs `hf_decode_step_s`; prompts add prompt tokens /
  `hf_prefill_tok_s`.
- generation, vLLM backend: generated tokens / `vllm_generate_tok_s` + prompt tokens / `vllm_prefill_tok_s`.
- visual-token swap sweep (fast engine): per pair, `max_new_tokens` decode steps of the batch of all layer
  variants plus a fixed `swap_overhead_s` for the source, clean and per-layer text passes.
- layer skipping: per item one batch of 1 + L rows decoding the response (HF step model).
- attention: the IN and RL responses (HF, probe batch 16) plus one teacher-forced eager pass per item and
  model (`eager_pass_s`).
- diff and merges stream weights on the CPU (no GPU time; listed with their bytes).
Wall-clock on N GPUs schedules the indivisible tasks (evaluation shards of `executor.shard_items`; probe shards
of `executor.probe_shard_items` items per probed model, whole batches of the probe's own: one item per layer-
skip batch of 29 rows on 28 layers, 16 attention items, one swap pair; the attention shards on two models'
GPUs) longest first onto N GPUs. A probe shard's load of its model is not counted.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from frankenscope.study.config import StudyConfig


@dataclass(frozen=True)
class Throughput:
    """One number of the time model, for a 7B model in bf16 on one H100/H200-class GPU."""

    value: float
    unit: str
    source: str  # "measured: <where, when>" or "assumption: <why>"

    @property
    def measured(self) -> bool:
        return self.source.startswith("measured")


#: The time model's numbers (see the module docstring). None measured yet: gpu_check.py has not run on a GPU.
THROUGHPUTS: dict[str, Throughput] = {
    "hf_decode_step_s": Throughput(0.030, "s per decode step (batch <= 32)",
                                   "assumption: 7B bf16 decode is memory-bound, ~15 GB of weights read per step "
                                   "at ~0.5 of an H100's 3.3 TB/s, plus the HF generate loop's overhead"),
    "hf_prefill_tok_s": Throughput(8000.0, "prompt tokens/s", "assumption: batched HF prefill of 7B, sdpa"),
    "vllm_generate_tok_s": Throughput(2500.0, "generated tokens/s",
                                      "assumption: vLLM continuous batching of 7B with hundreds of sequences in "
                                      "flight, the order of magnitude its users report on one H100"),
    "vllm_prefill_tok_s": Throughput(20000.0, "prompt tokens/s", "assumption: vLLM chunked prefill of 7B"),
    "swap_overhead_s": Throughput(0.5, "s per pair",
                                  "assumption: source + clean target pass + text-after-image passes of 28 layer "
                                  "variants; on the CPU (2 cores, fp32, random 28-layer model) the whole sweep "
                                  "with 8-token decoding measured 0.97 s per pair (docs/analyses.md)"),
    "eager_pass_s": Throughput(0.6, "s per item and model", "assumption: one eager teacher-forced pass over "
                                                            "~3,300 tokens with attention weights of every layer"),
}
#: Generated tokens of an average response when the budget is large (chains of thought of RL-trained 7B
#: models on math benchmarks run ~500-2,000 tokens): an assumption, min(max_new_tokens, this).
MEAN_RESPONSE_TOKENS = 1000
#: The longest response of an HF batch, as a multiple of the mean (an assumption; capped at max_new_tokens).
HF_LONGEST_FACTOR = 3.0
#: Prompt tokens of an item: its text plus one image downscaled to 1280x720 (Qwen2.5-VL: 28 px patches
#: merged 2x2 -> (1280/28) x (720/28) ~ 1,170 tokens; the organism's 112 px images: 16).
TEXT_PROMPT_TOKENS = 200
IMAGE_TOKENS = {"paper": 1170, "organism": 16}
#: Items of the paper's datasets (dataset cards; MathVista testmini split by metadata.category).
DATASET_ITEMS = {"mathvista_general_vqa": 460, "mathvista_math_vqa": 540, "math500": 500, "mathvista": 1000,
                 "mathverse": 3940, "mathvision": 3040, "logicvista": 448, "gsm8k": 1319}
#: Decoder layers and parameters of known sizes (released Qwen2.5-VL configs), by the size in a model's name.
KNOWN_SIZES = {"3b": (36, 3.75e9), "7b": (28, 8.29e9), "32b": (64, 33.5e9), "72b": (80, 73.4e9)}
REFERENCE_PARAMS = 8.29e9  # THROUGHPUTS are for this size (Qwen2.5-VL-7B with its vision tower)
ORGANISM_TASKS = {"perception": 5, "v2r": 2, "text": 1}


@dataclass
class Task:
    """An indivisible piece of work: GPU-seconds on `gpus` GPUs held at once."""

    name: str
    gpu_s: float
    gpus: int = 1


@dataclass
class UnitPlan:
    unit: str
    models: int
    work: str                 # items x conditions x models, sweeps (human-readable)
    generations: int = 0      # responses generated (0 for probes counted in passes)
    tokens: int = 0           # expected generated tokens
    passes: int = 0           # probe sweep passes (decoded variants)
    tasks: list[Task] = field(default_factory=list)
    note: str = ""

    @property
    def gpu_hours(self) -> float:
        return sum(t.gpu_s * t.gpus for t in self.tasks) / 3600


@dataclass
class StudyPlan:
    name: str
    backend: str
    units: list[UnitPlan]
    model_params: float
    layers: int

    @property
    def gpu_hours(self) -> float:
        return sum(u.gpu_hours for u in self.units)

    def wall_hours(self, n_gpus: int) -> float:
        """Longest-first schedule of every task onto n_gpus GPUs (a task on g GPUs takes the g least busy)."""
        if n_gpus < 1:
            raise ValueError("n_gpus must be >= 1")
        load = [0.0] * n_gpus
        for t in sorted((t for u in self.units for t in u.tasks), key=lambda t: -t.gpu_s):
            g = min(t.gpus, n_gpus)
            slots = sorted(range(n_gpus), key=lambda i: load[i])[:g]
            start = max(load[i] for i in slots)
            for i in slots:
                load[i] = start + t.gpu_s * t.gpus / g
        return max(load) / 3600


# --------------------------------------------------------------------------- model size


def model_size(path: str) -> tuple[int, float, str]:
    """(decoder layers, parameters, how they were found) of a model: a local folder's config.json and
    safetensors headers, else the size in a hub id's name (KNOWN_SIZES), else 7B (said so)."""
    folder = Path(path)
    if (folder / "config.json").is_file():
        cfg = json.loads((folder / "config.json").read_text())
        layers = (cfg.get("text_config") or {}).get("num_hidden_layers") or cfg.get("num_hidden_layers") or 28
        from frankenscope.study.executors import param_count

        params = param_count(folder)
        return int(layers), float(params or REFERENCE_PARAMS), "local config and weights"
    m = re.search(r"(\d+)\s*[bB]\b", path.replace("-", " ").replace("_", " "))
    if m and f"{m.group(1)}b" in KNOWN_SIZES:
        layers, params = KNOWN_SIZES[f"{m.group(1)}b"]
        return layers, params, f"size {m.group(1)}B in the name"
    layers, params = KNOWN_SIZES["7b"]
    return layers, params, "unknown size: assumed 7B"


# --------------------------------------------------------------------------- counting


def _set_sizes(cfg: StudyConfig) -> dict[str, int]:
    """Items per metric set (vis, v2r, rea) and per benchmark of the evaluation, as the config draws them."""
    ev = cfg.evaluation

    def take(size: int) -> int:
        return size if ev.n is None else min(ev.n, size)

    if ev.suite == "organism":
        per = ev.n_per_task
        return {"vis": take(per * (ORGANISM_TASKS["perception"] + ORGANISM_TASKS["v2r"])),
                "v2r": take(per * ORGANISM_TASKS["v2r"]), "rea": take(per * ORGANISM_TASKS["text"])}
    sizes = {"vis": take(DATASET_ITEMS["mathvista_general_vqa"]), "v2r": take(DATASET_ITEMS["mathvista_math_vqa"]),
             "rea": take(DATASET_ITEMS["math500"])}
    from frankenscope.evaluate.run import parse_benchmarks

    for b in parse_benchmarks(ev.benchmarks):
        sizes[f"bench:{b}"] = take(DATASET_ITEMS.get(b, 1000))
    return sizes


def condition_items(cfg: StudyConfig) -> dict[str, int]:
    """Items per condition (`MetricSets.plan`): image = vis + v2r + image benchmarks, less the MathVista benchmark
    items that are also in vis or v2r (the expected overlap of independent draws from testmini: b x (vis + v2r)
    / 1000, exact when nothing is subsampled), black = vis, black_desc = v2r, text = rea (+ text benchmarks: none
    of the paper's benchmarks is text-only)."""
    s = _set_sizes(cfg)
    bench = sum(v for k, v in s.items() if k.startswith("bench:"))
    if cfg.evaluation.suite == "organism":  # the organism's v2r items are among vis; the suite row pools them
        return {"image": s["vis"], "black": s["vis"], "black_desc": s["v2r"], "text": s["rea"]}
    overlap = round(s.get("bench:mathvista", 0) * (s["vis"] + s["v2r"]) / DATASET_ITEMS["mathvista"])
    return {"image": s["vis"] + s["v2r"] + bench - overlap, "black": s["vis"], "black_desc": s["v2r"], "text": s["rea"]}


def mean_tokens(max_new_tokens: int) -> int:
    return min(max_new_tokens, MEAN_RESPONSE_TOKENS)


def _scale(params: float) -> float:
    return params / REFERENCE_PARAMS


def generation_seconds(n: int, image: bool, max_new_tokens: int, batch: int, backend: str, params: float,
                       image_tokens: int) -> float:
    """GPU-seconds to generate n responses (the time model of the module docstring)."""
    tp = THROUGHPUTS
    mean = mean_tokens(max_new_tokens)
    prompt = n * (TEXT_PROMPT_TOKENS + (image_tokens if image else 0))
    if backend == "vllm":
        s = n * mean / tp["vllm_generate_tok_s"].value + prompt / tp["vllm_prefill_tok_s"].value
    else:
        steps = math.ceil(n / batch) * min(max_new_tokens, HF_LONGEST_FACTOR * mean)
        s = steps * tp["hf_decode_step_s"].value + prompt / tp["hf_prefill_tok_s"].value
    return s * _scale(params)


def _eval_unit(cfg: StudyConfig, name: str, labels: list[str], params: float, image_tokens: int) -> UnitPlan:
    ev = cfg.evaluation
    conds = condition_items(cfg)
    per_model = sum(conds.values())
    shard = max(1, cfg.executor.shard_items)
    tasks = []
    for label in labels:
        for cond, n in conds.items():
            for s in range(0, n, shard):
                k = min(shard, n - s)
                tasks.append(Task(f"{name}:{label}:{cond}:{s}", generation_seconds(
                    k, cond != "text", ev.max_new_tokens, _batch(ev.batch_size), ev.backend, params, image_tokens)))
    work = (f"{per_model} items x conditions ({' + '.join(f'{c} {n}' for c, n in conds.items())}) x "
            f"{len(labels)} models")
    return UnitPlan(name, len(labels), work, generations=per_model * len(labels),
                    tokens=per_model * len(labels) * mean_tokens(ev.max_new_tokens), tasks=tasks)


def probe_shard_sizes(n: int, shard_items: int, batch: int) -> list[int]:
    """Items per shard of a probe over n items in batches of `batch` (`probes.shards.plan_probe_shards`: whole
    batches, at most `shard_items` items unless one batch is larger)."""
    size = max(batch, shard_items // batch * batch)
    return [min(size, n - s) for s in range(0, n, size)]


def _probe_units(cfg: StudyConfig, layers: int, params: float, image_tokens: int) -> list[UnitPlan]:
    pr, tp = cfg.probes, THROUGHPUTS
    step = tp["hf_decode_step_s"].value * _scale(params)
    paper = cfg.evaluation.suite == "paper"
    n_pairs = pr.n or 50
    reasoning_tasks = len((pr.reasoning_dataset or "a,b,c").split(",")) if paper or pr.reasoning_dataset else 3
    n_reason = (pr.n or 50) * reasoning_tasks
    n_att = (pr.n or 50) * (1 if pr.attention_dataset else 2)
    models = len(pr.models)
    swap_s = n_pairs * (pr.max_new_tokens * step + tp["swap_overhead_s"].value * _scale(params))
    skip_tokens = min(pr.skip_max_new_tokens, HF_LONGEST_FACTOR * mean_tokens(pr.skip_max_new_tokens))
    skip_s = n_reason * (skip_tokens * step + (TEXT_PROMPT_TOKENS * (layers + 1)) / tp["hf_prefill_tok_s"].value)
    att_gen = 2 * generation_seconds(n_att, True, pr.attention_max_new_tokens, 16, "hf", params, image_tokens)
    att_s = att_gen + 2 * n_att * tp["eager_pass_s"].value * _scale(params)
    shard = max(1, cfg.executor.probe_shard_items)
    skip_batch = max(1, 32 // (layers + 1))  # skip.default_batch_items
    att_shards = probe_shard_sizes(n_att, shard, 16)
    swap_shards = probe_shard_sizes(n_pairs, shard, 1)
    skip_shards = probe_shard_sizes(n_reason, shard, skip_batch)
    return [
        UnitPlan("attention", 2, f"{n_att} items x 2 models (IN, RL): generate + 1 eager pass",
                 generations=2 * n_att, tokens=2 * n_att * mean_tokens(pr.attention_max_new_tokens),
                 passes=2 * n_att, tasks=[Task(f"attention:{i}", att_s / 2 * k / n_att, gpus=2)
                                          for i, k in enumerate(att_shards)]),
        UnitPlan("localize-vision", models, f"{n_pairs} pairs x {layers} layers x {models} models ({pr.swap_mode})",
                 tokens=n_pairs * layers * models * pr.max_new_tokens, passes=n_pairs * layers * models,
                 tasks=[Task(f"localize-vision:{m}:{i}", swap_s * k / n_pairs) for m in pr.models
                        for i, k in enumerate(swap_shards)]),
        UnitPlan("localize-reasoning", models, f"{n_reason} items x ({layers} layers + baseline) x {models} models",
                 tokens=int(n_reason * (layers + 1) * models * mean_tokens(pr.skip_max_new_tokens)),
                 passes=n_reason * (layers + 1) * models,
                 tasks=[Task(f"localize-reasoning:{m}:{i}", skip_s * k / n_reason) for m in pr.models
                        for i, k in enumerate(skip_shards)]),
    ]


def study_plan(cfg: StudyConfig, config_path: str | Path | None = None) -> StudyPlan:
    """The plan of a study (see the module docstring); `config_path` only names it."""
    layers, params, _ = model_size(cfg.base.path)
    image_tokens = IMAGE_TOKENS[cfg.evaluation.suite]
    units: list[UnitPlan] = []
    if cfg.validate_.enabled:
        v = cfg.validate_
        units.append(UnitPlan("validate", 2, f"{v.n} items per task x {len(v.checks)} checks on planted copies",
                              tasks=[Task("validate", 20 * v.n * len(v.checks) * v.max_new_tokens
                                          * THROUGHPUTS["hf_decode_step_s"].value * _scale(params))],
                              note="rough: ~20 decoded variants per item and check"))
    units.append(_eval_unit(cfg, "finegrained", ["Base", "IN", "RL"], params, image_tokens))
    units += _probe_units(cfg, layers, params, image_tokens)
    units.append(UnitPlan("diff", 3, "3 checkpoints streamed tensor by tensor (CPU)", note="no GPU time"))
    hy = _eval_unit(cfg, "hybrids", [f"H{i}" for i in range(6)], params, image_tokens)
    hy.work += " (IN and RL answers come from the finegrained unit's cache); 6 merges streamed on the CPU"
    units.append(hy)
    if cfg.organism and cfg.freeze.enabled:
        seeds = len(cfg.freeze.seeds or [cfg.seed])
        fr = _eval_unit(cfg, "freeze", [f"R{i}" for i in range((len(cfg.freeze.regions) + 1) * seeds)], params,
                        image_tokens)
        fr.note = "plus the organism's RL re-runs on the CPU"
        units.append(fr)
    return StudyPlan(cfg.name, cfg.evaluation.backend, units, params, layers)


# --------------------------------------------------------------------------- output


def _fmt_h(h: float) -> str:
    return f"{h:,.2f}" if h < 10 else f"{h:,.0f}"


def format_plan(plan: StudyPlan, gpu_counts: list[int]) -> str:
    """The plan as markdown: per unit work and GPU-hours, the totals on each GPU count, and the assumptions."""
    lines = [f"# Work plan: {plan.name} (backend {plan.backend}; {plan.layers} layers, "
             f"{plan.model_params / 1e9:.1f}B parameters per model)", "",
             "| unit | work | generations | expected generated tokens | sweep passes | GPU-hours |",
             "|---|---|---:|---:|---:|---:|"]
    for u in plan.units:
        lines.append(f"| {u.unit} | {u.work}{f' ({u.note})' if u.note else ''} | {u.generations:,} | {u.tokens:,} | "
                     f"{u.passes:,} | {_fmt_h(u.gpu_hours)} |")
    lines += ["", f"Total: {_fmt_h(plan.gpu_hours)} GPU-hours. Wall-clock estimate: " + ", ".join(
        f"{n} GPU{'s' if n > 1 else ''} {_fmt_h(plan.wall_hours(n))} h" for n in gpu_counts) + ".", ""]
    measured = [k for k, t in THROUGHPUTS.items() if t.measured]
    lines.append("Estimates, not measurements. Derived from: " + (
        f"measured {', '.join(measured)}; " if measured else "no measured GPU throughput yet (run "
        "benchmarks/gpu_check.py on a GPU); ") + f"mean response min(max_new_tokens, {MEAN_RESPONSE_TOKENS}) tokens "
        f"and an HF batch as long as {HF_LONGEST_FACTOR:g}x the mean (assumptions); "
        + "; ".join(f"{k} = {t.value:g} {t.unit} ({t.source.split(':')[0]})" for k, t in THROUGHPUTS.items()) + ".")
    return "\n".join(lines)


#: What `evaluation.batch_size: auto` is assumed to pick on a GPU for the estimate (it depends on free memory).
AUTO_BATCH_ESTIMATE = 64


def _batch(batch_size: int | str) -> int:
    return batch_size if isinstance(batch_size, int) else AUTO_BATCH_ESTIMATE
