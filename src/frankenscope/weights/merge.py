"""Region-wise "Frankenstein" merges of two checkpoints of one model (paper §3.3, Table 2).

A plan ``X:Y:Z`` names the donor of the early, mid and late LLM regions (regions from a `Partition`).
A region is whole LLM decoder layers: attention (with biases), MLP, and both RMSNorms. Everything
outside the decoder layers — vision tower, projector (merger), token embeddings, final norm, lm_head —
comes from one donor, `non_layer_from`:

  * ``"early"`` (default): the donor of the early region. This is what the reference code does (it
    loads the early donor as the host and copies decoder layers into it), so IN:RL:RL keeps IN's
    vision tower and RL:IN:IN takes RL's. The choice is recorded in merge.json / merge.yaml;
  * a donor label (``"IN"`` / ``"RL"``): that donor, whatever the plan.

The config, generation config and processor/tokenizer files also come from the non-layer donor.

Safety: donors must agree on architecture, layer counts, canonical tensor names, shapes and dtypes;
this is checked before anything is written. An existing non-empty output folder is replaced only when
it is an earlier merge (it holds a merge.json of kind "merge") or `overwrite` is set; anything else is
refused. The output folder is built in a temporary sibling and swapped into place only when complete
(`atomic_dir`), so a failed or killed merge leaves the previous output (or nothing) behind.

Streaming: tensor bytes are copied straight from the donor's safetensors file into the output shard
(in 16 MiB pieces, no decoding), so the merge is bit-exact by construction and needs almost no memory.
Each shard's header is written first from the known dtypes and shapes.
"""

from __future__ import annotations

import json
import shutil
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from frankenscope.errors import FrankenscopeError
from frankenscope.io import atomic_dir, check_out, fault_point, output_of, write_result, write_text_atomic
from frankenscope.weights.partition import REGIONS, Partition
from frankenscope.weights.reader import INDEX_FILE, SINGLE_FILE, CheckpointReader, TensorEntry

SCHEMA_VERSION = 1
#: The six hybrids of the paper, as early:mid:late donors.
PAPER_PLANS: tuple[str, ...] = ("IN:RL:RL", "IN:IN:RL", "RL:RL:IN", "RL:IN:IN", "IN:RL:IN", "RL:IN:RL")
DEFAULT_SHARD_BYTES = 2 * 1024**3
_COPY_BLOCK = 16 * 1024 * 1024
#: donor files that are weights or earlier frankenscope outputs: never copied into a merge
_SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".md")
#: Files never copied from the non-layer donor: weights indexes, and frankenscope's own records of how the donor
#: was made (a hybrid is not that stage: its provenance is merge.json).
_SKIP_FILES = {INDEX_FILE, "pytorch_model.bin.index.json", "merge.json", "merge.yaml", "diff.json", "stage.json",
               "manifest.json"}


def plan_dirname(plan: str) -> str:
    """Folder name of a plan: 'IN:RL:RL' -> 'IN_RL_RL'."""
    return plan.replace(":", "_")


def parse_plan(plan: str, donors: Sequence[str]) -> dict[str, str]:
    """'IN:RL:RL' -> {'early': 'IN', 'mid': 'RL', 'late': 'RL'} (labels matched case-insensitively)."""
    parts = [p.strip().upper() for p in plan.split(":")]
    known = {d.upper(): d for d in donors}
    if len(parts) != len(REGIONS) or not all(parts):
        raise FrankenscopeError(f"plan {plan!r}: give three donors as early:mid:late, e.g. IN:RL:RL")
    bad = [p for p in parts if p not in known]
    if bad:
        raise FrankenscopeError(f"plan {plan!r}: unknown donor(s) {bad}; donors are {', '.join(known.values())}")
    return {r: known[p] for r, p in zip(REGIONS, parts, strict=True)}


def validate_donors(readers: Mapping[str, CheckpointReader]) -> None:
    """Refuse donors that differ in architecture, layer counts, tensor names, shapes or dtypes."""
    labels = list(readers)
    if len(labels) < 2:
        raise FrankenscopeError("a merge needs at least two donors")
    a_lab = labels[0]
    a = readers[a_lab]
    for lab, rd in readers.items():
        if not (rd.folder / "config.json").is_file() or rd.path.is_file():
            raise FrankenscopeError(f"donor {lab} ({rd.path}): a merge needs a model folder with config.json")
        llm = rd.layer_indices("llm")
        if llm != set(range(rd.n_layers)):
            raise FrankenscopeError(
                f"donor {lab} ({rd.path}): config says {rd.n_layers} LLM layers but the weights hold layers "
                f"{sorted(llm)[:3]}...{sorted(llm)[-3:] if llm else []} ({len(llm)} of them)")
    for lab in labels[1:]:
        b = readers[lab]
        if b.architecture != a.architecture:
            raise FrankenscopeError(
                f"donors differ in architecture: {a_lab} is {a.architecture}, {lab} is {b.architecture}")
        for what, desc in (("n_layers", "LLM decoder layers"), ("n_vision_blocks", "vision blocks")):
            if getattr(a, what) != getattr(b, what):
                raise FrankenscopeError(f"donors differ in {desc}: {a_lab} has {getattr(a, what)}, "
                                        f"{lab} has {getattr(b, what)}")
        na, nb = set(a.canonical_names()), set(b.canonical_names())
        if na != nb:
            only_a, only_b = sorted(na - nb), sorted(nb - na)
            raise FrankenscopeError(
                f"donors hold different tensors: only in {a_lab}: {only_a[:5]}{' ...' if len(only_a) > 5 else ''}; "
                f"only in {lab}: {only_b[:5]}{' ...' if len(only_b) > 5 else ''}")
        for name in a.canonical_names():
            ea, eb = a.entry(name), b.entry(name)
            if ea.shape != eb.shape:
                raise FrankenscopeError(f"donors differ in the shape of {name}: {a_lab} {list(ea.shape)}, "
                                        f"{lab} {list(eb.shape)}")
            if ea.dtype_code != eb.dtype_code:
                raise FrankenscopeError(f"donors differ in the dtype of {name}: {a_lab} {ea.dtype_code}, "
                                        f"{lab} {eb.dtype_code} (cast one donor first)")


def is_merge_output(path: Path) -> bool:
    """True for a folder written by an earlier merge (merge.json of kind "merge")."""
    return output_of(path, "merge.json", "merge")


def _check_out(out: Path, readers: Mapping[str, CheckpointReader], overwrite: bool = False) -> None:
    o = out.resolve()
    for lab, rd in readers.items():
        f = rd.folder.resolve()
        if o == f or f in o.parents or o in f.parents:
            raise FrankenscopeError(f"output {out} overlaps donor {lab} ({rd.folder}); choose another folder")
    check_out(out, own=is_merge_output, overwrite=overwrite)


def _source_plan(readers: Mapping[str, CheckpointReader], regions: dict[str, str], layers: dict[str, list[int]],
                 non_layer: str) -> list[tuple[str, str, TensorEntry]]:
    """(output name, donor label, donor entry) for every tensor, in the non-layer donor's storage order."""
    donor_of_layer = {layer: regions[r] for r, ls in layers.items() for layer in ls}
    host = readers[non_layer]
    out = []
    for e in host.entries():
        loc = host.adapter.param_location(e.canonical)
        lab = donor_of_layer[loc.layer] if loc.component == "llm" and loc.layer is not None else non_layer
        out.append((e.disk_name, lab, readers[lab].entry(e.canonical)))
    return out


def _shards(items: list[tuple[str, str, TensorEntry]], shard_bytes: int) -> list[list[tuple[str, str, TensorEntry]]]:
    shards: list[list[tuple[str, str, TensorEntry]]] = [[]]
    size = 0
    for it in items:
        if shards[-1] and size + it[2].nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(it)
        size += it[2].nbytes
    return shards


def write_safetensors_streaming(path: Path, items: Sequence[tuple[str, TensorEntry]], metadata: dict[str, str]) -> int:
    """Write a safetensors file whose tensors are byte-copied from other safetensors files.

    items: (name in the new file, source entry). The header (8-byte little-endian length, JSON with
    dtype/shape/data_offsets per tensor and string-valued __metadata__, space-padded to 8 bytes) is
    written first; then each tensor's bytes are copied in order. Returns the data size in bytes.
    """
    header: dict[str, Any] = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    for name, e in items:
        header[name] = {"dtype": e.dtype_code, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for _, e in items:
            with open(e.file, "rb") as src:
                src.seek(e.start)
                left = e.nbytes
                while left:
                    block = src.read(min(_COPY_BLOCK, left))
                    if not block:
                        raise FrankenscopeError(f"{e.file}: ends inside tensor {e.disk_name!r} (truncated file?)")
                    out.write(block)
                    left -= len(block)
            fault_point("merge:tensor")
    return offset


def _copy_side_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.name not in _SKIP_FILES \
                and not f.name.endswith(_SKIP_SUFFIXES):
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    return copied


def _slices(layers: dict[str, list[int]], regions: dict[str, str], paths: Mapping[str, str]) -> list[dict[str, Any]]:
    """mergekit passthrough slices: one per contiguous run of layers from one donor, half-open ranges."""
    owner = sorted((layer, regions[r]) for r, ls in layers.items() for layer in ls)
    runs: list[list[Any]] = []
    for layer, lab in owner:
        if runs and runs[-1][1] == lab and runs[-1][0][1] == layer:
            runs[-1][0][1] = layer + 1
        else:
            runs.append([[layer, layer + 1], lab])
    return [{"sources": [{"model": paths[lab], "layer_range": rng}]} for rng, lab in runs]


#: mergekit's module names for the parts outside the decoder layers of the Qwen2-VL / Qwen2.5-VL architecture
#: (mergekit treats these as modular: a text decoder, a vision tower and a projector).
MERGEKIT_SIDE_MODULES = ("vision_tower", "multi_modal_projector")


def _merge_yaml(plan: str, regions: dict[str, str], layers: dict[str, list[int]], non_layer: str,
                non_layer_from: str, partition: Partition, paths: Mapping[str, str], dtype: str) -> str:
    """A mergekit passthrough recipe in its modular syntax: `modules.text_decoder.slices` copy whole decoder
    layers [start, end) from one donor each; the vision tower and projector are taken whole from the
    non-layer donor. frankenscope's own record of the merge (regions, donors, tensor counts) is merge.json."""
    doc: dict[str, Any] = {
        "merge_method": "passthrough",
        "base_model": paths[non_layer],
        "modules": {
            "text_decoder": {"slices": _slices(layers, regions, paths)},
            **{m: {"models": [{"model": paths[non_layer]}]} for m in MERGEKIT_SIDE_MODULES},
        },
    }
    if dtype != "mixed":
        doc["dtype"] = dtype
    late = regions["late"]
    head = ("# Frankenstein merge written by frankenscope: an equivalent mergekit passthrough recipe\n"
            f"# (plan {plan}, partition {partition}, non-layer donor {non_layer}; details in merge.json).\n"
            "# Each text_decoder slice copies whole decoder layers [start, end) from one donor; the vision tower\n"
            "# and projector come whole from the non-layer donor. mergekit takes the token embeddings from the\n"
            "# first slice's model and the final norm / lm_head from the last slice's model; frankenscope takes\n"
            "# all of them from the non-layer donor.\n")
    if late != non_layer:
        head += (f"# Here they differ: mergekit would take the final norm and lm_head from {late}, frankenscope "
                 f"from {non_layer}.\n")
    return head + yaml.safe_dump(doc, sort_keys=False)


def _dtype_name(readers: Mapping[str, CheckpointReader], non_layer: str) -> str:
    codes = {e.dtype_code for e in readers[non_layer].entries()}
    names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
    floats = [names[c] for c in codes if c in names]
    return floats[0] if len(floats) == 1 else "mixed"


def _prepare(donors: Mapping[str, str | Path], architecture: str | None) -> dict[str, CheckpointReader]:
    if not donors:
        raise FrankenscopeError("no donors given")
    readers = {lab: CheckpointReader(p, architecture=architecture) for lab, p in donors.items()}
    validate_donors(readers)
    return readers


def _resolve(readers: Mapping[str, CheckpointReader], plan: str, partition: Partition,
             non_layer_from: str) -> tuple[dict[str, str], dict[str, list[int]], str]:
    regions = parse_plan(plan, list(readers))
    layers = partition.regions(next(iter(readers.values())).n_layers)
    if non_layer_from.lower() == "early":
        non_layer = regions["early"]
    else:
        known = {lab.upper(): lab for lab in readers}
        if non_layer_from.upper() not in known:
            raise FrankenscopeError(f"--non-layer-from {non_layer_from!r}: use 'early' or one of {', '.join(readers)}")
        non_layer = known[non_layer_from.upper()]
    return regions, layers, non_layer


def _write_merge(readers: Mapping[str, CheckpointReader], plan: str, out: Path, partition: Partition,
                 non_layer_from: str, shard_bytes: int, progress: bool, inputs: dict[str, Any],
                 overwrite: bool = False) -> Path:
    t0 = time.time()
    regions, layers, non_layer = _resolve(readers, plan, partition, non_layer_from)
    items = _source_plan(readers, regions, layers, non_layer)
    shards = _shards(items, shard_bytes)
    paths = {lab: str(rd.path) for lab, rd in readers.items()}
    meta = {"format": "pt", "frankenscope_merge": plan, "partition": str(partition), "non_layer_donor": non_layer}
    with atomic_dir(out, own=is_merge_output, overwrite=overwrite) as tmp:
        copied = _copy_side_files(readers[non_layer].folder, tmp)
        weight_map: dict[str, str] = {}
        total = 0
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(e.nbytes for _, _, e in items), unit="B", unit_scale=True, desc=f"merge {plan}")
        for i, shard in enumerate(shards):
            fname = SINGLE_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            total += write_safetensors_streaming(tmp / fname, [(n, e) for n, _, e in shard], meta)
            for n, _, e in shard:
                weight_map[n] = fname
                if bar is not None:
                    bar.update(e.nbytes)
        if bar is not None:
            bar.close()
        if len(shards) > 1:
            write_text_atomic(tmp / INDEX_FILE, json.dumps(
                {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
        CheckpointReader(tmp, architecture=readers[non_layer].architecture)  # re-read every header written: fails here (and leaves nothing) if malformed
        write_text_atomic(tmp / "merge.yaml", _merge_yaml(plan, regions, layers, non_layer, non_layer_from,
                                                          partition, paths, _dtype_name(readers, non_layer)))
        counts: dict[str, int] = {}
        for _, lab, _ in items:
            counts[lab] = counts.get(lab, 0) + 1
        write_result(tmp / "merge.json", kind="merge", schema_version=SCHEMA_VERSION, seed=None, inputs=inputs,
                     payload={
                         "plan": plan, "partition": str(partition), "regions": layers, "region_donors": regions,
                         "non_layer_from": non_layer_from, "non_layer_donor": non_layer,
                         "layer_donors": {str(layer): regions[r] for r in REGIONS for layer in layers[r]},
                         "tensors_from": counts, "n_tensors": len(items), "total_bytes": total,
                         "shards": sorted(set(weight_map.values())), "copied_files": copied,
                         "notes": sorted({f"{lab}: {n}" for lab, rd in readers.items() for n in rd.notes}),
                         "wall_s": round(time.time() - t0, 2),
                     })
    return out


def merge(donors: Mapping[str, str | Path], plan: str, out: str | Path, *, partition: str | Partition = "thirds",
          non_layer_from: str = "early", shard_bytes: int = DEFAULT_SHARD_BYTES, full_hash: bool = False,
          architecture: str | None = None, progress: bool = True, overwrite: bool = False) -> Path:
    """Write the hybrid `plan` (early:mid:late donors, e.g. 'IN:RL:RL') of `donors` as an HF folder at out.

    donors: label -> model folder, e.g. {"IN": ..., "RL": ...}. Everything is validated (donors, plan,
    partition, non_layer_from, output location) before the first byte is written. An existing non-empty
    `out` that is not an earlier merge is refused unless `overwrite`.
    """
    out, part = Path(out), Partition.parse(partition)
    readers = _prepare(donors, architecture)
    _resolve(readers, plan, part, non_layer_from)
    _check_out(out, readers, overwrite)
    inputs = {lab: rd.describe(full_hash) for lab, rd in readers.items()}
    return _write_merge(readers, plan, out, part, non_layer_from, shard_bytes, progress, inputs, overwrite)


def merge_all_hybrids(donors: Mapping[str, str | Path], out: str | Path, *, plans: Sequence[str] = PAPER_PLANS,
                      partition: str | Partition = "thirds", non_layer_from: str = "early",
                      shard_bytes: int = DEFAULT_SHARD_BYTES, full_hash: bool = False,
                      architecture: str | None = None, progress: bool = True,
                      overwrite: bool = False) -> list[Path]:
    """Every plan (default: the paper's six) into OUT/<plan with ':' -> '_'>/; all validated first."""
    out, part = Path(out), Partition.parse(partition)
    readers = _prepare(donors, architecture)
    if not plans or len(set(map(plan_dirname, plans))) != len(plans):
        raise FrankenscopeError(f"plans must be given and distinct: {list(plans)}")
    for plan in plans:
        _resolve(readers, plan, part, non_layer_from)
        _check_out(out / plan_dirname(plan), readers, overwrite)
    inputs = {lab: rd.describe(full_hash) for lab, rd in readers.items()}
    return [_write_merge(readers, plan, out / plan_dirname(plan), part, non_layer_from, shard_bytes,
                         progress, inputs, overwrite) for plan in plans]
