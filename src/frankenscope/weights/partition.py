"""The one place that splits LLM decoder layers into regions (early / mid / late).

Used by region freezing during RL, freeze plans for external trainers, and region-wise merging.

Spec forms (n = number of decoder layers):
- ``thirds``            cuts at n//3 and 2n//3 (the reference code's default: 0-8/9-17/18-27 for n=28)
- ``8,12,8``            region sizes, must add up to n (``sizes:8,12,8`` also accepted)
- ``cuts:9,18``         the first layer of mid and of late
- ``early=0-8;mid=9-17;late=18-27``   explicit inclusive ranges; must cover 0..n-1 without overlap
"""

from __future__ import annotations

import re

from frankenscope.errors import FrankenscopeError
from frankenscope.layers import parse_layers  # re-exported: its home is frankenscope.layers

__all__ = ["REGIONS", "parse_layers", "partition", "resolve_region"]

REGIONS: tuple[str, ...] = ("early", "mid", "late")


def partition(n_layers: int, spec: str = "thirds") -> dict[str, list[int]]:
    """Map each region name to its sorted list of layer indices; every layer in exactly one region."""
    if n_layers < 3:
        raise FrankenscopeError(f"cannot split {n_layers} decoder layers into 3 regions")
    s = spec.strip().replace(" ", "")
    if s == "thirds":
        return _from_cuts(n_layers, n_layers // 3, 2 * n_layers // 3, spec)
    if s.startswith("cuts:"):
        cuts = _ints(s[5:], spec)
        if len(cuts) != 2:
            raise FrankenscopeError(f"partition {spec!r}: 'cuts:' takes two layer indices, got {len(cuts)}")
        return _from_cuts(n_layers, cuts[0], cuts[1], spec)
    if "=" in s:
        return _from_ranges(n_layers, s, spec)
    sizes = _ints(s.removeprefix("sizes:"), spec)
    if len(sizes) != 3:
        raise FrankenscopeError(f"partition {spec!r}: give 3 region sizes (early,mid,late), got {len(sizes)}")
    if any(x <= 0 for x in sizes) or sum(sizes) != n_layers:
        raise FrankenscopeError(
            f"partition {spec!r}: sizes must be positive and add up to the {n_layers} decoder layers (sum {sum(sizes)})")
    return _from_cuts(n_layers, sizes[0], sizes[0] + sizes[1], spec)


def _ints(text: str, spec: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x != ""]
    except ValueError as e:
        raise FrankenscopeError(
            f"partition {spec!r} is not understood; use 'thirds', sizes like '8,12,8', 'cuts:9,18' "
            f"or 'early=0-8;mid=9-17;late=18-27'") from e


def _from_cuts(n: int, c1: int, c2: int, spec: str) -> dict[str, list[int]]:
    if not 0 < c1 < c2 < n:
        raise FrankenscopeError(f"partition {spec!r}: cuts must satisfy 0 < {c1} < {c2} < {n} (every region non-empty)")
    return {"early": list(range(0, c1)), "mid": list(range(c1, c2)), "late": list(range(c2, n))}


def _from_ranges(n: int, s: str, spec: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for part in filter(None, s.split(";")):
        name, _, rng = part.partition("=")
        if name not in REGIONS:
            raise FrankenscopeError(f"partition {spec!r}: unknown region {name!r}; regions are {', '.join(REGIONS)}")
        if name in out:
            raise FrankenscopeError(f"partition {spec!r}: region {name!r} given twice")
        out[name] = sorted(parse_layers(rng, n))
    missing = [r for r in REGIONS if r not in out]
    if missing:
        raise FrankenscopeError(f"partition {spec!r}: missing region(s) {', '.join(missing)}")
    seen: dict[int, str] = {}
    for name, layers in out.items():
        if not layers:
            raise FrankenscopeError(f"partition {spec!r}: region {name!r} is empty")
        for layer in layers:
            if layer in seen:
                raise FrankenscopeError(f"partition {spec!r}: layer {layer} is in both {seen[layer]!r} and {name!r}")
            seen[layer] = name
    gaps = sorted(set(range(n)) - set(seen))
    if gaps:
        raise FrankenscopeError(f"partition {spec!r}: layers {gaps} belong to no region (the model has {n} layers)")
    return {r: out[r] for r in REGIONS}


def resolve_region(region: str, n_layers: int, partition_spec: str = "thirds") -> list[int]:
    """Layers named by a region ('early', 'mid+late', ...) under a partition, or by an explicit layer spec."""
    names = region.replace(" ", "").split("+")
    if all(r in REGIONS for r in names):
        parts = partition(n_layers, partition_spec)
        return sorted({layer for r in names for layer in parts[r]})
    if re.fullmatch(r"[\d,\-]+", region.replace(" ", "")):
        return parse_layers(region, n_layers)
    raise FrankenscopeError(f"region {region!r} is not one of {', '.join(REGIONS)} (joined with '+') nor a layer list")
