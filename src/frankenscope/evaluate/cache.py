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
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.runner import prompt_text
from frankenscope.io import sha256_file

CACHE_SCHEMA_VERSION = 1
#: Generator settings that do not change greedy responses and so stay out of the cache key.
IGNORED_SETTINGS = ("batch_size", "progress")


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    """Key-value store in one SQLite file; values are JSON. Use as a context manager or call close()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path))
            self._db.execute("CREATE TABLE IF NOT EXISTS entries (namespace TEXT NOT NULL, key TEXT NOT NULL, "
                             "value TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (namespace, key))")
            self._db.execute("CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT)")
            self._db.execute("INSERT OR IGNORE INTO info VALUES ('schema_version', ?)", (str(CACHE_SCHEMA_VERSION),))
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise FrankenscopeError(f"{self.path}: cannot open the response cache ({e})") from e

    def get(self, namespace: str, key: str) -> Any | None:
        row = self._db.execute("SELECT value FROM entries WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_many(self, namespace: str, keys: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for s in range(0, len(unique), 500):
            chunk = unique[s:s + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(
                    f"SELECT key, value FROM entries WHERE namespace = ? AND key IN ({marks})", (namespace, *chunk)):
                out[key] = json.loads(value)
        return out

    def put(self, namespace: str, key: str, value: Any, commit: bool = True) -> None:
        self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                         (namespace, key, json.dumps(value), time.time()))
        if commit:
            self._db.commit()

    def put_many(self, namespace: str, pairs: list[tuple[str, Any]]) -> None:
        now = time.time()
        self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                             [(namespace, k, json.dumps(v), now) for k, v in pairs])
        self._db.commit()

    def count(self, namespace: str | None = None) -> int:
        if namespace is None:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM entries WHERE namespace = ?", (namespace,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    fingerprint: the model's identity (`runner.model_fingerprint` of a folder, or any stable string).
    settings: what determines the responses besides model and input; defaults to the wrapped
        generator's `settings()` when it has one. chunk_size: misses are generated and committed in
        chunks of this many items. Counters: `hits`, `misses`, `calls` (calls of the wrapped generator).
    """

    def __init__(self, generator: Callable[..., list[str]], cache: ResponseCache, fingerprint: str,
                 settings: dict[str, Any] | None = None, chunk_size: int = 64) -> None:
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
        out: list[str | None] = [found.get(k) for k in keys]
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
            for i, r in zip(idx, responses, strict=True):
                out[i] = r
        return [r if r is not None else "" for r in out]
