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
from dataclasses import dataclass

from frankenscope.errors import FrankenscopeError
from frankenscope.layers import parse_layers  # re-exported: its home is frankenscope.layers

__all__ = ["REGIONS", "Partition", "parse_layers", "partition", "resolve_region"]

REGIONS: tuple[str, ...] = ("early", "mid", "late")
_HOWTO = "use 'thirds', sizes like '8,12,8', 'cuts:9,18' or 'early=0-8;mid=9-17;late=18-27'"


@dataclass(frozen=True)
class Partition:
    """A region partition, parsed once where it enters (CLI option, study config, public function) and
    passed on as this object; `regions(n_layers)` applies it to a model's depth.

    spec: the text as given (what result files record).
    kind: "thirds", "cuts" (values: the first layer of mid and of late), "sizes" (values: the three
        region sizes) or "ranges" (ranges: each region's layer spec).
    """

    spec: str
    kind: str
    values: tuple[int, ...] = ()
    ranges: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str | Partition) -> Partition:
        """Read a spec (a Partition is returned as it is). Errors that do not depend on the model's depth
        (syntax, a region named twice or missing, cuts out of order, non-positive sizes) are raised here;
        the rest when the partition meets a model (`regions`)."""
        if isinstance(spec, Partition):
            return spec
        s = str(spec).strip().replace(" ", "")
        if s == "thirds":
            return cls(str(spec), "thirds")
        if s.startswith("cuts:"):
            cuts = _ints(s[5:], spec)
            if len(cuts) != 2:
                raise FrankenscopeError(f"partition {spec!r}: 'cuts:' takes two layer indices, got {len(cuts)}")
            if not 0 < cuts[0] < cuts[1]:
                raise FrankenscopeError(f"partition {spec!r}: cuts must satisfy 0 < {cuts[0]} < {cuts[1]} "
                                        f"(every region non-empty)")
            return cls(str(spec), "cuts", tuple(cuts))
        if "=" in s:
            return cls(str(spec), "ranges", ranges=_ranges(s, spec))
        sizes = _ints(s.removeprefix("sizes:"), spec)
        if len(sizes) != 3:
            raise FrankenscopeError(f"partition {spec!r}: give 3 region sizes (early,mid,late), got {len(sizes)}")
        if any(x <= 0 for x in sizes):
            raise FrankenscopeError(f"partition {spec!r}: sizes must be positive")
        return cls(str(spec), "sizes", tuple(sizes))

    def __str__(self) -> str:
        return self.spec

    def regions(self, n_layers: int) -> dict[str, list[int]]:
        """Each region's sorted layer indices on a model of `n_layers` decoder layers; every layer is in
        exactly one region. thirds: cuts at n//3 and 2n//3; sizes a,b,c: cuts at a and a+b (a+b+c = n)."""
        if n_layers < 3:
            raise FrankenscopeError(f"cannot split {n_layers} decoder layers into 3 regions")
        if self.kind == "thirds":
            return _from_cuts(n_layers, n_layers // 3, 2 * n_layers // 3, self.spec)
        if self.kind == "cuts":
            return _from_cuts(n_layers, *self.values, self.spec)
        if self.kind == "sizes":
            if sum(self.values) != n_layers:
                raise FrankenscopeError(f"partition {self.spec!r}: sizes must add up to the {n_layers} decoder "
                                        f"layers (sum {sum(self.values)})")
            return _from_cuts(n_layers, self.values[0], self.values[0] + self.values[1], self.spec)
        return _from_ranges(n_layers, dict(self.ranges), self.spec)

    def layers(self, region: str, n_layers: int) -> list[int]:
        """Layers named by a region ('early', 'mid+late', ...) under this partition, or by an explicit
        layer spec ('0-2,5')."""
        names = region.replace(" ", "").split("+")
        if all(r in REGIONS for r in names):
            parts = self.regions(n_layers)
            return sorted({layer for r in names for layer in parts[r]})
        if re.fullmatch(r"[\d,\-]+", region.replace(" ", "")):
            return parse_layers(region, n_layers)
        raise FrankenscopeError(f"region {region!r} is not one of {', '.join(REGIONS)} (joined with '+') nor a "
                                f"layer list")


def partition(n_layers: int, spec: str | Partition = "thirds") -> dict[str, list[int]]:
    """`Partition.parse(spec).regions(n_layers)`: each region name -> its sorted layer indices."""
    return Partition.parse(spec).regions(n_layers)


def resolve_region(region: str, n_layers: int, partition_: str | Partition = "thirds") -> list[int]:
    """`Partition.parse(partition_).layers(region, n_layers)`."""
    return Partition.parse(partition_).layers(region, n_layers)


def _ints(text: str, spec: str | Partition) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x != ""]
    except ValueError as e:
        raise FrankenscopeError(f"partition {spec!r} is not understood; {_HOWTO}") from e


def _from_cuts(n: int, c1: int, c2: int, spec: str) -> dict[str, list[int]]:
    if not 0 < c1 < c2 < n:
        raise FrankenscopeError(f"partition {spec!r}: cuts must satisfy 0 < {c1} < {c2} < {n} (every region non-empty)")
    return {"early": list(range(0, c1)), "mid": list(range(c1, c2)), "late": list(range(c2, n))}


def _ranges(s: str, spec: str) -> tuple[tuple[str, str], ...]:
    """The explicit form's (region, layer spec) pairs, in REGIONS order; names checked, layers not yet."""
    out: dict[str, str] = {}
    for part in filter(None, s.split(";")):
        name, _, rng = part.partition("=")
        if name not in REGIONS:
            raise FrankenscopeError(f"partition {spec!r}: unknown region {name!r}; regions are {', '.join(REGIONS)}")
        if name in out:
            raise FrankenscopeError(f"partition {spec!r}: region {name!r} given twice")
        if not re.fullmatch(r"[\d,\-]*", rng):
            raise FrankenscopeError(f"partition {spec!r}: region {name!r} has layers {rng!r}; {_HOWTO}")
        out[name] = rng
    missing = [r for r in REGIONS if r not in out]
    if missing:
        raise FrankenscopeError(f"partition {spec!r}: missing region(s) {', '.join(missing)}")
    return tuple((r, out[r]) for r in REGIONS)


def _from_ranges(n: int, ranges: dict[str, str], spec: str) -> dict[str, list[int]]:
    out = {name: sorted(parse_layers(rng, n)) for name, rng in ranges.items()}
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
