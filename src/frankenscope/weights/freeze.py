"""Freeze plans: which parameters stay fixed during RL, as patterns any trainer can apply.

The patterns come from the adapter's parameter-name rules for the LLM decoder layers, so they follow the
family's naming (in memory, on disk, wrapped exports). A plan is checked against the model: it must name
exactly the region's parameters, so a naming the adapter does not know fails here instead of freezing
nothing.
"""

from __future__ import annotations

import re
from typing import Any

from frankenscope.adapters import VLMAdapter
from frankenscope.errors import FrankenscopeError
from frankenscope.weights.partition import Partition


def freeze_patterns(adapter: VLMAdapter, layers: list[int]) -> list[str]:
    """One anchored regex per frozen decoder layer, matching that layer's parameter names in every naming
    the adapter knows (e.g. model.language_model.layers.N. in memory, model.layers.N. on disk, with an
    optional wrapper prefix such as module. or base_model.model.)."""
    return adapter.layer_patterns(layers, component="llm")


def _matching(model: Any, patterns: list[str]) -> list[str]:
    rx = [re.compile(p) for p in patterns]
    return [n for n, _ in model.named_parameters() if any(r.match(n) for r in rx)]


def freeze_plan(adapter: VLMAdapter, model: Any, region: str, partition: str | Partition = "thirds",
                ) -> dict[str, Any]:
    """The plan for freezing `region` ('early', 'mid+late', '0-3', ...) of the LLM decoder layers.

    Returns {region, partition, layers, patterns, parameter_names}; parameter_names are the model's
    own names matched by the patterns. Raises FrankenscopeError when the patterns do not match exactly the
    parameters of those layers (located by the adapter's name rules): a model whose naming the adapter
    does not know is refused, never planned as "freeze nothing".
    """
    part = Partition.parse(partition)
    layers = part.layers(region, adapter.num_layers(model))
    patterns = freeze_patterns(adapter, layers)
    names = _matching(model, patterns)
    wanted = set(layers)
    expected = []
    for n, _ in model.named_parameters():
        loc = adapter.param_location(n)  # raises on a name the adapter does not know
        if loc.component == "llm" and loc.layer in wanted:
            expected.append(n)
    empty = sorted(wanted - {adapter.param_location(n).layer for n in names})
    if not names or empty or names != expected:
        extra, missing = sorted(set(names) - set(expected)), sorted(set(expected) - set(names))
        raise FrankenscopeError(
            f"freeze plan for region {region!r} (LLM layers {layers}) does not fit {type(model).__name__}: "
            f"{len(names)} parameters match the patterns, {len(expected)} belong to those layers"
            + (f"; layers with no parameter: {empty}" if empty else "")
            + (f"; matched outside the region: {extra[:3]}" if extra else "")
            + (f"; not matched: {missing[:3]}" if missing else ""))
    return {"region": region, "partition": str(part), "layers": layers, "patterns": patterns,
            "parameter_names": names}


def apply_freeze(model: Any, patterns: list[str]) -> list[str]:
    """Set requires_grad=False on every parameter matching a pattern; return the frozen names.

    Raises FrankenscopeError when patterns are given but match no parameter (nothing would be frozen)."""
    names = set(_matching(model, patterns))
    if patterns and not names:
        raise FrankenscopeError(f"freeze patterns match no parameter of {type(model).__name__}: "
                                f"{patterns[:2]}{' ...' if len(patterns) > 2 else ''}")
    frozen = []
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen
