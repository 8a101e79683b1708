"""The study config (YAML): which models, how to prompt them, and the settings of every analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from frankenscope.errors import FrankenscopeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """One checkpoint: an HF folder or hub id, and the prompt style it was trained with."""

    path: str
    prompt_style: str = "plain"


class EvalSettings(_Strict):
    suite: Literal["organism", "paper"] = "organism"
    data: str | None = None          # a suite folder, or the folder with the paper datasets
    n: int | None = None             # items per metric set (deterministic subsample, saved as an id list)
    n_per_task: int = 50             # organism suite: items drawn per task
    max_new_tokens: int = 80
    batch_size: int = 32
    benchmarks: list[str] = Field(default_factory=list)  # e.g. [mathvista, mathverse, mathvision, logicvista]


class ProbeSettings(_Strict):
    pairs: str | None = None         # probe pairs (jsonl / folder / paper layout); None: the organism's
    swap_mode: Literal["cumulative", "single"] = "cumulative"
    layers: str | None = None        # e.g. "0-27"; None: all
    max_new_tokens: int = 16
    reasoning_dataset: str | None = None  # layer skipping; None: the organism's items; e.g. "gsm8k,math500"
    attention_dataset: str | None = None  # attention IN vs RL (items with images); None: organism; e.g. mathvista
    data: str | None = None               # folder of the paper datasets named above (default: evaluation.data)
    n: int | None = None
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
    dtype: str = "float32"
    device: str | None = None
    device_map: str | None = None
    seed: int = 0
    evaluation: EvalSettings = Field(default_factory=EvalSettings)
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def models(self) -> dict[str, ModelSpec]:
        return {"base": self.base, "in": self.in_, "rl": self.rl}


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
        return StudyConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise FrankenscopeError(f"{path}: {problems}") from e
