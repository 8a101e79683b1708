"""The study config (YAML): which models, how to prompt them, where they run, and every analysis's settings.

Everything is checked when the file is loaded, naming the field: prompt styles (a built-in name or a
style file, relative paths read from the config's folder), the partition, dtype, attention
implementation and benchmark names. Placement (`device`, `device_map`, `dtype`,
`attn_implementation`) reaches every model load of the study: evaluation, probes, hybrids.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from frankenscope.errors import FrankenscopeError

if TYPE_CHECKING:
    from frankenscope.weights.partition import Partition

#: dtype names `loading.resolve_dtype` accepts (kept here so the config loads without torch; a test checks they agree)
DtypeName = Literal["float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "float64", "auto"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """One checkpoint: an HF folder or hub id, and the prompt style it was trained with."""

    path: str
    prompt_style: str = "plain"      # a built-in style name or a .json style file (see evaluate/prompts.py)


class VLLMSettings(_Strict):
    """vLLM engine settings of the `vllm` generation backend (see evaluate/backends.py)."""

    tensor_parallel_size: int = Field(1, ge=1)       # GPUs one engine spans
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)  # fraction of each GPU the engine may take
    max_model_len: int | None = Field(None, ge=1)    # prompt + response tokens; None: the model's own limit
    enable_prefix_caching: bool = True               # reuse the KV of shared prompt prefixes (same answers)


class EvalSettings(_Strict):
    suite: Literal["organism", "paper"] = "organism"
    data: str | None = None          # a suite folder, or the folder with the paper datasets
    n: int | None = Field(None, ge=1)  # items per metric set (deterministic subsample, saved as an id list)
    n_per_task: int = Field(50, ge=1)  # organism suite: items drawn per task
    max_new_tokens: int = Field(80, ge=1)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 32  # auto: from free GPU memory once a model is loaded (local executor)
    benchmarks: list[str] = Field(default_factory=list)  # e.g. [mathvista, mathverse, mathvision, logicvista]
    mathvista_prompt: Literal["query", "question"] = "query"  # hint query, or question + choices (reference code)
    mathverse_prompt: Literal["query_cot", "query_wo", "question"] = "query_cot"
    backend: Literal["hf", "vllm"] = "hf"  # generation engine: transformers (default) or vLLM (`frankenscope[vllm]`)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)

    def dataset_prompts(self) -> dict[str, str]:
        return {"mathvista": self.mathvista_prompt, "mathverse": self.mathverse_prompt}

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, v: list[str]) -> list[str]:
        from frankenscope.data.datasets import DATASETS

        for b in v:
            if b.lower() != "paper" and b.lower().replace("-", "").replace("_", "") not in DATASETS:
                raise ValueError(f"unknown benchmark {b!r}; choose from {', '.join(DATASETS)} or 'paper'")
        return v


class ProbeSettings(_Strict):
    pairs: str | None = None         # probe pairs (jsonl / folder / paper layout); None: the organism's
    swap_mode: Literal["cumulative", "single"] = "cumulative"
    layers: str | None = None        # e.g. "0-27"; None: all
    max_new_tokens: int = Field(16, ge=1)  # visual-token swapping: short perception answers
    skip_max_new_tokens: int = Field(80, ge=1)       # layer skipping: a full reasoning response
    attention_max_new_tokens: int = Field(80, ge=1)  # attention: the response whose attention is measured
    reasoning_dataset: str | None = None  # layer skipping; None: the organism's items; e.g. "gsm8k,math500"
    attention_dataset: str | None = None  # attention IN vs RL (items with images); None: organism; e.g. mathvista
    data: str | None = None               # folder of the paper datasets named above (default: evaluation.data)
    n: int | None = Field(None, ge=1)
    models: list[Literal["base", "in", "rl"]] = Field(default_factory=lambda: ["base", "in", "rl"])


class FreezeSettings(_Strict):
    """RL re-runs from IN with one region frozen, next to an unfrozen control re-run on the same path.

    regions: the frozen regions (P7 decides on early and late; add "mid" for Table 3's third row: one
    more parallel RL run, about 1.6 min of the small demo on 2 cores).
    seeds: RL seeds; every region and the control run once per seed (None: the study's seed). With two
    or more, P7's interval includes run-to-run variance; each seed adds len(regions) + 1 RL runs.
    """

    enabled: bool = True             # only the organism has a built-in trainer
    regions: list[str] = Field(default_factory=lambda: ["early", "late"])
    seeds: list[int] | None = None


class ValidateSettings(_Strict):
    """The planted-effect checks (`frankenscope validate`) as the study's first unit, on one of its models;
    the transfer check uses the study's IN and RL (about half a minute on the small organism)."""

    enabled: bool = True
    model: Literal["base", "in", "rl"] = "base"  # the model the probes are read on (the paper probes Base)
    checks: list[Literal["blind", "dead_layer", "planted_update", "transfer", "attention", "frozen_transfer"]] = Field(
        default_factory=lambda: ["blind", "dead_layer", "planted_update", "transfer", "attention"])
    # items (pairs) per task and decoding budget: on the small organism IN and RL answer alike on nearly every
    # short item, so fewer items or tokens leave the transfer check without power ("inconclusive")
    n: int = Field(6, ge=1)
    max_new_tokens: int = Field(48, ge=1)


class ExecutorSettings(_Strict):
    """Where the units run (see study/executors.py). Not part of any unit's settings: the results are the
    same on either executor.

    kind: "local" (one process, units one after another; needs no Ray) or "ray" (units and evaluation
    shards as Ray tasks). address: the Ray cluster ("auto", "ray://HOST:PORT"); None starts a local one
    with `num_cpus` CPUs. gpus_per_model: GPUs a task reserves per model it loads; None derives it from
    the placement (0 on the CPU) and the weights' size in `dtype` against `gpu_memory_gb`.
    shard_items: responses per evaluation shard (rounded up to whole generation chunks).
    probe_shard_items: items (swap pairs) per probe shard: each probe of localize-vision, localize-reasoning and
    attention runs as one Ray task per shard of this many consecutive items, never splitting a batch of the
    probe's own (probes/shards.py); the local executor runs each probe whole.
    max_retries: how often Ray reruns a task whose worker died.
    vllm_pipeline: with the vllm backend, "shards" (one vLLM engine per shard task) or "ray-data" (the shards
        of one model through one Ray Data LLM pipeline of engine replicas; evaluate/ray_data.py).
    """

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    gpus_per_model: float | None = Field(None, ge=0)
    gpu_memory_gb: float = Field(80.0, gt=0)
    shard_items: int = Field(256, ge=1)
    probe_shard_items: int = Field(64, ge=1)
    max_retries: int = Field(3, ge=0)
    vllm_pipeline: Literal["shards", "ray-data"] = "shards"


class StudyConfig(_Strict):
    """Everything a study runs; recorded verbatim in every result file of the study."""

    name: str
    base: ModelSpec
    in_: ModelSpec = Field(alias="in")
    rl: ModelSpec
    organism: bool = False           # the models are the built-in organism (enables RL re-runs)
    organism_preset: str | None = None
    partition: str = "thirds"
    non_layer_from: Literal["early", "IN", "RL"] = "early"
    dtype: DtypeName = "float32"
    device: str | None = None        # e.g. "cuda:0": the whole model on one device
    device_map: str | None = None    # e.g. "auto": spread over the visible GPUs (wins over device)
    attn_implementation: AttnImplementation = "sdpa"  # the attention probe always uses eager (it needs weights)
    seed: int = 0
    evaluation: EvalSettings = Field(default_factory=EvalSettings)
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)
    validate_: ValidateSettings = Field(default_factory=ValidateSettings, alias="validate")
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def models(self) -> dict[str, ModelSpec]:
        return {"base": self.base, "in": self.in_, "rl": self.rl}

    def placement(self) -> dict[str, str | None]:
        """The keyword arguments of every model load: dtype, device, device_map, attn_implementation."""
        return {"dtype": self.dtype, "device": self.device, "device_map": self.device_map,
                "attn_implementation": self.attn_implementation}

    @property
    def partition_parsed(self) -> Partition:
        """The `partition` field as the Partition every analysis takes (parsed and checked on load)."""
        from frankenscope.weights.partition import Partition

        return Partition.parse(self.partition)

    def generation_backend(self) -> dict[str, object]:
        """The keyword arguments that choose the evaluation's generation backend (`finegrained_eval`)."""
        return {"backend": self.evaluation.backend, "vllm": self.evaluation.vllm.model_dump()}

    @field_validator("partition")
    @classmethod
    def _valid_partition(cls, v: str) -> str:
        _check_partition(v)
        return v


def _check_partition(spec: str) -> None:
    """Raise ValueError when a partition spec cannot be read (`Partition.parse`) or cannot fit even the
    smallest model it could describe (the model's own depth is checked when the model is known)."""
    from frankenscope.weights.partition import Partition

    try:
        part = Partition.parse(spec)
        fewest = {"thirds": 3, "cuts": max(part.values, default=0) + 1, "sizes": sum(part.values)}.get(part.kind)
        if fewest is None:  # explicit ranges: up to the highest layer they name
            fewest = max((int(x) for _, rng in part.ranges for x in re.findall(r"\d+", rng)), default=0) + 1
        part.regions(max(fewest, 3))
    except FrankenscopeError as e:
        raise ValueError(str(e)) from e


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML; errors name the file and the offending field."""
    path = Path(path)
    if not path.is_file():
        raise FrankenscopeError(f"{path}: study config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise FrankenscopeError(f"{path}: not valid YAML ({e})") from e
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise FrankenscopeError(f"{path}: {problems}") from e
    _resolve_styles(cfg, path)
    return cfg


def _resolve_styles(cfg: StudyConfig, path: Path) -> None:
    """Check each model's prompt style; a style file named relative to the config is read from its folder."""
    from frankenscope.evaluate.prompts import PROMPT_STYLES, get_prompt_style

    for key, spec in cfg.models().items():
        style = spec.prompt_style
        if style not in PROMPT_STYLES and not Path(style).is_absolute() and (path.parent / style).is_file():
            spec.prompt_style = str((path.parent / style).resolve())
        try:
            get_prompt_style(spec.prompt_style)
        except FrankenscopeError as e:
            raise FrankenscopeError(f"{path}: {key}.prompt_style: {e}") from e
