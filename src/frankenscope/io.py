"""Atomic writes, output-folder safety, versioned result files and provenance (seeds, inputs, package versions)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from frankenscope import __version__
from frankenscope.errors import FrankenscopeError

PACKAGES = ("torch", "transformers", "safetensors", "accelerate", "tokenizers", "trl", "numpy", "pillow", "math-verify")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that determine results (None when absent)."""
    out: dict[str, str | None] = {"frankenscope": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


#: Test hook (see `fault_point`): the name of the point at which the process kills itself.
FAULT_ENV = "FRANKENSCOPE_FAULT"
#: Test hook: a folder; when set, each fault point fires only once (the first process to reach it).
FAULT_ONCE_ENV = "FRANKENSCOPE_FAULT_ONCE"


def fault_point(name: str) -> None:
    """Fault injection for the tests: SIGKILL this process when $FRANKENSCOPE_FAULT equals `name`.

    Inert unless the variable is set; the fault-injection tests (tests/test_faults.py) set it in a
    subprocess to stop a run at a chosen point exactly as `kill -9` would. With $FRANKENSCOPE_FAULT_ONCE
    naming a folder, the point fires only for the first process that reaches it (it creates the file
    <folder>/<name> exclusively first), so a retried task (e.g. a Ray worker) then runs through.
    """
    if os.environ.get(FAULT_ENV) != name:
        return
    once = os.environ.get(FAULT_ONCE_ENV)
    if once:
        try:
            fd = os.open(os.path.join(once, name.replace(":", "_")), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(path: str | Path) -> None:
    """Clean up after a killed writer of `path`.

    Writers use hidden siblings named `.<name>.<pid>-<random>.tmp` (the new output being built) and
    `.<name>.<pid>-<random>.aside` (the old output, renamed aside during a swap). For each sibling whose
    process is gone: a `.tmp` is removed; an `.aside` is renamed back to `path` when `path` is missing
    (the kill fell between the two renames of a swap) and removed otherwise.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-[^.]*\.(tmp|aside)$")
    for sib in sorted(path.parent.iterdir()):
        m = pattern.match(sib.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        if m.group(2) == "aside" and not path.exists() and not path.is_symlink():
            os.replace(sib, path)
        else:
            _remove(sib)


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}")


def is_nonempty(path: Path) -> bool:
    """True for an existing file, or a folder with anything in it."""
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def output_of(path: Path, marker: str, kind: str) -> bool:
    """True when `path/marker` is a JSON file whose "kind" is `kind` (an earlier output of a command)."""
    try:
        return json.loads((path / marker).read_text()).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def check_out(path: str | Path, *, own: Callable[[Path], bool] | None = None, overwrite: bool = False) -> None:
    """Refuse to replace an existing non-empty `path` unless it is the command's own earlier output
    (`own(path)` is true) or `overwrite` is set. Stale temporary siblings are cleaned up first."""
    path = Path(path)
    recover(path)
    if overwrite or not is_nonempty(path) or (own is not None and path.is_dir() and own(path)):
        return
    raise FrankenscopeError(f"{path} already exists and is not an earlier output of this command; choose another "
                            f"folder, or pass --overwrite to replace it")


@contextmanager
def atomic_path(path: str | Path, *, clean: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.
    clean: first remove temporary siblings left by killed writers (`recover`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        recover(path)
    tmp_path = _sibling(path, "tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | Path, *, own: Callable[[Path], bool] | None = None,
               overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces `path` only if the block succeeds.

    The replacement is rename-aside-then-swap: the old `path` is renamed to a hidden `.aside` sibling,
    the new folder renamed into place, then the old one deleted; a kill at any point leaves either the
    old or the new output complete (`recover` restores the old one on the next run). With
    `overwrite=False`, an existing non-empty `path` is refused unless `own(path)` (see `check_out`).
    """
    path = Path(path)
    check_out(path, own=own, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            aside = _sibling(path, "aside")
            os.replace(path, aside)
            fault_point("swap")
            os.replace(tmp, path)
            _remove(aside)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write strict JSON (NaN and infinities become null) atomically."""
    return write_text_atomic(path, json.dumps(jsonable(payload), indent=2, sort_keys=False, allow_nan=False) + "\n")


def jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values: non-finite floats become None, paths strings, arrays lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump())
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any | None:
    """The JSON document at `path`, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def safe_filename(name: str) -> str:
    """`name` as a portable file name: runs of characters other than letters, digits, '.', '_', '-'
    become '_' (so 'IN:IN:RL' -> 'IN_IN_RL'), and no leading dot."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "_"


def write_result(path: str | Path, kind: str, schema_version: int, payload: dict[str, Any],
                 *, seed: int | None, inputs: dict[str, Any]) -> Path:
    """Write a versioned result file: {kind, schema_version, created, seed, inputs, versions, **payload}."""
    doc = {
        "kind": kind,
        "schema_version": schema_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "inputs": inputs,
        "versions": package_versions(),
        **payload,
    }
    return write_json_atomic(path, doc)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: Where remembered file hashes live (override with $FRANKENSCOPE_HASH_CACHE).
HASH_CACHE_ENV = "FRANKENSCOPE_HASH_CACHE"


def hash_cache_dir() -> Path:
    """$FRANKENSCOPE_HASH_CACHE, else $XDG_CACHE_HOME/frankenscope/file-hashes (default ~/.cache/...)."""
    if os.environ.get(HASH_CACHE_ENV):
        return Path(os.environ[HASH_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "frankenscope" / "file-hashes"


def sha256_file_remembered(path: str | Path) -> str:
    """sha256 of a file's full content, remembered in a sidecar keyed by (absolute path, size, mtime).

    Sidecars live in `hash_cache_dir()` (one small JSON per file, named by the hash of its path), never
    next to the file, so read-only checkpoint folders work; an unwritable cache only costs re-hashing.
    """
    p = Path(path).resolve()
    st = p.stat()
    entry = hash_cache_dir() / f"{sha256_text(str(p))}.json"
    try:
        doc = json.loads(entry.read_text())
        if doc["path"] == str(p) and doc["size"] == st.st_size and doc["mtime_ns"] == st.st_mtime_ns:
            return str(doc["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(p)
    after = p.stat()
    if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
        with suppress(OSError), atomic_path(entry, clean=False) as tmp:
            tmp.write_text(json.dumps({"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                       "sha256": digest}))
    return digest


def tree_fingerprint(path: str | Path) -> str | None:
    """A cheap identity of a data file or folder: sha256 over every file's relative path, size and
    mtime (not its content); None when `path` does not exist."""
    root = Path(path)
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
