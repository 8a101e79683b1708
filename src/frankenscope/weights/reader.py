"""Read a safetensors checkpoint one tensor at a time, under canonical (in-memory) parameter names.

A checkpoint is a folder holding ``model.safetensors`` or ``model.safetensors.index.json`` + shards
(the HF layouts), or a single ``.safetensors`` file. Only the JSON headers are read up front (names,
dtypes, shapes, byte offsets); a tensor's data is touched only when `get` is called, through
`safetensors.safe_open`, so memory stays at the tensors the caller is holding.

Names: transformers writes legacy names on disk (``model.layers.N``, ``visual.blocks.N``) and exposes
``model.language_model.layers.N`` / ``model.visual.blocks.N`` in memory; RL frameworks export yet
other variants. The reader maps every on-disk name to the adapter's canonical (in-memory) name, so
checkpoints written by different tools line up.

Tied embeddings: when the config ties ``lm_head`` to the token embeddings, HF omits ``lm_head`` on
disk. The reader then reports no ``lm_head`` tensor and records a note (`notes`); consumers skip it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from frankenscope.adapters import ParamLocation, VLMAdapter, get_adapter
from frankenscope.errors import FrankenscopeError
from frankenscope.io import sha256_file

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

#: safetensors dtype codes -> (torch dtype, bytes per element)
ST_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1), "F8_E5M2": (torch.float8_e5m2, 1),
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as stored: its names, file, safetensors dtype code, shape and absolute byte range."""

    canonical: str
    disk_name: str
    file: Path
    dtype_code: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def dtype(self) -> torch.dtype:
        return ST_DTYPES[self.dtype_code][0]


#: Pickle-based checkpoint formats, never loaded (unpickling can run arbitrary code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def no_safetensors_message(folder: Path) -> str:
    """The error for a model folder without safetensors weights (with a conversion hint for .bin)."""
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES)) if folder.is_dir() else []
    found = f" (found {', '.join(pickles[:3])}{' ...' if len(pickles) > 3 else ''})" if pickles else ""
    return (f"{folder}: no {SINGLE_FILE} or {INDEX_FILE}{found}; frankenscope reads safetensors only, because "
            f"loading pickle checkpoints can run code. Convert it once where you trust the file: "
            f"AutoModelForImageTextToText.from_pretrained(FOLDER).save_pretrained(NEW_FOLDER, "
            f"safe_serialization=True), and copy the processor files")


def read_header(file: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """Parse a safetensors header: ({name: {dtype, shape, data_offsets}}, metadata, data start byte)."""
    file = Path(file)
    try:
        with open(file, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise FrankenscopeError(f"{file}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise FrankenscopeError(f"{file}: safetensors header of {n} bytes is implausible (corrupt file?)")
            header = json.loads(f.read(n))
    except FileNotFoundError as e:
        raise FrankenscopeError(f"{file}: weight file not found") from e
    except OSError as e:
        raise FrankenscopeError(f"{file}: cannot read ({e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FrankenscopeError(f"{file}: unreadable safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise FrankenscopeError(f"{file}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def check_safetensors_file(file: str | Path) -> dict[str, dict[str, Any]]:
    """Parse the header of a safetensors file and check that every tensor's bytes lie inside the file
    (a truncated download or copy fails here, naming the file); returns the header's tensors."""
    file = Path(file)
    header, _, base = read_header(file)
    size = file.stat().st_size
    end = base
    for name, info in header.items():
        try:
            s, e = info["data_offsets"]
            s, e = int(s), int(e)
        except (KeyError, TypeError, ValueError) as err:
            raise FrankenscopeError(f"{file}: malformed header entry for {name!r}") from err
        if not 0 <= s <= e:
            raise FrankenscopeError(f"{file}: tensor {name!r} has invalid data offsets [{s}, {e}]")
        end = max(end, base + e)
    if end > size:
        raise FrankenscopeError(f"{file}: truncated ({size} bytes, the header needs {end}); copy or download it again")
    return header


def _nested(cfg: dict[str, Any], sub: str, *keys: str) -> int | None:
    for src in (cfg.get(sub) or {}, cfg):
        for k in keys:
            v = src.get(k)
            if isinstance(v, int):
                return v
    return None


class CheckpointReader:
    """Tensor-by-tensor access to one checkpoint (folder, sharded folder, or single file).

    Names given to `get`, `shape`, `dtype`, `entry` and `location` may be canonical or on-disk.
    `architecture` overrides (or replaces a missing) config.json `architectures[0]`.
    """

    def __init__(self, path: str | Path, *, architecture: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FrankenscopeError(f"{self.path}: checkpoint not found")
        if self.path.is_file():
            if self.path.suffix != ".safetensors":
                raise FrankenscopeError(f"{self.path}: not a .safetensors file")
            self.folder = self.path.parent
            files = [self.path]
            weight_map: dict[str, str] | None = None
        else:
            self.folder = self.path
            files, weight_map = self._find_files()
        cfg_file = self.folder / "config.json"
        self.config: dict[str, Any] = {}
        if cfg_file.is_file():
            try:
                self.config = json.loads(cfg_file.read_text())
            except json.JSONDecodeError as e:
                raise FrankenscopeError(f"{cfg_file}: not valid JSON ({e})") from e
        archs = self.config.get("architectures") or []
        arch = architecture or (archs[0] if archs else None)
        if arch is None:
            raise FrankenscopeError(
                f"{self.path}: no config.json with 'architectures' next to the weights; pass the architecture "
                f"explicitly (e.g. Qwen2_5_VLForConditionalGeneration)")
        self.architecture: str = arch
        self.adapter: VLMAdapter = get_adapter(arch)
        self.files: list[Path] = files
        self.notes: list[str] = []
        self._entries: dict[str, TensorEntry] = {}
        self._disk: dict[str, str] = {}
        self._read_headers(files, weight_map)
        self.tied_embeddings = bool(self.config.get("tie_word_embeddings")
                                    or (self.config.get("text_config") or {}).get("tie_word_embeddings"))
        if not any(self.location(c).component == "lm_head" for c in self._entries):
            if self.tied_embeddings:
                self.notes.append("lm_head is tied to the token embeddings and not stored on disk: skipped")
            else:
                self.notes.append("no lm_head tensor stored on disk")

    # -- discovery ------------------------------------------------------------------------
    def _find_files(self) -> tuple[list[Path], dict[str, str] | None]:
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise FrankenscopeError(f"{index}: not a valid safetensors index (needs a 'weight_map')") from e
            files = []
            for fname in dict.fromkeys(weight_map.values()):
                f = self.folder / fname
                if not f.is_file():
                    raise FrankenscopeError(f"{f}: shard named in {index.name} is missing")
                files.append(f)
            return files, weight_map
        single = self.folder / SINGLE_FILE
        if single.is_file():
            return [single], None
        found = sorted(self.folder.glob("*.safetensors"))
        if len(found) == 1:
            return found, None
        if found:
            raise FrankenscopeError(
                f"{self.folder}: {len(found)} .safetensors files but no {INDEX_FILE} saying which tensor is where")
        raise FrankenscopeError(no_safetensors_message(self.folder))

    def _read_headers(self, files: list[Path], weight_map: dict[str, str] | None) -> None:
        for f in files:
            check_safetensors_file(f)
            header, _, base = read_header(f)
            for disk, info in header.items():
                if weight_map is not None and weight_map.get(disk) != f.name:
                    if disk in weight_map:
                        continue  # the index says another shard holds the authoritative copy
                    raise FrankenscopeError(f"{f}: tensor {disk!r} is not listed in {INDEX_FILE}")
                try:
                    code, shape, (s, e) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
                except (KeyError, TypeError, ValueError) as err:
                    raise FrankenscopeError(f"{f}: malformed header entry for {disk!r}") from err
                if code not in ST_DTYPES:
                    raise FrankenscopeError(f"{f}: tensor {disk!r} has unsupported dtype {code}")
                canon = self.adapter.canonical_name(disk)
                if canon in self._entries:
                    other = self._entries[canon]
                    raise FrankenscopeError(
                        f"{self.path}: {disk!r} ({f.name}) and {other.disk_name!r} ({other.file.name}) are the "
                        f"same parameter {canon!r}")
                self._entries[canon] = TensorEntry(canon, disk, f, code, shape, base + s, base + e)
                self._disk[disk] = canon
        if weight_map is not None:
            missing = [n for n in weight_map if n not in self._disk]
            if missing:
                raise FrankenscopeError(
                    f"{self.folder / INDEX_FILE}: {len(missing)} tensor(s) listed but not found in their shard, "
                    f"e.g. {missing[:3]}")
        if not self._entries:
            raise FrankenscopeError(f"{self.path}: holds no tensors")

    # -- names ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """On-disk tensor names, in storage order (file, then byte offset)."""
        return [e.disk_name for e in self.entries()]

    def canonical_names(self) -> list[str]:
        """Canonical (in-memory) tensor names, in storage order."""
        return [e.canonical for e in self.entries()]

    def entries(self) -> list[TensorEntry]:
        order = {f: i for i, f in enumerate(self.files)}
        return sorted(self._entries.values(), key=lambda e: (order[e.file], e.start))

    def canonical_map(self) -> dict[str, tuple[Path, str]]:
        """canonical name -> (file, on-disk name)."""
        return {c: (e.file, e.disk_name) for c, e in self._entries.items()}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._disk)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> TensorEntry:
        canon = self._disk.get(name, name)
        try:
            return self._entries[canon]
        except KeyError:
            raise FrankenscopeError(f"{self.path}: no tensor {name!r}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entry(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return self.entry(name).dtype

    def location(self, name: str) -> ParamLocation:
        return self.adapter.param_location(self.entry(name).canonical)

    # -- data -----------------------------------------------------------------------------
    def get(self, name: str) -> torch.Tensor:
        """One tensor, in its stored dtype (memory-mapped until touched; nothing else is loaded)."""
        e = self.entry(name)
        try:
            with safe_open(str(e.file), framework="pt") as f:
                return f.get_tensor(e.disk_name)
        except (OSError, RuntimeError, ValueError, SafetensorError) as err:
            raise FrankenscopeError(f"{e.file}: cannot read tensor {e.disk_name!r} ({err})") from err

    # -- config ---------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """LLM decoder layers: text_config.num_hidden_layers (nested or flat config), else counted."""
        n = _nested(self.config, "text_config", "num_hidden_layers")
        return n if n is not None else self._count("llm")

    @property
    def n_vision_blocks(self) -> int:
        """Vision blocks: vision_config.depth (or num_hidden_layers), else counted from the names."""
        vc = self.config.get("vision_config") or {}
        for k in ("depth", "num_hidden_layers"):
            if isinstance(vc.get(k), int):
                return vc[k]
        return self._count("vision")

    def layer_indices(self, component: str) -> set[int]:
        """Block indices of `component` ('llm' or 'vision') that have tensors on disk."""
        out = set()
        for c in self._entries:
            loc = self.adapter.param_location(c)
            if loc.component == component and loc.layer is not None:
                out.add(loc.layer)
        return out

    def _count(self, component: str) -> int:
        idx = self.layer_indices(component)
        return max(idx) + 1 if idx else 0

    def fingerprint(self, full: bool = False) -> str:
        """A hex sha256 identifying the checkpoint.

        Hashed: config.json (if any), then per weight file its name, size, header bytes, and either its
        full content (`full=True`, reads every byte) or 18 sampled 64 KiB blocks (first, last and 16
        evenly spaced), which tells apart checkpoints of the same shapes at a cost of ~1 MiB per file.
        """
        h = hashlib.sha256()
        cfg = self.folder / "config.json"
        if cfg.is_file():
            h.update(cfg.read_bytes())
        for f in self.files:
            size = f.stat().st_size
            h.update(f"\n{f.name}\n{size}\n".encode())
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                h.update(fh.read(n))
                if full:
                    continue
                block = 1 << 16
                offsets = [0, max(0, size - block)] + [size * i // 17 for i in range(1, 17)]
                for off in offsets:
                    fh.seek(off)
                    h.update(fh.read(block))
            if full:
                h.update(sha256_file(f).encode())
        return h.hexdigest()

    def describe(self, full_hash: bool = False) -> dict[str, Any]:
        """Provenance: path, architecture, layer counts, files, fingerprint."""
        return {"path": str(self.path), "architecture": self.architecture, "n_layers": self.n_layers,
                "n_vision_blocks": self.n_vision_blocks, "files": [f.name for f in self.files],
                "n_tensors": len(self), "fingerprint": self.fingerprint(full_hash),
                "fingerprint_kind": "sha256-full" if full_hash else "sha256-sampled"}
