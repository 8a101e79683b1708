"""Weight diffs between checkpoints: update energy (Frobenius) and diversity (singular spectra).

What is compared (paper §3.2, reference characterisation scripts):
  * three checkpoints: the IN update ``in = W_IN - W_Base`` and the RL update ``rl = W_RL - W_IN``;
  * two checkpoints (pairwise form): ``delta = W_to - W_from``.
Deltas are taken in float32 (the reference subtracts in fp16 first; fp32 keeps tiny RL updates exact).

Streaming: tensors are read one canonical name at a time from each checkpoint (`CheckpointReader`),
compared in row chunks, and dropped; only a tensor that gets an SVD is materialised as one float32
delta. Peak memory is a few tensors, whatever the model size; the three models are never loaded.

Which tensors (matches the reference code's selection):
  * every tensor gets per-tensor numbers (Frobenius norm, relative norm, max |delta|), so a diff of a
    checkpoint with itself can be checked to be zero *everywhere*, biases and norms included;
  * *selected* tensors (name contains "weight" and not "norm", case-insensitive) enter the per-layer,
    per-region and per-component aggregates; 1-D selected tensors (e.g. ``merger.ln_q.weight``) count
    for energy, like the reference energy script;
  * *spectral* metrics only for selected tensors with >= 2 dims and at most `max_svd_elements`
    elements (default 1e8, the reference's cap: token embeddings / lm_head of real models are skipped);
    the Conv3d patch embedding is reshaped to (out_channels, -1).

Relative norm: ``||delta||_F / ||W_start||_F`` with W_start the starting weights of that update (Base
for the IN update, IN for the RL update). The reference divides both updates by ||W_IN||_F; that
number can be rebuilt from the stored ``fro_ref`` of the RL update (= ||W_IN||_F).

Unified layer index (`ParamLocation.unified_index`): vision blocks 0..V-1, projector V, LLM layers
V+1..V+L (the reference uses -V..-1, 0, 1..L: subtract V to convert). Regions (early/mid/late) come
from the `Partition` over the LLM layers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from frankenscope.errors import FrankenscopeError
from frankenscope.io import write_result
from frankenscope.weights.partition import REGIONS, Partition
from frankenscope.weights.reader import CheckpointReader, TensorEntry

SCHEMA_VERSION = 1
DEFAULT_TOP_K = 50
DEFAULT_MAX_SVD_ELEMENTS = 100_000_000
#: matrices up to this many elements get their SVD in float64 (cheap, exact enough for the tests)
FLOAT64_SVD_ELEMENTS = 1 << 20
_CHUNK = 1 << 22  # elements per chunk when comparing two stored tensors
SVD_METHODS = ("svd", "gram")


# ------------------------------------------------------------------------------------------
# kernels: each takes a delta matrix D (or its singular values s_1 >= s_2 >= ... >= s_r >= 0)
# ------------------------------------------------------------------------------------------
def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """2-D view of a weight: unchanged if 2-D, else (shape[0], -1) (e.g. a Conv3d patch embedding)."""
    if t.dim() < 2:
        raise FrankenscopeError(f"a {t.dim()}-D tensor has no singular values")
    return t if t.dim() == 2 else t.reshape(t.shape[0], -1)


def frobenius(d: torch.Tensor) -> float:
    """||D||_F = sqrt(sum_ij D_ij^2) (accumulated in float64) = sqrt(sum_i s_i^2)."""
    return float(torch.linalg.vector_norm(d.reshape(-1), dtype=torch.float64))


def singular_values(d: torch.Tensor, method: str = "svd") -> torch.Tensor:
    """Singular values of D, descending, as float64 on the CPU.

    method "svd": torch.linalg.svdvals (float64 and single-threaded for matrices up to
    FLOAT64_SVD_ELEMENTS elements, float32 above), on the tall orientation (same values, much faster for wide matrices).
    method "gram": sqrt of the eigenvalues of the float64 Gram matrix D^T D (or D D^T) — several times
    faster on CPUs; squaring the matrix costs accuracy only for s_i below ~1e-7 s_1, far beneath the
    top-k spectrum and everything else computed here.
    """
    if method not in SVD_METHODS:
        raise FrankenscopeError(f"unknown SVD method {method!r}; choose one of {', '.join(SVD_METHODS)}")
    m = as_matrix(d)
    if m.shape[0] < m.shape[1]:
        m = m.T
    if method == "gram":
        m64 = m.to(torch.float64)
        ev = torch.linalg.eigvalsh(m64.T @ m64)
        return ev.clamp_min(0).sqrt().flip(0).cpu()
    if m.numel() <= FLOAT64_SVD_ELEMENTS:
        with _one_thread(m.device.type == "cpu"):
            return torch.linalg.svdvals(m.to(torch.float64)).cpu()
    return torch.linalg.svdvals(m.to(torch.float32)).to(torch.float64).cpu()


@contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """Run a small CPU SVD single-threaded.

    For small matrices threading buys nothing, and MKL's threaded gesdd slows down by up to 100x when
    another process competes for the cores (measured: 384x128 takes 1 ms on one thread, 110 ms on two
    busy cores). torch's thread count is process-wide, so it is restored right after.
    """
    n = torch.get_num_threads()
    if active and n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


#: Singular values at or below RANK_RTOL * s_1 are treated as zero (float32 SVD rounding is ~1e-7 s_1).
#: The tolerance is relative to s_1 only: it must not grow with the matrix size, or real directions of a
#: large update (s_i = s_1/i over 3584 values ends at 2.8e-4 s_1) would be dropped.
RANK_RTOL = 1e-6


def _positive(s: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
    """The singular values above RANK_RTOL * s_1 (`shape` is accepted for compatibility and not used).

    Dropping values below it keeps log() finite and gives the exact answer for rank-deficient deltas.
    An all-zero delta has none.
    """
    if s.numel() == 0 or float(s[0]) <= 0:
        return s[:0]
    return s[s > float(s[0]) * RANK_RTOL]


def spectral_norm(s: torch.Tensor) -> float:
    """||D||_2 = s_1 (0 for an all-zero delta)."""
    return float(s[0]) if s.numel() else 0.0


def stable_rank(fro: float, s1: float) -> float:
    """||D||_F^2 / s_1^2 = sum_i s_i^2 / s_1^2, in [1, r]; 0 for an all-zero delta."""
    return fro * fro / (s1 * s1) if s1 > 0 else 0.0


def effective_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli effective rank exp(H(p)), p_i = s_i / sum_j s_j, H = -sum_i p_i ln p_i.

    Uses s (not s^2), over the values above RANK_RTOL * s_1 (pass s through `_positive`); 0 for an all-zero
    delta. Example: s_i = 1/i, i = 1..3584 gives 397.4.
    """
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p)).sum()))


def normalized_spectrum(s: torch.Tensor, k: int = DEFAULT_TOP_K) -> list[float]:
    """ln(s_i / s_1) for the top k values (natural log; the top value is 0); [] for a zero delta."""
    if s.numel() == 0:
        return []
    top = s[:k]
    return [float(x) for x in torch.log(top / top[0])]


def log_volume(s: torch.Tensor, k: int = DEFAULT_TOP_K) -> float | None:
    """sum_{i<=k} ln s_i over the top k singular values (the reference's window: k = 50).

    Not normalised, so it grows with the update's scale as well as its spread; None for a zero delta.
    """
    if s.numel() == 0:
        return None
    return float(torch.log(s[:k]).sum())


def spectral_metrics(d: torch.Tensor, top_k: int = DEFAULT_TOP_K, method: str = "svd",
                     fro: float | None = None) -> dict[str, Any]:
    """All spectral numbers of one delta matrix (fro may be passed in when already known)."""
    m = as_matrix(d)
    fro = frobenius(m) if fro is None else fro
    s = _positive(singular_values(m, method), m.shape)
    s1 = spectral_norm(s)
    return {"spectral_norm": s1, "stable_rank": stable_rank(fro, s1), "effective_rank": effective_rank(s),
            "log_volume": log_volume(s, top_k), "numerical_rank": int(s.numel()),
            "spectrum": normalized_spectrum(s, top_k)}


# ------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------
def is_selected(name: str) -> bool:
    """The reference selection: the name contains 'weight' and not 'norm' (case-insensitive)."""
    n = name.lower()
    return "weight" in n and "norm" not in n


# ------------------------------------------------------------------------------------------
# streaming comparison
# ------------------------------------------------------------------------------------------
def compare_tensors(a: torch.Tensor, b: torch.Tensor, *, keep_delta: bool,
                    chunk: int = _CHUNK) -> tuple[dict[str, float], torch.Tensor | None]:
    """Compare W_start = a with W_end = b in row chunks.

    Returns ({fro: ||b - a||_F, fro_ref: ||a||_F, max_abs: max |b - a|}, the float32 delta b - a if
    keep_delta else None). Without keep_delta only one chunk of float32 is alive at a time.
    """
    if a.shape != b.shape:
        raise FrankenscopeError(f"shape {tuple(a.shape)} vs {tuple(b.shape)}")
    af, bf = a.reshape(-1), b.reshape(-1)
    delta = torch.empty(af.shape, dtype=torch.float32) if keep_delta else None
    sq_d = sq_a = 0.0
    mx = 0.0
    for i in range(0, af.numel(), chunk):
        ca = af[i:i + chunk].to(torch.float32)
        cd = bf[i:i + chunk].to(torch.float32) - ca
        sq_a += float(torch.linalg.vector_norm(ca, dtype=torch.float64)) ** 2
        sq_d += float(torch.linalg.vector_norm(cd, dtype=torch.float64)) ** 2
        if cd.numel():
            mx = max(mx, float(cd.abs().max()))
        if delta is not None:
            delta[i:i + chunk] = cd
        del ca, cd
    stats = {"fro": math.sqrt(sq_d), "fro_ref": math.sqrt(sq_a), "max_abs": mx}
    return stats, (delta.reshape(a.shape) if delta is not None else None)


def _check_compatible(readers: Mapping[str, CheckpointReader]) -> list[str]:
    """Same architecture, layer counts, canonical names and shapes; the shared canonical names."""
    roles = list(readers)
    first = readers[roles[0]]
    for r in roles[1:]:
        o = readers[r]
        if o.architecture != first.architecture:
            raise FrankenscopeError(f"{roles[0]} is {first.architecture} but {r} is {o.architecture}: "
                                    f"diffs need checkpoints of one architecture")
        for what in ("n_layers", "n_vision_blocks"):
            if getattr(o, what) != getattr(first, what):
                raise FrankenscopeError(f"{roles[0]} has {what}={getattr(first, what)} but {r} has "
                                        f"{getattr(o, what)}")

    def names(rd: CheckpointReader) -> set[str]:
        # a tied lm_head may be stored by one writer and omitted by another: drop it everywhere
        return {c for c in rd.canonical_names()
                if not (rd.tied_embeddings and rd.location(c).component == "lm_head")}

    common = names(first)
    for r in roles[1:]:
        other = names(readers[r])
        if other != common:
            a, b = sorted(common - other), sorted(other - common)
            raise FrankenscopeError(
                f"{roles[0]} and {r} hold different tensors: only in {roles[0]}: {a[:5]}"
                f"{' ...' if len(a) > 5 else ''}; only in {r}: {b[:5]}{' ...' if len(b) > 5 else ''}")
        for c in common:
            if readers[r].shape(c) != first.shape(c):
                raise FrankenscopeError(f"{c}: shape {first.shape(c)} in {roles[0]} but {readers[r].shape(c)} in {r}")
    return [c for c in first.canonical_names() if c in common]


# ------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


#: The value a short spectrum is padded with: ln(RANK_RTOL), i.e. "below the rank tolerance".
SPECTRUM_FLOOR = math.log(RANK_RTOL)


def _mean_spectrum(specs: list[list[float]]) -> list[float]:
    """Per rank i: the mean of ln(s_i/s_1) over every matrix with an update.

    A spectrum shorter than the longest (a matrix of lower rank than k) is padded explicitly with
    SPECTRUM_FLOOR = ln(1e-6) ~ -13.8: its missing singular values are below the rank tolerance, not
    absent, so every rank is averaged over the same matrices. All-zero deltas (empty spectra) have no
    direction at all and are left out.
    """
    rows = [s for s in specs if s]
    k = max((len(s) for s in rows), default=0)
    padded = [s + [SPECTRUM_FLOOR] * (k - len(s)) for s in rows]
    return [sum(col) / len(col) for col in zip(*padded, strict=True)] if padded else []


def _aggregate(metrics: list[dict[str, Any]], kinds: list[str] | None = None) -> dict[str, Any]:
    fro = [m["fro"] for m in metrics]
    rel = [m["relative"] for m in metrics if m["relative"] is not None]
    spec = [m for m in metrics if m.get("spectral_norm") is not None]
    out: dict[str, Any] = {
        "n": len(metrics), "fro_mean": _mean(fro), "fro_sum": sum(fro),
        "fro_total": math.sqrt(sum(f * f for f in fro)), "relative_mean": _mean(rel),
        "n_spectral": len(spec),
    }
    for key in ("spectral_norm", "stable_rank", "effective_rank", "log_volume"):
        out[f"{key}_mean"] = _mean([m[key] for m in spec if m[key] is not None])
    out["spectrum_mean"] = _mean_spectrum([m["spectrum"] for m in spec])
    if kinds is not None:
        for kind in ("attention", "mlp"):
            sub = [m["fro"] for m, k in zip(metrics, kinds, strict=True) if k == kind]
            out[kind] = {"n": len(sub), "fro_mean": _mean(sub), "fro_sum": sum(sub)}
    return out


def _section(component: str) -> str:
    """Where a component sits on the unified axis: vision, projector or llm."""
    return component if component in ("vision", "projector", "llm") else "other"


# ------------------------------------------------------------------------------------------
# the diff
# ------------------------------------------------------------------------------------------
def diff(checkpoints: Mapping[str, str | Path], deltas: Sequence[tuple[str, str, str]], out: str | Path, *,
         top_k: int = DEFAULT_TOP_K, partition: str | Partition = "thirds",
         max_svd_elements: int = DEFAULT_MAX_SVD_ELEMENTS, svd_method: str = "svd", spectral: bool = True,
         device: str = "cpu", plots: bool = True, full_hash: bool = False, architecture: str | None = None,
         progress: bool = True) -> dict[str, Any]:
    """Diff checkpoints tensor by tensor; write OUT/diff.json (+ figures) and return its document.

    checkpoints: role -> checkpoint path (e.g. {"base": B, "in": I, "rl": R}).
    deltas: (label, from_role, to_role) triples; each delta is W_to - W_from.
    Most users want `diff_models` (Base/IN/RL) or `diff_pair`.
    """
    if top_k < 1:
        raise FrankenscopeError(f"top_k must be >= 1, got {top_k}")
    if svd_method not in SVD_METHODS:
        raise FrankenscopeError(f"unknown SVD method {svd_method!r}; choose one of {', '.join(SVD_METHODS)}")
    for label, a, b in deltas:
        for role in (a, b):
            if role not in checkpoints:
                raise FrankenscopeError(f"delta {label!r} refers to unknown checkpoint {role!r}")
    out = Path(out)
    part = Partition.parse(partition)
    t0 = time.time()
    readers = {role: CheckpointReader(p, architecture=architecture) for role, p in checkpoints.items()}
    names = _check_compatible(readers)
    first = next(iter(readers.values()))
    n_layers, n_vis = first.n_layers, first.n_vision_blocks
    notes = sorted({f"{role}: {n}" for role, r in readers.items() for n in r.notes})
    try:
        regions = part.regions(n_layers)
    except FrankenscopeError:
        if n_layers >= 3:
            raise
        regions = {}
        notes.append(f"{n_layers} LLM layers cannot be split into regions: no per-region numbers")
    inputs = {role: r.describe(full_hash) for role, r in readers.items()}
    records = _tensor_records(readers, names, deltas, regions, top_k=top_k, max_svd_elements=max_svd_elements,
                              svd_method=svd_method, spectral=spectral, device=device, progress=progress)
    labels = [d[0] for d in deltas]
    payload = {
        "settings": {
            "top_k": top_k, "partition": str(part), "max_svd_elements": max_svd_elements,
            "svd_method": svd_method, "spectral": spectral, "delta_dtype": "float32", "log": "natural",
            "selection": "aggregates use tensors whose name contains 'weight' and not 'norm'; spectral "
                         "metrics need >= 2 dims and <= max_svd_elements elements",
            "relative_norm": "||W_to - W_from||_F / ||W_from||_F",
            "log_volume": f"sum of ln s_i over the top {top_k} singular values",
            "rank_tolerance": f"singular values <= {RANK_RTOL:g} * s_1 count as zero",
            "spectrum_mean": f"short spectra padded with ln({RANK_RTOL:g}); all-zero deltas left out",
        },
        "deltas": {lb: {"from": a, "to": b} for lb, a, b in deltas},
        "layout": {
            "architecture": first.architecture, "n_layers": n_layers, "n_vision_blocks": n_vis,
            "unified_axis": {"vision": [0, n_vis - 1], "projector": n_vis, "llm": [n_vis + 1, n_vis + n_layers]},
            "partition": regions,
        },
        "notes": notes,
        **_summaries(records, labels, regions),
        "tensors": records,
        "wall_s": round(time.time() - t0, 2),
    }
    path = write_result(out / "diff.json", kind="diff", schema_version=SCHEMA_VERSION, payload=payload,
                        seed=None, inputs=inputs)
    if plots:  # figures are drawn from the written file only
        from frankenscope.weights.plots import plot_diff

        plot_diff(path, out)
    return json.loads(path.read_text())


def _tensor_records(readers: Mapping[str, CheckpointReader], names: list[str], deltas: Sequence[tuple[str, str, str]],
                    regions: dict[str, list[int]], *, top_k: int, max_svd_elements: int, svd_method: str,
                    spectral: bool, device: str, progress: bool) -> list[dict[str, Any]]:
    """One record per tensor: where it lives (component, layer, unified index, region, kind) and, per delta
    W_to - W_from, its `compare_tensors` statistics and (selected matrices) `spectral_metrics`. Streams
    tensor by tensor and frees each checkpoint's copy as soon as no later delta needs it."""
    first = next(iter(readers.values()))
    n_vis = first.n_vision_blocks
    region_of = {layer: r for r, layers in regions.items() for layer in layers}
    # the order in which the roles are last needed for one tensor, so each is freed early
    last_use = {role: max(i for i, (_, a, b) in enumerate(deltas) if role in (a, b)) for role in readers}
    records: list[dict[str, Any]] = []
    iterator: Any = names
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(names, desc="diff", unit="tensor")
    for name in iterator:
        entry: TensorEntry = first.entry(name)
        loc = first.adapter.param_location(name)
        selected = is_selected(name)
        want_svd = spectral and selected and len(entry.shape) >= 2 and entry.numel <= max_svd_elements
        rec: dict[str, Any] = {
            "name": name, "disk_name": entry.disk_name, "shape": list(entry.shape),
            "dtype": {role: str(r.dtype(name)).removeprefix("torch.") for role, r in readers.items()},
            "component": loc.component, "layer": loc.layer, "unified_index": loc.unified_index(n_vis),
            "region": region_of.get(loc.layer) if loc.component == "llm" else None,
            "kind": first.adapter.matrix_kind(name), "selected": selected, "spectral": want_svd, "stats": {},
        }
        held: dict[str, torch.Tensor] = {}
        for i, (label, ra, rb) in enumerate(deltas):
            for role in (ra, rb):
                if role not in held:
                    held[role] = readers[role].get(name)
            stats, delta = compare_tensors(held[ra], held[rb], keep_delta=want_svd)
            for role in [r for r in held if last_use[r] <= i]:
                del held[role]
            stats["relative"] = stats["fro"] / stats["fro_ref"] if stats["fro_ref"] > 0 else None
            if delta is not None:
                stats.update(spectral_metrics(delta.to(device), top_k, svd_method, fro=stats["fro"]))
                del delta
            rec["stats"][label] = stats
        held.clear()
        records.append(rec)
    return records


def _summaries(records: list[dict[str, Any]], labels: list[str], regions: dict[str, list[int]]) -> dict[str, Any]:
    """Aggregates of the selected tensors (`_aggregate`): per unified layer, per LLM region and per component,
    plus totals over every tensor (fro_total = sqrt(sum ||dW||_F^2), max |dW|)."""
    sel = [r for r in records if r["selected"]]
    layers = []
    by_index: dict[int, list[dict[str, Any]]] = {}
    for r in sel:
        if r["unified_index"] is not None:
            by_index.setdefault(r["unified_index"], []).append(r)
    for idx in sorted(by_index):
        rs = by_index[idx]
        comp = rs[0]["component"]
        layers.append({
            "unified_index": idx, "section": _section(comp), "layer": rs[0]["layer"],
            "region": rs[0]["region"], "n": len(rs),
            "stats": {lb: _aggregate([r["stats"][lb] for r in rs], [r["kind"] for r in rs]) for lb in labels},
        })
    region_rows = []
    for reg in REGIONS if regions else ():
        rs = [r for r in sel if r["component"] == "llm" and r["region"] == reg]
        region_rows.append({
            "region": reg, "layers": regions[reg], "n": len(rs),
            "stats": {lb: _aggregate([r["stats"][lb] for r in rs], [r["kind"] for r in rs]) for lb in labels},
        })
    components = {}
    for comp in ("vision", "projector", "embed", "llm", "final_norm", "lm_head"):
        rs = [r for r in sel if r["component"] == comp]
        if rs:
            components[comp] = {lb: _aggregate([r["stats"][lb] for r in rs], [r["kind"] for r in rs])
                                for lb in labels}
    totals = {lb: {"n_tensors": len(records),
                   "fro_total": math.sqrt(sum(r["stats"][lb]["fro"] ** 2 for r in records)),
                   "max_abs": max((r["stats"][lb]["max_abs"] for r in records), default=0.0)}
              for lb in labels}
    return {"totals": totals, "components": components, "layers": layers, "regions": region_rows}


def diff_models(base: str | Path, in_: str | Path, rl: str | Path, out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """The paper's comparison: the IN update (IN - Base) and the RL update (RL - IN)."""
    return diff({"base": base, "in": in_, "rl": rl}, [("in", "base", "in"), ("rl", "in", "rl")], out, **kwargs)


def diff_pair(src: str | Path, dst: str | Path, out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """One update: dst - src, labelled 'delta'."""
    return diff({"from": src, "to": dst}, [("delta", "from", "to")], out, **kwargs)
