"""A SQLite cache of model responses (and of judge / describer replies), so reruns resume.

Response key = sha256 over JSON of: the model fingerprint, the exact user text the generator builds
(`runner.prompt_text`), the image's content hash (sha256 of the file, or of the pixels for an
in-memory image), the black-image flag, and the generation settings (system prompt, decoding
settings, image downscale limit; the batch size is left out because greedy decoding does not depend
on it beyond floating-point noise). `CachedGenerator` looks every item up, sends only the misses to
the wrapped generator (in chunks, committing after each, so an interrupted run loses at most one
chunk) and returns the responses in item order.

One database file holds several namespaces (table `entries`, columns namespace, key, value, created):
"generate" for responses, "judge" and "describe" for the LLM judge (frankenscope.evaluate.judge).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError, FrankenscopeRuntimeError
from frankenscope.evaluate.runner import prompt_text
from frankenscope.io import fault_point, sha256_file, sha256_file_remembered

CACHE_SCHEMA_VERSION = 1
#: Generator settings that do not change greedy responses and so stay out of the cache key.
IGNORED_SETTINGS = ("batch_size", "progress")


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


#: Misses `CachedGenerator` sends to its generator (and commits) at a time, unless told otherwise.
GENERATION_CHUNK = 64
#: Seconds a statement waits for another process's lock, and how often a locked write is retried.
BUSY_TIMEOUT_S = 60.0
LOCK_RETRIES = 5


def _decode(raw: Any) -> Any | None:
    """A stored value, or None (a miss) when it is not valid JSON."""
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


class ResponseCache:
    """Key-value store in one SQLite file; values are JSON. Use as a context manager or call close().

    Concurrency: the database is in WAL mode (readers never block the writer) with a busy timeout of
    `busy_timeout` seconds, and a write that still finds the database locked is retried
    (`LOCK_RETRIES` times) before it fails with an error naming the file. Corruption: a stored value
    that is not valid JSON (or, for responses, not a string) is a miss and gets regenerated.
    """

    def __init__(self, path: str | Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=busy_timeout)
            self._write(lambda db: db.execute("PRAGMA journal_mode=WAL"))
            self._write(lambda db: db.executescript(
                "CREATE TABLE IF NOT EXISTS entries (namespace TEXT NOT NULL, key TEXT NOT NULL, "
                "value TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (namespace, key));"
                "CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT);"))
            self._write(lambda db: db.execute("INSERT OR IGNORE INTO info VALUES ('schema_version', ?)",
                                              (str(CACHE_SCHEMA_VERSION),)))
        except sqlite3.DatabaseError as e:
            raise FrankenscopeError(f"{self.path}: cannot open the response cache ({e}); delete it or pass "
                                    f"another cache file") from e
        except OSError as e:
            raise FrankenscopeRuntimeError(f"{self.path}: cannot create the response cache ({e})") from e

    def _write(self, op: Callable[[sqlite3.Connection], Any]) -> None:
        """Run `op` and commit, retrying while another process holds the lock."""
        for attempt in range(LOCK_RETRIES + 1):
            try:
                op(self._db)
                self._db.commit()
                return
            except sqlite3.OperationalError as e:
                self._db.rollback()
                if "locked" not in str(e) and "busy" not in str(e):
                    raise FrankenscopeRuntimeError(f"{self.path}: response cache write failed ({e})") from e
                if attempt == LOCK_RETRIES:
                    raise FrankenscopeRuntimeError(
                        f"{self.path}: the response cache stayed locked by another process for "
                        f"{(LOCK_RETRIES + 1) * self.busy_timeout:.0f} s ({e}); rerun when it is free, "
                        f"or pass another cache file") from e
                time.sleep(min(1.0, 0.05 * 2 ** attempt))

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            raise FrankenscopeRuntimeError(f"{self.path}: response cache read failed ({e})") from e

    def get(self, namespace: str, key: str) -> Any | None:
        rows = self._read("SELECT value FROM entries WHERE namespace = ? AND key = ?", (namespace, key))
        return _decode(rows[0][0]) if rows else None

    def get_many(self, namespace: str, keys: list[str]) -> dict[str, Any]:
        """The found entries (key -> value); undecodable values are left out (misses)."""
        out: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for s in range(0, len(unique), 500):
            chunk = unique[s:s + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._read(
                    f"SELECT key, value FROM entries WHERE namespace = ? AND key IN ({marks})", (namespace, *chunk)):
                decoded = _decode(value)
                if decoded is not None:
                    out[key] = decoded
        return out

    def put(self, namespace: str, key: str, value: Any, commit: bool = True) -> None:
        self.put_many(namespace, [(key, value)])

    def put_many(self, namespace: str, pairs: list[tuple[str, Any]]) -> None:
        now = time.time()
        rows = [(namespace, k, json.dumps(v), now) for k, v in pairs]
        self._write(lambda db: db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", rows))

    def count(self, namespace: str | None = None) -> int:
        if namespace is None:
            return int(self._read("SELECT COUNT(*) FROM entries", ())[0][0])
        return int(self._read("SELECT COUNT(*) FROM entries WHERE namespace = ?", (namespace,))[0][0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Weight files hashed by `model_fingerprint` (pickle formats too, so that no two checkpoints collide).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")


def model_fingerprint(path: str | Path) -> str:
    """The identity of a model folder (hex sha256), covering the full content of every weight file.

    Hashed, in order: the bytes of config.json, then for every weight file (`WEIGHT_SUFFIXES`, in name
    order) its name, its size and the sha256 of its full content. Full-content hashes are remembered
    in a sidecar keyed by path, size and mtime (`io.sha256_file_remembered`, outside the model folder),
    so a checkpoint is read in full once, not on every run.
    """
    folder = Path(path)
    config = folder / "config.json"
    if not config.is_file():
        raise FrankenscopeError(f"{folder}: not a model folder (no config.json)")
    h = hashlib.sha256()
    h.update(config.read_bytes())
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
        h.update(f"\n{f.name}\n{f.stat().st_size}\n".encode())
        h.update(sha256_file_remembered(f).encode())
    return h.hexdigest()


class ImageHasher:
    """Content hashes of image files, memoised by (path, size, mtime)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int, int], str] = {}

    def file(self, path: str | Path) -> str:
        p = Path(path)
        try:
            st = p.stat()
        except OSError as e:
            raise FrankenscopeError(f"image file not found: {p}") from e
        k = (str(p), st.st_size, st.st_mtime_ns)
        if k not in self._memo:
            self._memo[k] = sha256_file(p)
        return self._memo[k]

    @staticmethod
    def pixels(image: Image.Image) -> str:
        h = hashlib.sha256(f"{image.mode}:{image.size}".encode())
        h.update(image.tobytes())
        return h.hexdigest()


def generation_key(fingerprint: str, text: str, image_hash: str | None, black_image: bool,
                   settings: dict[str, Any]) -> str:
    """The cache key of one generation (see the module docstring)."""
    kept = {k: v for k, v in settings.items() if k not in IGNORED_SETTINGS}
    return stable_hash({"model": fingerprint, "text": text, "image": image_hash,
                        "black_image": bool(black_image and image_hash is not None), "settings": kept})


class CachedGenerator:
    """Wrap a Generator so that only cache misses are generated.

    fingerprint: the model's identity (`model_fingerprint` of a folder, or any stable string).
    settings: what determines the responses besides model and input; defaults to the wrapped
        generator's `settings()` when it has one. chunk_size: misses are generated and committed in
        chunks of this many items. Counters: `hits`, `misses`, `calls` (calls of the wrapped generator).
    """

    def __init__(self, generator: Callable[..., list[str]], cache: ResponseCache, fingerprint: str,
                 settings: dict[str, Any] | None = None, chunk_size: int = GENERATION_CHUNK) -> None:
        if settings is None:
            get = getattr(generator, "settings", None)
            settings = get() if callable(get) else {}
        if chunk_size < 1:
            raise FrankenscopeError(f"chunk_size must be >= 1, got {chunk_size}")
        self.generator = generator
        self.cache = cache
        self.fingerprint = fingerprint
        self._settings = dict(settings)
        self.chunk_size = chunk_size
        self.hasher = ImageHasher()
        self.hits = 0
        self.misses = 0
        self.calls = 0

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def keys(self, items: list[Item], *, black_image: bool = False, use_description: bool = False,
             images: list[Image.Image | None] | None = None) -> list[str]:
        out = []
        for i, it in enumerate(items):
            if images is not None and images[i] is not None:
                img_hash: str | None = self.hasher.pixels(images[i])  # type: ignore[arg-type]
            elif it.image is not None:
                img_hash = self.hasher.file(it.image)
            else:
                img_hash = None
            out.append(generation_key(self.fingerprint, prompt_text(it, use_description), img_hash,
                                      black_image, self._settings))
        return out

    def __call__(self, items: list[Item], *, black_image: bool = False, use_description: bool = False,
                 images: list[Image.Image | None] | None = None) -> list[str]:
        if images is not None and len(images) != len(items):
            raise FrankenscopeError(f"got {len(images)} images for {len(items)} items")
        keys = self.keys(items, black_image=black_image, use_description=use_description, images=images)
        found = self.cache.get_many("generate", keys)
        out: list[str | None] = [v if isinstance(v := found.get(k), str) else None for k in keys]
        todo = [i for i, r in enumerate(out) if r is None]
        self.hits += len(items) - len(todo)
        self.misses += len(todo)
        for s in range(0, len(todo), self.chunk_size):
            idx = todo[s:s + self.chunk_size]
            kwargs: dict[str, Any] = {"black_image": black_image, "use_description": use_description}
            if images is not None:
                kwargs["images"] = [images[i] for i in idx]
            self.calls += 1
            responses = self.generator([items[i] for i in idx], **kwargs)
            if len(responses) != len(idx):
                raise FrankenscopeError(f"generator returned {len(responses)} responses for {len(idx)} items")
            self.cache.put_many("generate", [(keys[i], r) for i, r in zip(idx, responses, strict=True)])
            fault_point("generate:chunk")
            for i, r in zip(idx, responses, strict=True):
                out[i] = r
        return [r if r is not None else "" for r in out]
