"""Freeze plans: which parameters stay fixed during RL, as patterns any trainer can apply."""

from __future__ import annotations

import re
from typing import Any

from frankenscope.adapters import VLMAdapter
from frankenscope.weights.partition import resolve_region


def freeze_patterns(layers: list[int]) -> list[str]:
    """One regex per frozen decoder layer, matching the in-memory (model.language_model.layers.N.)
    and on-disk/hub (model.layers.N.) names, with an optional wrapper prefix (module., base_model.model.)."""
    return [rf"^(?:module\.|base_model\.model\.)?model\.(?:language_model\.)?layers\.{i}\." for i in layers]


def freeze_plan(adapter: VLMAdapter, model: Any, region: str, partition_spec: str = "thirds") -> dict[str, Any]:
    """The plan for freezing `region` ('early', 'mid+late', '0-3', ...) of the LLM decoder layers.

    Returns {region, partition, layers, patterns, parameter_names}; parameter_names are the model's
    own names matched by the patterns.
    """
    layers = resolve_region(region, adapter.num_layers(model), partition_spec)
    patterns = freeze_patterns(layers)
    rx = [re.compile(p) for p in patterns]
    names = [n for n, _ in model.named_parameters() if any(r.match(n) for r in rx)]
    return {"region": region, "partition": partition_spec, "layers": layers, "patterns": patterns,
            "parameter_names": names}


def apply_freeze(model: Any, patterns: list[str]) -> list[str]:
    """Set requires_grad=False on every parameter matching a pattern; return the frozen names."""
    rx = [re.compile(p) for p in patterns]
    frozen = []
    for name, p in model.named_parameters():
        if any(r.match(name) for r in rx):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen
