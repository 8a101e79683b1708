"""Writing a probe's result file: the part the three probes share.

Each probe writes `OUT/<kind>.json` through `io.write_result`, with an `inputs` block that says what it
ran on (the model source(s) and fingerprint(s), the data source, and the number and SHA-256 of the ids of
its items or pairs, so two result files can be checked to cover the same inputs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from frankenscope.io import sha256_text, write_result


class Localization(Protocol):
    """What `localization_payload` reads: a localization probe's result (vision or reasoning)."""

    layers: list[int]
    settings: dict[str, Any]
    tasks: dict[str, Any]
    records: Sequence[Any]  # dataclass records, one per pair or item
    wall_s: float


def localization_payload(result: Localization) -> dict[str, Any]:
    """The payload of a localization result: settings, layers, per-task summaries, records, wall time."""
    return {"settings": result.settings, "layers": result.layers, "tasks": result.tasks,
            "records": [asdict(r) for r in result.records], "wall_s": result.wall_s}


def write_probe_result(out_dir: str | Path, kind: str, schema_version: int, payload: dict[str, Any], *,
                       sources: dict[str, Any], ids: Sequence[str], unit: str, seed: int | None) -> Path:
    """Write `out_dir/<kind>.json`; its inputs are `sources` (model and data sources, in that order) then
    ``n_<unit>s`` and ``<unit>_ids_sha256`` of `ids` (unit "pair" or "item")."""
    inputs = {**sources, f"n_{unit}s": len(ids), f"{unit}_ids_sha256": sha256_text(json.dumps(list(ids)))}
    return write_result(Path(out_dir) / f"{kind}.json", kind=kind, schema_version=schema_version, payload=payload,
                        seed=seed, inputs=inputs)
