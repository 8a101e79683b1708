"""Decoder-layer indices: reading a layer spec and checking layers against a model's depth.

One home for what the probes (which layers to swap, skip or measure) and the weight tools (explicit
region ranges in `weights/partition.py`) both need. Every error names the bad layer(s) and the valid
range 0..n_layers-1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from frankenscope.errors import FrankenscopeError


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Layers from '3', '0,2,5', '0-3' (inclusive) or combinations ('0-2,7'); each must exist."""
    layers: set[int] = set()
    for tok in filter(None, spec.replace(" ", "").split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", tok)
        if not m:
            raise FrankenscopeError(f"layer spec {spec!r}: cannot read {tok!r} (use e.g. '0-3,7')")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise FrankenscopeError(f"layer spec {spec!r}: range {tok!r} runs backwards")
        if hi >= n_layers:
            raise FrankenscopeError(f"layer spec {spec!r}: layer {hi} does not exist (layers are 0..{n_layers - 1})")
        layers.update(range(lo, hi + 1))
    return sorted(layers)


def layers_from_spec(spec: str | None, n_layers: int) -> list[int]:
    """`parse_layers`, with None or 'all' meaning every layer (the probes' ``--layers`` option)."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(n_layers))
    return parse_layers(spec, n_layers)


def check_layers(layers: Iterable[int] | None, n_layers: int, what: str) -> list[int]:
    """The sorted distinct layers (None: all n_layers of them), each checked to be in 0..n_layers-1.

    `what` names them in the error ("swap" gives "swap layers [9] are not in 0..3"); an empty
    selection is an error too.
    """
    selected = sorted(set(range(n_layers) if layers is None else layers))
    bad = [x for x in selected if not 0 <= x < n_layers]
    if bad or not selected:
        raise FrankenscopeError(f"{what} layers {bad or '[]'} are not in 0..{n_layers - 1}")
    return selected
