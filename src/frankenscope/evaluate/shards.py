"""Evaluation generation in shards (what the Ray executor distributes), reproducing a local run exactly.

A `GenerationRequest` is one call an evaluation makes to its cached generator: one model, one condition
(black image or not), the rendered items in order. Locally, `CachedGenerator` looks the items up in the
response cache, cuts the misses into chunks of `GENERATION_CHUNK` and `HFGenerator` cuts each chunk into
batches (`runner.batch_indices`). `plan_shards` makes the same misses, chunks and batches and groups
consecutive chunks into shards of about `shard_items` responses, so every batch a shard decodes is a batch
the local run would have decoded: the responses (and every result file computed from them) are identical.
A key already claimed by an earlier request (IN and RL appear in the finegrained and hybrids units) is
generated once, by the shard that claimed it first.

A shard keeps its own record file (JSON lines, one line per decoded batch with its (cache key, response)
pairs, flushed and fsynced before the next batch): a worker killed mid-shard loses at most the batch it was
decoding; the retried shard reads the file and decodes only the batches that are missing. The records are
merged into the study's SQLite response cache by the one process that owns that file (`absorb_records`),
after which the evaluation unit itself runs and finds every response cached. SQLite is never shared between
processes on different machines; the record files need only a file system every worker can write.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.backends import GenerationSpec
from frankenscope.io import fault_point, sha256_text

RECORDS_SUFFIX = ".jsonl"


@dataclass
class GenerationRequest:
    """One (model, condition) generation call of an evaluation: items in the order they are passed."""

    spec: GenerationSpec
    fingerprint: str
    black_image: bool
    items: list[Item]
    label: str = ""

    def cache_keys(self) -> list[str]:
        """The response-cache key of every item (`cache.generation_key`, as `CachedGenerator.keys`)."""
        from frankenscope.evaluate.cache import ImageHasher, generation_key
        from frankenscope.evaluate.runner import prompt_text

        hasher = ImageHasher()
        settings = self.spec.settings()
        return [generation_key(self.fingerprint, prompt_text(it), None if it.image is None else hasher.file(it.image),
                               self.black_image, settings) for it in self.items]


@dataclass
class Shard:
    """Consecutive chunks of one request's misses, as batches of (cache key, item)."""

    id: str
    spec: GenerationSpec
    black_image: bool
    batches: list[list[tuple[str, Item]]]
    label: str = ""
    keys: list[str] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return sum(len(b) for b in self.batches)


def _chunk_batches(spec: GenerationSpec, items: list[Item], idx: list[int]) -> list[list[int]]:
    """The batches (item indices) the backend decodes for one chunk: HF batches, or the whole chunk for vLLM
    (which schedules its requests itself)."""
    if spec.backend == "vllm":
        return [idx]
    from frankenscope.evaluate.runner import batch_indices

    return [[idx[j] for j in b] for b in batch_indices([items[i].image is not None for i in idx], spec.batch_size)]


def plan_shards(requests: list[GenerationRequest], cached: set[str], owner: dict[str, str], *,
                shard_items: int, chunk: int | None = None) -> list[Shard]:
    """New shards for `requests` (in order). `cached`: keys already in the response cache; `owner`: key -> id of
    the shard generating it, shared between calls and updated here (a claimed key is not planned again).

    The misses of a request are its keys neither cached nor claimed by an earlier request; they are cut into
    chunks of `chunk` (default `cache.GENERATION_CHUNK`), each chunk into the backend's batches, and
    ceil(shard_items / chunk) consecutive chunks make a shard.
    """
    from frankenscope.evaluate.cache import GENERATION_CHUNK

    chunk = chunk or GENERATION_CHUNK
    if shard_items < 1 or chunk < 1:
        raise FrankenscopeError(f"shard_items and chunk must be >= 1 (got {shard_items}, {chunk})")
    per_shard = -(-shard_items // chunk)
    shards: list[Shard] = []
    for req in requests:
        keys = req.cache_keys()
        misses = [i for i, k in enumerate(keys) if k not in cached and k not in owner]
        chunks = [misses[s:s + chunk] for s in range(0, len(misses), chunk)]
        for s in range(0, len(chunks), per_shard):
            batches = [[(keys[i], req.items[i]) for i in b]
                       for c in chunks[s:s + per_shard] for b in _chunk_batches(req.spec, req.items, c)]
            shard_keys = [k for b in batches for k, _ in b]
            sid = sha256_text(json.dumps([req.spec.backend, shard_keys]))[:16]
            shards.append(Shard(sid, req.spec, req.black_image, batches, req.label, shard_keys))
            owner.update(dict.fromkeys(shard_keys, sid))
    return shards


def read_records(path: str | Path) -> dict[str, str]:
    """(cache key -> response) of a shard record file; a line that does not parse (the last line of a worker
    killed while writing it) is skipped, so its batch counts as not done."""
    out: dict[str, str] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            pairs = json.loads(line)["pairs"]
            batch = {str(k): v for k, v in pairs if isinstance(v, str)}
        except (ValueError, KeyError, TypeError):
            continue
        out.update(batch)
    return out


def _torn(path: Path) -> bool:
    """Whether the file's last line lacks its newline (a writer was killed mid-line)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def append_batch(path: Path, pairs: list[tuple[str, str]]) -> None:
    """Append one batch as one line, durably (flush + fsync) before the next batch starts; a torn last line
    left by a killed writer is closed first, so it cannot swallow this one."""
    torn = _torn(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps({"pairs": pairs}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_shard(shard: Shard, records: str | Path, generator: Any = None) -> dict[str, int]:
    """Generate every batch of `shard` not yet in its record file `records`; returns {"generated", "reused"}.

    The model is built (`shard.spec.build()`, unless `generator` is given) only when a batch is missing. After
    each batch is recorded, the fault point "shard:batch" lets tests kill the worker exactly there.
    """
    path = Path(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_records(path)
    generated = reused = 0
    for batch in shard.batches:
        if all(k in done for k, _ in batch):
            reused += len(batch)
            continue
        if generator is None:
            generator = shard.spec.build()
        responses = generator([it for _, it in batch], black_image=shard.black_image)
        if len(responses) != len(batch):
            raise FrankenscopeError(f"generator returned {len(responses)} responses for {len(batch)} items")
        pairs = [(k, r) for (k, _), r in zip(batch, responses, strict=True)]
        append_batch(path, pairs)
        done.update(pairs)
        generated += len(batch)
        fault_point("shard:batch")
    return {"generated": generated, "reused": reused}


def absorb_record_file(path: str | Path, cache: Any) -> int:
    """Merge one shard record file into the response cache (`ResponseCache`, namespace "generate"), then
    delete it; returns the number of responses merged. Safe to repeat: a record is keyed by its cache key."""
    p = Path(path)
    if not p.is_file():
        return 0
    pairs = list(read_records(p).items())
    if pairs:
        cache.put_many("generate", pairs)
    p.unlink()
    return len(pairs)


def absorb_records(folder: str | Path, cache: Any) -> int:
    """`absorb_record_file` for every record file under `folder`; returns the number of responses merged."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    return sum(absorb_record_file(f, cache) for f in sorted(root.glob(f"*{RECORDS_SUFFIX}")))
