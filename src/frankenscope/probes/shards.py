"""Probes in shards: a probe run as pieces of its items, merged into exactly the result of one run.

A prepared probe (`ShardedProbe`; `probes.run` has one per probe) knows its items in their order, the model
calls ("batches") a run over all of them makes (`batches`: item indices per call, in run order), how to
compute the records of some of those batches (`compute`), and how to summarise and write the records of
every item (`finish`). The kernels compute each record from its own batch alone (a swap pair on its own,
a layer-skip batch, an attention generation chunk plus one pass per item), so the records of a subset of the
batches are exactly the records a run over all batches gives for those items.

A shard is a run of consecutive whole batches (`plan_probe_shards`: batches are added while the shard holds
at most `shard_items` items; a batch is never split). Hence:

* the local run (`run_probe`) is one shard holding every batch, merged and finished in memory;
* a sharded run (the Ray executor) computes each shard in its own task (`run_probe_shard`), which writes the
  shard's records to `<probe out>/shards/<index>.json` atomically, and `combine_probe_shards` reads them in
  shard order, puts the records in item order (`merge_shards`, the step the local run goes through too) and
  finishes exactly as the local run does, then removes the shard files.

A shard file records a key: the probe's kind and settings (`ShardedProbe.key`), the shard's batches and its
items (`ShardedProbe.item_key`). Running a shard whose file holds the same key reuses the file (a Ray retry
after the file was written, a study resumed after its driver died); any other file is recomputed.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from frankenscope.errors import FrankenscopeError
from frankenscope.io import fault_point, sha256_text, write_text_atomic

#: Folder (under a probe's output folder) of its shard record files.
PROBE_SHARDS_DIR = "shards"
#: The fault point (`io.fault_point`) between computing a shard's records and writing them.
SHARD_FAULT = "probe:shard"


@dataclass(frozen=True)
class ProbeShard:
    """Shard `index` of a probe: consecutive batches of its run, as item indices per batch."""

    index: int
    batches: tuple[tuple[int, ...], ...]

    @property
    def items(self) -> list[int]:
        """The shard's item indices in item order (the order of its records)."""
        return sorted(i for b in self.batches for i in b)


class ShardedProbe(ABC):
    """A probe prepared to run on any consecutive batches of its items (see the module docstring).

    Subclasses set `kind` (the result kind) and `out` (the folder the result is written to)."""

    kind: ClassVar[str]
    out: Path

    @abstractmethod
    def batches(self) -> list[list[int]]:
        """The model calls of a run over every item, as item indices per call, in run order."""

    @abstractmethod
    def key(self) -> dict[str, Any]:
        """Everything besides the items that the records depend on (JSON-able): models, settings, prompt style."""

    @abstractmethod
    def item_key(self, index: int) -> Any:
        """What item `index` is (JSON-able), for the shard key."""

    @abstractmethod
    def compute(self, batches: list[list[int]]) -> tuple[list[Any], dict[str, Any]]:
        """(records of the items in `batches`, in item order; the run's settings), making exactly these model
        calls."""

    @abstractmethod
    def finish(self, records: list[Any], settings: dict[str, Any], wall_s: float) -> Any:
        """Summarise the records of every item (in item order), write the result file and figure; the probe's
        return value."""

    @abstractmethod
    def encode(self, record: Any) -> Any:
        """A record as JSON values (NaN allowed), read back exactly by `decode`."""

    @abstractmethod
    def decode(self, value: Any) -> Any:
        """The record `encode` gave `value` for."""


def plan_probe_shards(batches: Sequence[Sequence[int]], shard_items: int | None) -> list[ProbeShard]:
    """Consecutive whole batches per shard, in run order: a shard takes the next batch while it then holds at
    most `shard_items` items (a batch larger than that is a shard alone); None: one shard of every batch."""
    if shard_items is not None and shard_items < 1:
        raise FrankenscopeError(f"executor.probe_shard_items must be >= 1, got {shard_items}")
    if not batches:
        raise FrankenscopeError("the probe has no items to run")
    groups: list[list[tuple[int, ...]]] = [[]]
    held = 0
    for b in batches:
        if groups[-1] and shard_items is not None and held + len(b) > shard_items:
            groups.append([])
            held = 0
        groups[-1].append(tuple(b))
        held += len(b)
    return [ProbeShard(i, tuple(g)) for i, g in enumerate(groups)]


def shard_key(probe: ShardedProbe, shard: ProbeShard) -> str:
    """sha256 of the probe's kind and key, the shard's batches and what its items are."""
    return sha256_text(json.dumps({"kind": probe.kind, "probe": probe.key(), "batches": shard.batches,
                                   "items": [probe.item_key(i) for i in shard.items]},
                                  sort_keys=True, default=str))


def shard_path(probe: ShardedProbe, shard: ProbeShard) -> Path:
    return Path(probe.out) / PROBE_SHARDS_DIR / f"{shard.index:04d}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def run_probe_shard(probe: ShardedProbe, shard: ProbeShard) -> dict[str, Any]:
    """Compute one shard's records into its file (`shard_path`), written atomically; a file that already
    holds this shard's key is reused. Returns {"shard", "items", "reused"}."""
    path, key = shard_path(probe, shard), shard_key(probe, shard)
    done = {"shard": shard.index, "items": len(shard.items)}
    found = _read(path)
    if found is not None and found.get("key") == key:
        return {**done, "reused": True}
    t0 = time.time()
    records, settings = probe.compute([list(b) for b in shard.batches])
    wall = round(time.time() - t0, 3)
    fault_point(SHARD_FAULT)
    doc = {"kind": "probe-shard", "probe": probe.kind, "index": shard.index, "key": key, "items": shard.items,
           "settings": settings, "wall_s": wall, "records": [probe.encode(r) for r in records]}
    write_text_atomic(path, json.dumps(doc, allow_nan=True) + "\n")
    return {**done, "reused": False}


def merge_shards(probe: ShardedProbe, shards: Sequence[tuple[ProbeShard, list[Any], dict[str, Any], float]]
                 ) -> tuple[list[Any], dict[str, Any], float]:
    """(every record in item order, the settings, the summed wall time) of shards given as (shard, its records
    in item order, its settings, its wall time). Every shard must have run with the same settings."""
    settings = shards[0][2]
    by_item: dict[int, Any] = {}
    for shard, records, s, _ in shards:
        if s != settings:
            diff = sorted(k for k in set(s) | set(settings) if s.get(k) != settings.get(k))
            raise FrankenscopeError(f"{probe.kind}: shard {shard.index} ran with other settings than shard "
                                    f"{shards[0][0].index} ({', '.join(diff)}): the workers differ")
        if len(records) != len(shard.items):
            raise FrankenscopeError(f"{probe.kind}: shard {shard.index} holds {len(records)} records for "
                                    f"{len(shard.items)} items")
        by_item.update(zip(shard.items, records, strict=True))
    return [by_item[i] for i in sorted(by_item)], settings, round(sum(w for *_, w in shards), 3)


def remove_shard_files(probe: ShardedProbe) -> None:
    """Delete the probe's shard files (and their folder once it is empty); other files are left alone."""
    folder = Path(probe.out) / PROBE_SHARDS_DIR
    if not folder.is_dir():
        return
    for f in folder.glob("[0-9][0-9][0-9][0-9].json"):
        doc = _read(f)
        if doc is None or doc.get("kind") == "probe-shard":
            f.unlink(missing_ok=True)
    for f in folder.glob(".[0-9][0-9][0-9][0-9].json.*.tmp"):  # an atomic write cut short by a kill
        f.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def run_probe(probe: ShardedProbe) -> Any:
    """The whole probe in this process: one shard of every batch, merged and finished (no shard file; shard files
    an interrupted sharded run left behind are removed, so the folder holds what a local run writes)."""
    (whole,) = plan_probe_shards(probe.batches(), None)
    t0 = time.time()
    records, settings = probe.compute([list(b) for b in whole.batches])
    result = probe.finish(*merge_shards(probe, [(whole, records, settings, round(time.time() - t0, 3))]))
    remove_shard_files(probe)
    return result


def combine_probe_shards(probe: ShardedProbe, shard_items: int | None) -> Any:
    """Finish a probe from its shard files (planned again with `shard_items`, as `run_probe_shard` ran them),
    then remove them. FrankenscopeError naming a shard whose file is missing or holds another key."""
    payloads = []
    for shard in plan_probe_shards(probe.batches(), shard_items):
        path = shard_path(probe, shard)
        doc = _read(path)
        if doc is None or doc.get("key") != shard_key(probe, shard):
            raise FrankenscopeError(f"{path}: the records of {probe.kind} shard {shard.index} are missing or "
                                    "from other settings; run the shard again")
        payloads.append((shard, [probe.decode(r) for r in doc["records"]], doc["settings"], doc["wall_s"]))
    result = probe.finish(*merge_shards(probe, payloads))
    remove_shard_files(probe)
    return result
