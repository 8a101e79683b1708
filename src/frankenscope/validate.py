"""`frankenscope validate`: planted effects with known answers, on the user's own model (issue 20).

Each check edits a copy of the model's weights through the adapter so that the right answer of one
analysis is known exactly, writes the edited copy as a temporary HF folder under OUT/.work (the
user's checkpoint is only read; its files are hashed before and after), runs the REAL analysis on it
(the functions the CLI and the study call: `finegrained_eval`, `run_localize_vision`,
`run_localize_reasoning`, `run_attention`, `diff_pair`, `merge`) and compares. docs/validate.md
explains every edit, prediction and tolerance; in short:

1. blind: the projector's last linear layer zeroed, so every image token enters the LLM as the zero
   vector. Exactly: identical responses with the real and the black image (M_vis = 0), no swap changes
   any answer at any layer, and text-only responses identical to the unedited model's (M_rea unchanged).
2. dead_layer: layer k's attention output projection and MLP down projection zeroed, so the layer
   returns its input. Exactly: skipping layer k changes no response (increase 0: no item flips either way); the weight
   diff has energy in those two matrices only (each with relative norm 1).
3. planted_update: W += U diag(s) V^T (rank r, chosen singular values) on the matrices of one region.
   The diff must be zero outside them and show r non-zero singular values, stable rank sum s^2/s_1^2 and
   effective rank exp(H(s / sum s)) per edited matrix.
4. transfer: hybrids taking one region from RL hold RL's bytes in that region and IN's elsewhere; the
   hybrid RL:RL:RL (non-layer parts from RL) equals RL bit for bit and gives RL's responses exactly.
5. attention: in layers S, o_proj zeroed (variant A) and additionally q_proj zeroed (variant B). Both
   compute the same function (the attention output of S is multiplied by zero), so responses and the
   attention mass of every layer outside S are identical; in S, B's query is 0, every logit is 0 and the
   attention is uniform over the causal prefix: mass = |V| * mean_t 1 / (P + t + 1) exactly.

Each check also asks for power where its prediction is "nothing changes": the unedited model must show
the change (swaps change answers, black images change answers, skipping layer k changes responses,
IN and RL answer differently); without it the check is "inconclusive", not "pass".
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frankenscope.errors import FrankenscopeError
from frankenscope.io import atomic_dir, write_result, write_text_atomic
from frankenscope.weights.partition import Partition

VALIDATE_SCHEMA_VERSION = 1
CHECKS: tuple[str, ...] = ("blind", "dead_layer", "planted_update", "transfer", "attention")
#: checks run only when asked for: they train (an organism RL run with two regions frozen)
OPTIONAL_CHECKS: tuple[str, ...] = ("frozen_transfer",)
STATUSES = ("pass", "fail", "inconclusive", "not applicable", "error")
#: organism tasks of the fine-grained evaluation in the blind / transfer checks (perception, v2r, text)
EVAL_TASKS = ("counting", "recognition", "more_than", "digit_sum", "word_problem")
#: weight files and frankenscope records never copied from the model folder into a variant
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
_RECORD_FILES = {"model.safetensors.index.json", "pytorch_model.bin.index.json", "merge.json", "merge.yaml",
                 "diff.json", "stage.json", "manifest.json"}
#: relative tolerance of the spectral numbers of a float32 rank-r delta (see docs/validate.md)
SPECTRAL_RTOL = 1e-4
#: relative tolerance of the uniform-attention mass (float32 softmax of equal logits)
ATTENTION_RTOL = 1e-5
#: tolerance of "identical" attention masses outside the edited layers (bit-equal on CPU)
ATTENTION_SAME_TOL = 1e-6


# --------------------------------------------------------------------------- settings and results


@dataclass
class ValidateSettings:
    """What the checks run on. n: items (or pairs) per task of each analysis; the defaults keep a micro
    organism's run to seconds and a 7B's to minutes on a GPU."""

    n: int = 2
    max_new_tokens: int = 12
    seed: int = 0
    dtype: str = "float32"
    device: str | None = None
    dead_layer: int | None = None  # default: n_layers // 2
    attention_layers: list[int] | None = None  # default: [n_layers // 2]
    update_region: str = "mid"
    update_matrices: tuple[str, ...] = ("q_proj", "o_proj", "down_proj")
    update_rank: int = 4
    partition: str | Partition = "thirds"  # parsed to a Partition on construction
    suite: str = "organism"
    data: str | None = None
    pairs: str = "organism"
    dataset: str = "organism"
    data_root: str | None = None
    prompt_style: str = "plain"
    swap_engine: str = "fast"  # the blind check's swap engine: fast (what the probes use) or naive (the oracle)
    rl_noise: float = 0.05  # relative size of the synthetic RL perturbation (transfer without --in/--rl)

    def __post_init__(self) -> None:
        self.partition = Partition.parse(self.partition)


@dataclass
class Criterion:
    what: str
    predicted: str
    observed: str
    ok: bool
    power: bool = False  # a power requirement: failing it makes the check inconclusive, not failed


@dataclass
class CheckResult:
    name: str
    title: str
    edit: str = ""
    prediction: str = ""
    tolerance: str = ""
    status: str = "pending"
    observed: str = ""
    interval: str | None = None
    reason: str | None = None
    criteria: list[Criterion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def add(self, what: str, predicted: Any, observed: Any, ok: bool, power: bool = False) -> bool:
        self.criteria.append(Criterion(what, str(predicted), str(observed), bool(ok), power))
        return bool(ok)

    def conclude(self) -> None:
        if self.status in ("not applicable", "error", "not run"):
            return
        if any(not c.ok and not c.power for c in self.criteria):
            self.status = "fail"
            self.reason = "; ".join(c.what for c in self.criteria if not c.ok and not c.power)
        elif any(not c.ok for c in self.criteria):
            self.status = "inconclusive"
            self.reason = "no power: " + "; ".join(c.what for c in self.criteria if not c.ok)
        else:
            self.status = "pass"


# --------------------------------------------------------------------------- the input model and its variants


def hash_folder(path: str | Path) -> str:
    """sha256 over every file under `path` (relative names and full contents, sorted): reads every byte."""
    root = Path(path)
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        h.update(f"\n{f.relative_to(root) if f != root else f.name}\n".encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _copy_side_files(src: Path, dst: Path) -> list[str]:
    """Tokenizer / processor / chat-template files of the model folder that save_pretrained did not write."""
    copied = []
    for f in sorted(src.iterdir()):
        if (f.is_file() and not f.name.startswith(".") and f.name not in _RECORD_FILES
                and not f.name.endswith(_WEIGHT_SUFFIXES) and not (dst / f.name).exists()):
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    return copied


Edit = Callable[[nn.Module, Any], dict[str, torch.Tensor]]


class Workbench:
    """The user's model loaded once; planted variants are written from it by editing parameters in place,
    saving, and restoring the originals (memory: one model plus the edited tensors)."""

    def __init__(self, model: str | Path, work: Path, dtype: str = "float32") -> None:
        from frankenscope.loading import load_model

        self.source = Path(model)
        if not (self.source / "config.json").is_file():
            raise FrankenscopeError(f"{model}: validate needs a local model folder (config.json + safetensors)")
        self.work = work
        self.loaded = load_model(self.source, dtype=dtype)  # on the CPU: edits are cheap, analyses load their own
        self.model, self.adapter = self.loaded.model, self.loaded.adapter
        self.names = {id(p): n for n, p in self.model.named_parameters()}
        self.created: list[Path] = []
        self._reference: str | None = None

    def name(self, param: torch.Tensor) -> str:
        return self.names[id(param)]

    @property
    def n_layers(self) -> int:
        return self.adapter.num_layers(self.model)

    def variant(self, label: str, edit: Edit) -> tuple[Path, list[str]]:
        """Write the variant `label` (edit: (model, adapter) -> {parameter name: new value}) to work/label;
        return (folder, edited parameter names). The in-memory model is restored afterwards."""
        params = dict(self.model.named_parameters())
        saved: dict[str, torch.Tensor] = {}
        out = self.work / label
        try:
            with torch.no_grad():
                changes = edit(self.model, self.adapter)
                for nm, new in changes.items():
                    saved[nm] = params[nm].detach().clone()
                    params[nm].copy_(new.to(params[nm].dtype))
            with atomic_dir(out) as tmp:
                self.model.save_pretrained(tmp)
                _copy_side_files(self.source, tmp)
            self.created.append(out)
        finally:
            with torch.no_grad():
                for nm, old in saved.items():
                    params[nm].copy_(old)
        return out, sorted(saved)

    def reference(self) -> str:
        """What weight diffs compare a variant with: the model folder itself when its floating tensors are stored
        in the variants' dtype (then unedited tensors diff to exactly 0), else the model re-saved unedited."""
        if self._reference is None:
            from frankenscope.weights.reader import CheckpointReader

            dtype = next(self.model.parameters()).dtype
            stored = {e.dtype for e in CheckpointReader(self.source).entries() if e.dtype.is_floating_point}
            if stored <= {dtype}:
                self._reference = str(self.source)
            else:
                self._reference = str(self.variant("reference", lambda m, a: {})[0])
                self.created.remove(Path(self._reference))
        return self._reference


def _last_linear(module: nn.Module) -> nn.Linear | None:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def _zero(linear: nn.Module, names: Callable[[torch.Tensor], str]) -> dict[str, torch.Tensor]:
    out = {names(linear.weight): torch.zeros_like(linear.weight)}
    if getattr(linear, "bias", None) is not None:
        out[names(linear.bias)] = torch.zeros_like(linear.bias)
    return out


def _mlp_out(adapter: Any, model: nn.Module, layer: int) -> nn.Module:
    """The MLP's output projection, as the adapter names it (`VLMAdapter.mlp_output`)."""
    return adapter.mlp_output(model, layer)


# --------------------------------------------------------------------------- helpers over the analyses' outputs


def _eval_records(model: str | Path, out: Path, s: ValidateSettings, label: str, data: Path | None) -> dict[str, Any]:
    """One model through `finegrained_eval` (its own folder and cache, batch 1, greedy); returns
    {"doc": finegrained.json, "responses": {(condition, id): response}}."""
    from frankenscope.evaluate.run import finegrained_eval

    own_suite = s.suite == "organism" and s.data is None  # the small suite _eval_data wrote: use all of it
    doc = finegrained_eval([str(model)], out, suite=s.suite, data=data,
                           prompt_style=s.prompt_style, labels=[label], n=None if own_suite else s.n,
                           n_per_task=s.n, seed=s.seed, batch_size=1, max_new_tokens=s.max_new_tokens,
                           dtype=s.dtype, device=s.device, progress=False, n_boot=500, echo=lambda _: None)
    recs = json.loads((out / doc["models"][0]["records_file"]).read_text())["records"]
    return {"doc": doc, "responses": {(r["condition"], r["id"]): r["response"] for r in recs}}


def _metric(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    return doc["models"][0]["metrics"].get(name)


def _fmt_metric(m: dict[str, Any] | None) -> str:
    if m is None:
        return "n/a"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] (n={m['n']})"


def _eval_data(ctx: Context) -> Path | None:
    """The evaluation data: --data, or a small organism suite (EVAL_TASKS, n per task) written once."""
    if ctx.settings.data is not None:
        return Path(ctx.settings.data)
    if ctx.settings.suite != "organism":
        return None
    suite = ctx.work / "suite"
    if not (suite / "suite.json").is_file():
        from frankenscope.organism.suite import write_suite

        write_suite(suite, tasks=list(EVAL_TASKS), n_per_task=ctx.settings.n, n_pairs=0, seed=ctx.settings.seed)
    return suite


@dataclass
class Context:
    model: str
    out: Path
    work: Path
    settings: ValidateSettings
    in_: str | None = None
    rl: str | None = None
    _bench: Workbench | None = None

    @property
    def bench(self) -> Workbench:
        if self._bench is None:
            self._bench = Workbench(self.model, self.work / "variants", self.settings.dtype)
        return self._bench

    def folder(self, check: str, *parts: str) -> Path:
        return self.work.joinpath("runs", check, *parts)


# --------------------------------------------------------------------------- check 1: blind model


def check_blind(ctx: Context) -> CheckResult:
    from frankenscope.probes.run import run_localize_vision

    s = ctx.settings
    c = CheckResult("blind", "Blind model",
                    edit="projector output set to zero: the projector's last linear layer (weight and bias) zeroed",
                    prediction="M_vis = 0 with identical responses for the real and the black image; no visual-token "
                               "swap changes any answer at any layer; text-only responses (M_rea) identical to the "
                               "unedited model's",
                    tolerance="exact (0 differing responses): every image token enters the LLM as the zero vector for "
                              "any image, so both runs compute the same function; evaluation runs batch 1 so padding "
                              "cannot change float sums; both swap engines compute the swapped keys/values in other "
                              "matrix shapes than the clean pass, equal to the dtype's rounding (float32: logits within "
                              "~1e-5), so only a near-tie could flip a greedy token")
    wb = ctx.bench
    # every projector whose output enters the LLM (Qwen3-VL's deepstack mergers too)
    projs = [_last_linear(p) for p in wb.adapter.projectors(wb.model)]
    if any(p is None for p in projs):
        c.status, c.reason = "not applicable", "an adapter projector has no linear layer to zero"
        return c
    blind, edited = wb.variant("blind", lambda m, a: {k: v for p in projs for k, v in _zero(p, wb.name).items()})
    c.details["edited"] = edited
    data = _eval_data(ctx)
    base = _eval_records(ctx.model, ctx.folder("blind", "eval-model"), s, "model", data)
    ev = _eval_records(blind, ctx.folder("blind", "eval-blind"), s, "blind", data)
    vis_ids = ev["doc"]["sets"]["ids"]["vis"]
    rea_ids = ev["doc"]["sets"]["ids"]["rea"]

    def differ(resp: dict[tuple[str, str], str], ids: list[str]) -> int:
        return sum(resp.get(("image", i)) != resp.get(("black", i)) for i in ids)

    d_blind, d_model = differ(ev["responses"], vis_ids), differ(base["responses"], vis_ids)
    mvis = _metric(ev["doc"], "M_vis")
    c.add("M_vis items whose response differs between the real and the black image (blind model)", 0,
          f"{d_blind} of {len(vis_ids)}", d_blind == 0 and bool(vis_ids))
    c.add("M_vis of the blind model", 0, _fmt_metric(mvis), mvis is not None and mvis["value"] == 0)
    c.add("power: the unedited model's response changes with the black image on some M_vis item", "> 0",
          f"{d_model} of {len(vis_ids)}", d_model > 0, power=True)
    rea_diff = sum(ev["responses"].get(("text", i)) != base["responses"].get(("text", i)) for i in rea_ids)
    m_rea_b, m_rea_m = _metric(ev["doc"], "M_rea"), _metric(base["doc"], "M_rea")
    if rea_ids:
        c.add("text-only responses that differ from the unedited model's", 0, f"{rea_diff} of {len(rea_ids)}",
              rea_diff == 0)
        c.add("M_rea blind = M_rea unedited", _fmt_metric(m_rea_m), _fmt_metric(m_rea_b),
              m_rea_b is not None and m_rea_m is not None and m_rea_b["value"] == m_rea_m["value"])
    else:
        c.notes.append("no text-only items in the data: M_rea part not run")

    def sweep(model: str | Path, where: str) -> tuple[int, int, Any]:
        res, _, _ = run_localize_vision(str(model), ctx.folder("blind", where), pairs=s.pairs, n=s.n, engine=s.swap_engine,
                                        max_new_tokens=s.max_new_tokens, seed=s.seed, dtype=s.dtype, device=s.device,
                                        plots=False, progress=False, prompt_style=s.prompt_style)
        changed = sum(sw != r.unswapped for r in res.records for sw in r.swapped)
        return changed, sum(len(r.swapped) for r in res.records), res

    ch_b, tot, res_b = sweep(blind, "swap-blind")
    ch_m, tot_m, res_m = sweep(ctx.model, "swap-model")
    task = "all" if "all" in res_b.tasks else next(iter(res_b.tasks))
    worst = max(res_b.tasks[task]["per_layer"], key=lambda r: r["change"]["rate"])["change"]
    c.add("swapped responses that differ from the unswapped one (blind model, every pair x layer)", 0,
          f"{ch_b} of {tot}", ch_b == 0)
    c.add("power: swaps change the unedited model's response somewhere", "> 0", f"{ch_m} of {tot_m}", ch_m > 0,
          power=True)
    if ch_b and s.dtype not in ("float32", "fp32", "float64"):
        c.notes.append(
            f"in {s.dtype} the swap engines compute the image keys/values in other matrix shapes than the clean pass, "
            "so swapped and clean logits differ by that dtype's rounding (micro organism on CPU: up to 0.03 on logits "
            "of size 10 in bfloat16, 2e-6 in float32) and greedy answers flip at near-ties: these changes are the "
            "swap probe's numerical noise floor in this dtype, which its change rates on this model include too; run "
            "the probe (and validate) in float32 to remove it")
    c.observed = (f"M_vis {_fmt_metric(mvis)}; {d_blind}/{len(vis_ids)} image-vs-black responses differ; "
                  f"{ch_b}/{tot} swapped responses differ (largest per-layer change rate {worst['rate']:.2f}); "
                  f"{rea_diff}/{len(rea_ids)} text responses differ from the unedited model "
                  f"(unedited: {d_model} image-vs-black and {ch_m}/{tot_m} swap changes)")
    c.interval = f"M_vis CI [{mvis['ci_low']:.3f}, {mvis['ci_high']:.3f}]" if mvis else None
    c.details.update({"swap_engine": s.swap_engine, "m_vis": mvis, "m_rea_blind": m_rea_b, "m_rea_model": m_rea_m,
                      "swap_changed_blind": ch_b, "swap_changed_model": ch_m, "swap_total": tot})
    return c


# --------------------------------------------------------------------------- check 2: dead layer


def check_dead_layer(ctx: Context) -> CheckResult:
    from frankenscope.probes.run import run_localize_reasoning
    from frankenscope.weights.diff import diff_pair

    s = ctx.settings
    wb = ctx.bench
    k = s.dead_layer if s.dead_layer is not None else wb.n_layers // 2
    c = CheckResult("dead_layer", f"Dead layer (layer {k})",
                    edit=f"LLM layer {k}: attention output projection (o_proj) and MLP down projection set to zero",
                    prediction=f"skipping layer {k} changes no response (error increase 0, no item flips); the weight diff "
                               f"has energy only in layer {k}'s two matrices (relative norm 1 each: the delta is -W)",
                    tolerance="exact: the layer adds 0 + 0 to its residual input, so skipping it is the identity on "
                              "the same floats; copied tensors diff to exactly 0; relative norm 1 to 1e-6 (float64 sums)")
    if not 0 <= k < wb.n_layers:
        c.status, c.reason = "not applicable", f"layer {k} does not exist (0..{wb.n_layers - 1})"
        return c

    def edit(m: nn.Module, a: Any) -> dict[str, torch.Tensor]:
        return {**_zero(a.attention_projections(m, k).o, wb.name), **_zero(_mlp_out(a, m, k), wb.name)}

    dead, edited = wb.variant(f"dead-{k}", edit)
    c.details["edited"] = edited

    def skip(model: str | Path, where: str) -> Any:
        return run_localize_reasoning(str(model), ctx.folder("dead_layer", where), dataset=s.dataset,
                                      data_root=s.data_root, n=s.n, layers=str(k), max_new_tokens=s.max_new_tokens,
                                      batch_items=1, seed=s.seed, dtype=s.dtype, device=s.device, plots=False,
                                      progress=False, prompt_style=s.prompt_style)[0]

    res = skip(dead, "skip-dead")
    changed = sum(r.responses[0] != r.baseline for r in res.records)
    task = "all" if "all" in res.tasks else next(iter(res.tasks))
    inc = res.tasks[task]["per_layer"][0]["increase"]
    c.add(f"responses that change when layer {k} is skipped (dead model)", 0, f"{changed} of {len(res.records)}",
          changed == 0)
    # a zero-width OUTCOME: no item flips either way (the interval itself is an honest score interval, which
    # keeps a positive width at finite n even when nothing changes)
    c.add(f"error increase of skipping layer {k} (items right->wrong / wrong->right)", "0 (0 / 0)",
          f"{inc['diff']:+.3f} ({inc.get('n_broken')} / {inc.get('n_fixed')}), "
          f"CI [{inc['ci_low']:+.3f}, {inc['ci_high']:+.3f}]",
          inc["diff"] == 0 and inc.get("n_broken") == 0 and inc.get("n_fixed") == 0)
    res_m = skip(ctx.model, "skip-model")
    changed_m = sum(r.responses[0] != r.baseline for r in res_m.records)
    c.add(f"power: skipping layer {k} changes some response of the unedited model", "> 0",
          f"{changed_m} of {len(res_m.records)}", changed_m > 0, power=True)

    doc = diff_pair(wb.reference(), dead, ctx.folder("dead_layer", "diff"), spectral=False, plots=False,
                    progress=False)
    nonzero = {t["name"]: t["stats"]["delta"] for t in doc["tensors"] if t["stats"]["delta"]["fro"] != 0}
    c.add("tensors with non-zero diff energy", sorted(edited), sorted(nonzero), set(nonzero) == set(edited))
    rel = {n: nonzero[n]["relative"] for n in edited if n in nonzero}
    c.add("relative norm of each zeroed matrix (delta = -W)", 1.0, {n.split(".", 3)[-1]: v for n, v in rel.items()},
          len(rel) == len(edited) and all(v is not None and abs(v - 1) <= 1e-6 for v in rel.values()))
    c.observed = (f"{changed}/{len(res.records)} responses change when skipping layer {k} (unedited: {changed_m}); "
                  f"{len(nonzero)} tensor(s) with diff energy")
    c.interval = f"increase {inc['diff']:+.3f} [{inc['ci_low']:+.3f}, {inc['ci_high']:+.3f}]"
    c.details.update({"layer": k, "increase": inc, "changed_dead": changed, "changed_model": changed_m,
                      "nonzero_tensors": sorted(nonzero)})
    return c


# --------------------------------------------------------------------------- check 3: planted update


def planted_spectrum(r: int) -> list[float]:
    """The planted singular values relative to s_1: (r, r-1, ..., 1) / r."""
    return [(r - i) / r for i in range(r)]


def expected_ranks(s: Sequence[float]) -> dict[str, float]:
    """Stable rank sum s_i^2 / s_1^2 and effective rank exp(-sum p_i ln p_i), p = s / sum s (diff.py's formulas)."""
    total = sum(s)
    p = [x / total for x in s]
    return {"stable_rank": sum(x * x for x in s) / (s[0] * s[0]),
            "effective_rank": math.exp(-sum(q * math.log(q) for q in p)),
            "spectrum": [math.log(x / s[0]) for x in s]}


def planted_update(shape: Sequence[int], s: Sequence[float], seed: int) -> torch.Tensor:
    """U diag(s) V^T in float64 with U, V random orthonormal (m x r, n x r), seeded."""
    g = torch.Generator().manual_seed(seed)
    m, n = shape
    r = len(s)
    u, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T


def check_planted_update(ctx: Context) -> CheckResult:
    from frankenscope.weights.diff import diff_pair

    s = ctx.settings
    wb = ctx.bench
    r = s.update_rank
    rel = planted_spectrum(r)
    exp = expected_ranks(rel)
    c = CheckResult("planted_update", f"Planted rank-{r} update ({s.update_region}: {', '.join(s.update_matrices)})",
                    edit=f"W += U diag(s) V^T on every {'/'.join(s.update_matrices)} of the {s.update_region} layers; "
                         f"U, V random orthonormal, s = ||W||_F * ({', '.join(f'{x:g}' for x in rel)})",
                    prediction=f"diff energy 0 outside the edited matrices; per edited matrix exactly {r} singular "
                               f"values above the diff's numerical-rank threshold (s_1 * max(m, n) * eps32), ln(s_i/s_1) "
                               f"= planted, stable rank {exp['stable_rank']:.4f}, effective rank "
                               f"{exp['effective_rank']:.4f}, ||delta||_F = ||s||",
                    tolerance=f"energy outside: exact 0 (copied float32 tensors); spectral numbers relative "
                              f"{SPECTRAL_RTOL:g}: the stored delta is fl32(W + D) - W, off from D by at most "
                              f"eps32/2 per entry, so by Weyl each s_i moves by < 1e-6 s_1 here")
    dtype = next(wb.model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        c.status = "not applicable"
        c.reason = (f"variants are written in {dtype}: rounding W + D to it adds a full-rank error; run validate with "
                    "--dtype float32")
        return c
    try:
        layers = Partition.parse(s.partition).layers(s.update_region, wb.n_layers)
    except FrankenscopeError as e:
        c.status, c.reason = "not applicable", str(e)
        return c
    targets: list[nn.Module] = []
    for layer in layers:
        proj = wb.adapter.attention_projections(wb.model, layer)
        mods = {"q_proj": proj.q, "k_proj": proj.k, "v_proj": proj.v, "o_proj": proj.o,
                "down_proj": _mlp_out(wb.adapter, wb.model, layer)}
        mlp = wb.adapter.mlp(wb.model, layer)
        for nm in s.update_matrices:
            mod = mods.get(nm) or getattr(mlp, nm, None)
            if mod is None:
                c.status, c.reason = "not applicable", f"layer {layer} has no {nm}"
                return c
            targets.append(mod)
    planted: dict[str, dict[str, float]] = {}

    def edit(m: nn.Module, a: Any) -> dict[str, torch.Tensor]:
        out = {}
        for i, mod in enumerate(targets):
            w = mod.weight.detach().to(torch.float64)
            scale = float(torch.linalg.vector_norm(w)) or 1.0
            sv = [scale * x for x in rel]
            d = planted_update(tuple(w.shape), sv, s.seed * 1000 + i)
            name = wb.name(mod.weight)
            out[name] = w + d
            planted[name] = {"s1": sv[0], "fro": math.sqrt(sum(x * x for x in sv))}
        return out

    variant, edited = wb.variant("planted-update", edit)
    doc = diff_pair(wb.reference(), variant, ctx.folder("planted_update", "diff"), top_k=max(r + 2, 8), plots=False,
                    progress=False)
    recs = {t["name"]: t for t in doc["tensors"]}
    outside = [n for n, t in recs.items() if n not in planted and t["stats"]["delta"]["fro"] != 0]
    c.add("tensors outside the edited matrices with non-zero diff energy", 0, len(outside) and outside[:5],
          not outside)
    missing = [n for n in planted if n not in recs]
    c.add("edited matrices present in the diff", len(planted), len(planted) - len(missing), not missing)
    ranks, stable, eff, worst_spec, worst_fro = [], [], [], 0.0, 0.0
    for n in planted:
        if n not in recs:
            continue
        st = recs[n]["stats"]["delta"]
        ranks.append(st.get("numerical_rank"))
        stable.append(st.get("stable_rank"))
        eff.append(st.get("effective_rank"))
        spec = st.get("spectrum") or []
        worst_spec = max([worst_spec] + [abs(a - b) for a, b in zip(spec[:r], exp["spectrum"], strict=False)]
                         + ([math.inf] if len(spec) < r else []))
        worst_fro = max(worst_fro, abs(st["fro"] - planted[n]["fro"]) / planted[n]["fro"])
    c.add("numerical rank of every edited matrix's delta", r, sorted(set(ranks)), bool(ranks) and set(ranks) == {r})

    def within(vals: list[Any], target: float) -> bool:
        return bool(vals) and all(v is not None and abs(v - target) <= SPECTRAL_RTOL * target for v in vals)

    def span(vals: list[Any]) -> str:
        v = [x for x in vals if x is not None]
        return f"[{min(v):.6f}, {max(v):.6f}]" if v else "none"

    c.add("stable rank of every edited matrix", f"{exp['stable_rank']:.6f}", span(stable), within(stable, exp["stable_rank"]))
    c.add("effective rank of every edited matrix", f"{exp['effective_rank']:.6f}", span(eff),
          within(eff, exp["effective_rank"]))
    c.add("largest |ln(s_i/s_1) - planted|", f"<= {SPECTRAL_RTOL:g}", f"{worst_spec:.2e}", worst_spec <= SPECTRAL_RTOL)
    c.add("largest relative error of ||delta||_F", f"<= {SPECTRAL_RTOL:g}", f"{worst_fro:.2e}", worst_fro <= SPECTRAL_RTOL)
    c.observed = (f"{len(edited)} edited matrices: numerical rank {sorted(set(ranks))}, stable rank {span(stable)}, "
                  f"effective rank {span(eff)}; {len(outside)} other tensor(s) with energy")
    c.interval = f"stable rank {span(stable)}, effective rank {span(eff)} over the edited matrices"
    c.details.update({"layers": layers, "rank": r, "planted_relative_spectrum": rel, "expected": exp,
                      "edited": edited, "outside_nonzero": outside})
    return c


# --------------------------------------------------------------------------- check 4: planted transfer


def _bytes_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _donor_mismatches(hybrid: Path, donors: dict[str, Path], want: Callable[[Any], str]) -> tuple[int, list[str]]:
    """(tensors checked, names whose bytes differ from the expected donor's); want(location) -> donor label."""
    from frankenscope.weights.reader import CheckpointReader

    h = CheckpointReader(hybrid)
    readers = {lab: CheckpointReader(p) for lab, p in donors.items()}
    names = h.canonical_names()
    bad = [f"{name} (missing)" for name in readers["RL"].canonical_names() if name not in h]  # a dropped tensor
    for name in names:
        lab = want(h.location(name))
        if name not in readers[lab] or not _bytes_equal(h.get(name), readers[lab].get(name)):
            bad.append(f"{name} (expected {lab})")
    return len(names), bad


def check_transfer(ctx: Context) -> CheckResult:
    from frankenscope.weights.merge import merge, parse_plan
    from frankenscope.weights.partition import REGIONS

    s = ctx.settings
    c = CheckResult("transfer", "Planted transfer",
                    edit="hybrids that take one region from RL (RL:IN:IN, IN:RL:IN, IN:IN:RL, non-layer parts from the "
                         "early donor) and RL:RL:RL with non-layer parts from RL",
                    prediction="each hybrid holds the RL bytes in its RL region and the donor's bytes everywhere else; "
                               "RL:RL:RL equals RL bit for bit and gives RL's responses exactly",
                    tolerance="exact: merging copies bytes, and identical weights give identical greedy responses "
                              "(batch 1, same data)")
    c.notes.append("the organism part (an RL run with two regions frozen puts all of the hybrids' gain in the third) "
                   "is the separate check frozen_transfer")
    if (ctx.in_ is None) != (ctx.rl is None):
        c.status, c.reason = "not applicable", "give both --in and --rl (or neither, for the synthetic pair)"
        return c
    if ctx.in_ is not None:
        donors = {"IN": Path(ctx.in_), "RL": Path(ctx.rl)}  # type: ignore[arg-type]
        c.notes.append("IN and RL are the given checkpoints")
    else:
        wb = ctx.bench
        g = torch.Generator().manual_seed(s.seed + 17)

        def perturb(m: nn.Module, a: Any) -> dict[str, torch.Tensor]:
            out = {}
            for n, p in m.named_parameters():
                if p.is_floating_point():
                    x = p.detach().to(torch.float64)
                    rms = float(x.pow(2).mean().sqrt()) or 1.0
                    out[n] = x + s.rl_noise * rms * torch.randn(x.shape, generator=g, dtype=torch.float64)
            return out

        donors = {"IN": wb.variant("transfer-in", lambda m, a: {})[0], "RL": wb.variant("transfer-rl", perturb)[0]}
        c.notes.append(f"no --in/--rl: IN is the model re-saved, RL the model with Gaussian noise of {s.rl_noise:g} x "
                       "each tensor's RMS added to every parameter")
    from frankenscope.weights.reader import CheckpointReader

    n_layers = CheckpointReader(donors["IN"]).n_layers
    try:
        regions = Partition.parse(s.partition).regions(n_layers)
    except FrankenscopeError as e:
        c.status, c.reason = "not applicable", str(e)
        return c
    region_of = {layer: r for r, ls in regions.items() for layer in ls}
    hy_root = ctx.work / "variants" / "hybrids"
    plans = [":".join("RL" if r == reg else "IN" for r in REGIONS) for reg in REGIONS]
    for plan in plans + ["RL:RL:RL"]:
        non_layer_from = "RL" if plan == "RL:RL:RL" else "early"
        out = hy_root / plan.replace(":", "_")
        merge(donors, plan, out, partition=s.partition, non_layer_from=non_layer_from, progress=False)
        donor_of = parse_plan(plan, list(donors))
        host = "RL" if plan == "RL:RL:RL" else donor_of["early"]

        def want(loc: Any, donor_of: dict[str, str] = donor_of, host: str = host) -> str:
            if loc.component == "llm" and loc.layer is not None:
                return donor_of[region_of[loc.layer]]
            return host

        n_t, bad = _donor_mismatches(out, donors, want)
        c.add(f"{plan}: tensors whose bytes differ from the planned donor", 0, f"{len(bad)} of {n_t}"
              + (f" e.g. {bad[:2]}" if bad else ""), not bad)
        if plan != "RL:RL:RL":
            shutil.rmtree(out)  # checked: free the disk (a 7B hybrid is a full checkpoint)
    data = _eval_data(ctx)
    rl = _eval_records(donors["RL"], ctx.folder("transfer", "eval-rl"), s, "RL", data)
    hy = _eval_records(hy_root / "RL_RL_RL", ctx.folder("transfer", "eval-rlrlrl"), s, "RL_RL_RL", data)
    inn = _eval_records(donors["IN"], ctx.folder("transfer", "eval-in"), s, "IN", data)
    keys = sorted(rl["responses"])
    diff_h = sum(rl["responses"][k] != hy["responses"].get(k) for k in keys)
    diff_in = sum(rl["responses"][k] != inn["responses"].get(k) for k in keys)
    c.add("responses of RL:RL:RL that differ from RL's (every condition and item)", 0, f"{diff_h} of {len(keys)}",
          diff_h == 0 and bool(keys))
    c.add("power: IN and RL respond differently somewhere", "> 0", f"{diff_in} of {len(keys)}", diff_in > 0,
          power=True)
    bench = [_metric(d["doc"], "benchmark") for d in (rl, hy)]
    c.observed = (f"{sum(1 for x in c.criteria if x.what.endswith('planned donor') and x.ok)}/{len(plans) + 1} hybrids "
                  f"byte-exact; {diff_h}/{len(keys)} RL:RL:RL responses differ from RL (IN vs RL: {diff_in})")
    if bench[0] is not None:
        c.interval = f"suite accuracy RL {_fmt_metric(bench[0])}, RL:RL:RL {_fmt_metric(bench[1])}"
    c.details.update({"donors": {k: str(v) for k, v in donors.items()}, "regions": regions,
                      "responses_compared": len(keys), "differ_hybrid": diff_h, "differ_in": diff_in})
    return c


# --------------------------------------------------------------------------- check 4b: frozen transfer (organism)


FROZEN = ("early", "mid")  # trained region: late


def check_frozen_transfer(ctx: Context) -> CheckResult:
    """On the organism: RL from IN with the early and mid decoder layers frozen (RL_F). Because the freeze
    keeps those layers' bytes, RL_F differs from IN only in the late layers and the parts outside the decoder
    layers (embeddings, vision tower, projector, final norm, lm_head, which RL trains). So the hybrid
    IN:IN:RL_F with its non-layer parts from RL_F IS RL_F, and RL_F:IN:IN and IN:RL_F:IN with non-layer
    parts from IN ARE IN: all of the hybrids' gain sits in the late region."""
    from frankenscope.organism.build import build
    from frankenscope.weights.merge import merge
    from frankenscope.weights.reader import CheckpointReader

    s = ctx.settings
    c = CheckResult("frozen_transfer", "Planted transfer on the organism (early and mid frozen in RL)",
                    edit="an organism RL re-run from IN with the early and mid decoder layers frozen (RL_F), trained "
                         "in OUT/.work on copies of Base and IN; hybrids of IN and RL_F",
                    prediction="RL_F's early and mid layers are IN's bytes; IN:IN:RL_F (non-layer parts from RL_F) "
                               "equals RL_F bit for bit and gives its responses; RL_F:IN:IN and IN:RL_F:IN (non-layer "
                               "parts from IN) equal IN: the whole RL_F - IN gain is in the late hybrid",
                    tolerance="exact: frozen parameters get no update (requires_grad off), merging copies bytes, and "
                              "identical weights give identical greedy responses (batch 1, same data)")
    stage_in = Path(ctx.in_) / "stage.json" if ctx.in_ else None
    if stage_in is None or not stage_in.is_file() or not (Path(ctx.in_).parent / "base" / "stage.json").is_file():
        c.status, c.reason = "not applicable", "needs the organism: --in an organism's in/ stage folder beside its base/"
        return c
    meta = json.loads(stage_in.read_text())
    root = ctx.work / "organism"
    for stage in ("base", "in"):  # the user's organism folder is never written to
        shutil.copytree(Path(ctx.in_).parent / stage, root / stage)
    region = "+".join(FROZEN)
    build(root, preset=meta["recipe"]["preset"], seed=meta["seed"], freeze=region, partition=s.partition,
          progress=False, log=lambda *_: None, trust_finished=True)
    donors = {"IN": root / "in", "RL": root / f"rl-frozen-{region}"}
    n_layers = CheckpointReader(donors["IN"]).n_layers
    regions = Partition.parse(s.partition).regions(n_layers)
    region_of = {layer: r for r, ls in regions.items() for layer in ls}

    def frozen_loc(loc: Any) -> bool:
        return loc.component == "llm" and loc.layer is not None and region_of[loc.layer] in FROZEN

    rin, rrl = CheckpointReader(donors["IN"]), CheckpointReader(donors["RL"])
    names = rin.canonical_names()
    moved = [n for n in names if frozen_loc(rin.location(n)) and not _bytes_equal(rin.get(n), rrl.get(n))]
    trained = sum(not _bytes_equal(rin.get(n), rrl.get(n)) for n in names if not frozen_loc(rin.location(n)))
    c.add("frozen (early, mid) tensors of RL_F whose bytes differ from IN's", 0,
          f"{len(moved)}" + (f" e.g. {moved[:2]}" if moved else ""), not moved)
    c.add("power: tensors RL_F changed outside the frozen regions", "> 0", trained, trained > 0, power=True)
    hy_root = ctx.work / "variants" / "frozen-hybrids"
    for plan, non_layer, equal_to in (("IN:IN:RL", "RL", "RL"), ("RL:IN:IN", "IN", "IN"), ("IN:RL:IN", "IN", "IN")):
        out = hy_root / plan.replace(":", "_")
        merge(donors, plan, out, partition=s.partition, non_layer_from=non_layer, progress=False)
        n_t, bad = _donor_mismatches(out, {"IN": donors[equal_to], "RL": donors[equal_to]}, lambda loc: "RL")
        c.add(f"{plan} (non-layer parts from {non_layer}): tensors whose bytes differ from "
              f"{'RL_F' if equal_to == 'RL' else 'IN'}", 0, f"{len(bad)} of {n_t}" + (f" e.g. {bad[:2]}" if bad else ""),
              not bad)
    data = _eval_data(ctx)
    rl = _eval_records(donors["RL"], ctx.folder("frozen_transfer", "eval-rl"), s, "RL_F", data)
    hy = _eval_records(hy_root / "IN_IN_RL", ctx.folder("frozen_transfer", "eval-late"), s, "IN_IN_RL_F", data)
    keys = sorted(rl["responses"])
    diff_h = sum(rl["responses"][k] != hy["responses"].get(k) for k in keys)
    c.add("responses of IN:IN:RL_F that differ from RL_F's (every condition and item)", 0, f"{diff_h} of {len(keys)}",
          diff_h == 0 and bool(keys))
    c.observed = (f"{len(moved)} frozen tensors moved; {trained} tensors trained; hybrids byte-exact: "
                  f"{sum(1 for x in c.criteria if '(non-layer parts from' in x.what and x.ok)}/3; "
                  f"{diff_h}/{len(keys)} late-hybrid responses differ from RL_F")
    c.details.update({"regions": regions, "frozen": list(FROZEN), "moved": moved, "trained_tensors": trained,
                      "responses_compared": len(keys), "differ_late_hybrid": diff_h})
    return c


# --------------------------------------------------------------------------- check 5: planted attention


def uniform_mass(prompt_len: int, n_response: int, n_image: int) -> float:
    """Response-to-image attention mass under uniform causal attention: the response token at position
    p = prompt_len + t attends to p + 1 keys with weight 1 / (p + 1) each, |V| of them image tokens."""
    return n_image * sum(1.0 / (prompt_len + t + 1) for t in range(n_response)) / n_response


def check_attention(ctx: Context) -> CheckResult:
    from frankenscope.generation import load_image
    from frankenscope.probes.run import ATTENTION_TASKS, load_dataset_items, probe_style, run_attention

    s = ctx.settings
    wb = ctx.bench
    layers = sorted(set(s.attention_layers if s.attention_layers is not None else [wb.n_layers // 2]))
    # eager attention casts the float32 softmax to the model's dtype: each weight 1/(p+1) is then rounded to that
    # dtype's precision, all in the same direction for one p, so the mass is off by up to eps(dtype) relative
    dtype = next(wb.model.parameters()).dtype
    rtol = max(ATTENTION_RTOL, torch.finfo(dtype).eps) if dtype.is_floating_point else ATTENTION_RTOL
    c = CheckResult("attention", f"Planted attention (layers {', '.join(map(str, layers))})",
                    edit=f"A: o_proj zeroed in layers {layers}; B: A plus q_proj (weight and bias) zeroed there",
                    prediction="A and B compute the same function (the edited layers' attention output is multiplied by "
                               "0), so their responses and their attention mass in every other layer are identical; in "
                               "the edited layers B's queries are 0, all logits 0, attention uniform over the causal "
                               "prefix: mass = |V| * mean_t 1/(P + t + 1) (P prompt tokens, t over the response)",
                    tolerance=f"other layers: |A - B| <= {ATTENTION_SAME_TOL:g} (bit-equal expected: same floats); edited "
                              f"layers: relative {rtol:g} (float32 softmax of equal logits rounds 1/(p+1) to 2^-24 "
                              "relative, and summing |V| of them stays far below 1e-5; in bf16/fp16 the weights are "
                              "cast to the model dtype, so the tolerance is that dtype's eps)")
    bad = [x for x in layers if not 0 <= x < wb.n_layers]
    if bad:
        c.status, c.reason = "not applicable", f"layers {bad} do not exist (0..{wb.n_layers - 1})"
        return c
    try:
        probe = wb.adapter.attention_projections(wb.model, layers[0])
    except (NotImplementedError, AttributeError) as e:
        c.status, c.reason = "not applicable", f"the adapter exposes no attention projections ({e})"
        return c
    del probe
    text_cfg = wb.model.config.get_text_config(decoder=True)
    types = getattr(text_cfg, "layer_types", None) or []
    windowed = [x for x in layers if (types and types[x] != "full_attention")
                or (getattr(text_cfg, "use_sliding_window", False) and getattr(text_cfg, "sliding_window", None))]
    if windowed:
        c.status = "not applicable"
        c.reason = (f"layers {windowed} do not use full causal softmax attention (sliding window or linear attention): "
                    "zero queries do not give the uniform causal attention the prediction assumes")
        return c

    def edit(with_q: bool) -> Edit:
        def go(m: nn.Module, a: Any) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            for layer in layers:
                proj = a.attention_projections(m, layer)
                out.update(_zero(proj.o, wb.name))
                if with_q:
                    out.update(_zero(proj.q, wb.name))
            return out
        return go

    va, _ = wb.variant("attn-dead", edit(False))
    vb, edited = wb.variant("attn-uniform", edit(True))
    c.details["edited"] = edited
    out = ctx.folder("attention", "run")
    res, _, _ = run_attention({"A": str(va), "B": str(vb)}, out, dataset=s.dataset, data_root=s.data_root, n=s.n,
                              max_new_tokens=s.max_new_tokens, batch_size=1, seed=s.seed, dtype=s.dtype,
                              device=s.device, plots=False, progress=False, prompt_style=s.prompt_style)
    # the same items the probe read (load_dataset_items is deterministic), to count each prompt's tokens
    items, _ = load_dataset_items(s.dataset, out, tasks=None, default_tasks=ATTENTION_TASKS, n=s.n, seed=s.seed,
                                  data_root=s.data_root)
    style = probe_style(s.prompt_style)
    by_id = {it.id: style.apply(it) for it in items if it.image is not None}
    proc = wb.loaded.processor
    recs_a, recs_b = res.records["A"], res.records["B"]
    idx = {layer: i for i, layer in enumerate(res.layers)}
    same_resp = sum(a.response == b.response for a, b in zip(recs_a, recs_b, strict=True))
    c.add("items with identical responses in A and B", len(recs_a), same_resp, same_resp == len(recs_a))
    other = [i for layer, i in idx.items() if layer not in layers]
    d_other = max((abs(a.mass[i] - b.mass[i]) for a, b in zip(recs_a, recs_b, strict=True)
                   if a.n_response_tokens and b.n_response_tokens for i in other), default=0.0)
    c.add("largest |mass A - mass B| outside the edited layers", f"<= {ATTENTION_SAME_TOL:g}", f"{d_other:.2e}",
          d_other <= ATTENTION_SAME_TOL)
    worst, power, used = 0.0, 0.0, 0
    per_item = []
    for a, b in zip(recs_a, recs_b, strict=True):
        it = by_id.get(b.id)
        if it is None or not b.n_response_tokens:
            continue
        prompt = wb.adapter.build_prompt(proc, it.prompt, 1, style.system)
        enc = proc(text=[prompt], images=[load_image(it.image)], return_tensors="pt")
        p_len = int(enc["input_ids"].shape[1])
        n_img = int(wb.adapter.image_token_mask(wb.model, enc["input_ids"]).sum())
        pred = uniform_mass(p_len, b.n_response_tokens, n_img)
        for layer in layers:
            got = b.mass[idx[layer]]
            worst = max(worst, abs(got - pred) / pred)
            power = max(power, abs(a.mass[idx[layer]] - pred) / pred)
            per_item.append({"id": b.id, "layer": layer, "predicted": pred, "observed": got,
                             "A": a.mass[idx[layer]], "P": p_len, "V": n_img, "R": b.n_response_tokens})
        used += 1
    c.add("items measured (non-empty responses)", "> 0", used, used > 0)
    c.add("largest relative |mass B - uniform prediction| in the edited layers", f"<= {rtol:g}",
          f"{worst:.2e}", used > 0 and worst <= rtol)
    c.add("power: A's own mass in the edited layers is not the uniform value", "> 0.01 relative somewhere",
          f"{power:.3f}", power > 0.01, power=True)
    c.observed = (f"B in layers {layers}: worst relative error to the uniform prediction {worst:.1e} over {used} items; "
                  f"A vs B elsewhere: max |diff| {d_other:.1e}; {same_resp}/{len(recs_a)} identical responses")
    if per_item:
        c.interval = "; ".join(f"{r['id']} L{r['layer']}: {r['observed']:.5f} vs {r['predicted']:.5f}"
                               for r in per_item[:3])
    c.details.update({"layers": layers, "per_item": per_item, "max_other_layer_diff": d_other})
    return c


# --------------------------------------------------------------------------- the command


CHECK_FUNCS: dict[str, Callable[[Context], CheckResult]] = {
    "blind": check_blind, "dead_layer": check_dead_layer, "planted_update": check_planted_update,
    "transfer": check_transfer, "attention": check_attention, "frozen_transfer": check_frozen_transfer,
}


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict[str, Any]) -> str:
    lines = [f"# frankenscope validate: {doc['inputs']['model']}", "",
             f"Overall: **{'PASS' if doc['passed'] else 'NOT PASSED'}** "
             f"({', '.join(f'{v} {k}' for k, v in doc['counts'].items() if v)}); input checkpoint(s) unchanged: "
             f"{'yes' if doc['inputs_unchanged'] else 'NO'}.", "",
             "| check | planted edit | predicted | observed [interval] | tolerance (why) | result |",
             "|---|---|---|---|---|---|"]
    for c in doc["checks"]:
        obs = c["observed"] + (f" [{c['interval']}]" if c.get("interval") else "")
        res = c["status"] + (f": {c['reason']}" if c.get("reason") and c["status"] != "pass" else "")
        lines.append(f"| {_cell(c['title'])} | {_cell(c['edit'])} | {_cell(c['prediction'])} | {_cell(obs)} | "
                     f"{_cell(c['tolerance'])} | {_cell(res)} |")
    lines += ["", "## Criteria", ""]
    for c in doc["checks"]:
        lines.append(f"### {c['title']}: {c['status']}")
        lines.append("")
        if c["criteria"]:
            lines += ["| criterion | predicted | observed | ok |", "|---|---|---|---|"]
            for k in c["criteria"]:
                ok = ("yes" if k["ok"] else ("NO (power)" if k["power"] else "NO"))
                lines.append(f"| {_cell(k['what'])} | {_cell(k['predicted'])} | {_cell(k['observed'])} | {ok} |")
        for note in c.get("notes", []):
            lines.append(f"\n- {note}")
        if c.get("reason") and c["status"] != "pass":
            lines.append(f"\n- {c['status']}: {c['reason']}")
        lines.append("")
    return "\n".join(lines) + "\n"


def validate(model: str | Path, out: str | Path, *, in_: str | Path | None = None, rl: str | Path | None = None,
             checks: Sequence[str] = CHECKS, settings: ValidateSettings | None = None, keep_work: bool = False,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the planted-effect checks on `model` (a local HF folder); write OUT/validate.json and validate.md.

    Variants and analysis outputs go to OUT/.work (removed at the end unless keep_work). The input
    checkpoint(s) are hashed (every byte) before and after; a change is reported and fails the run.
    """
    s = settings or ValidateSettings()
    unknown = [c for c in checks if c not in CHECK_FUNCS]
    if unknown:
        raise FrankenscopeError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    out = Path(out)
    model = str(model)
    if not (Path(model) / "config.json").is_file():
        raise FrankenscopeError(f"{model}: validate needs a local model folder with config.json")
    from transformers import AutoConfig

    from frankenscope.adapters import architecture_of, get_adapter

    get_adapter(architecture_of(AutoConfig.from_pretrained(model)))  # an unsupported family fails here, by name
    inputs = {"model": model, "in": str(in_) if in_ else None, "rl": str(rl) if rl else None}
    guarded = [p for p in (model, in_, rl) if p]
    for p in guarded:
        a, b = Path(p).resolve(), out.resolve()
        if a == b or a in b.parents or b in a.parents:
            raise FrankenscopeError(f"--out {out} overlaps the input {p}: validate never writes into a checkpoint; "
                                    "choose another folder")
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.time()
    before = {str(p): hash_folder(p) for p in guarded}
    ctx = Context(model=model, out=out, work=work, settings=s, in_=str(in_) if in_ else None,
                  rl=str(rl) if rl else None)
    results: list[CheckResult] = []
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # dozens of "Loading weights" bars would bury the check lines
    try:
        for name in checks:
            t1 = time.time()
            echo(f"[validate] {name} ...")
            try:
                res = CHECK_FUNCS[name](ctx)
            except Exception as e:  # a crashed analysis is a failed check, reported with its error
                res = CheckResult(name, name, status="error", reason=f"{type(e).__name__}: {e}")
            res.conclude()
            res.wall_s = round(time.time() - t1, 2)
            if ctx._bench is not None and not keep_work:  # free each check's variants (full checkpoints) at once
                for folder in ctx._bench.created:
                    shutil.rmtree(folder, ignore_errors=True)
                ctx._bench.created.clear()
            echo(f"[validate] {name}: {res.status}" + (f" ({res.reason})" if res.reason and res.status != "pass" else "")
                 + f" in {res.wall_s:.1f}s")
            results.append(res)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        ctx._bench = None
        after = {str(p): hash_folder(p) for p in guarded}
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    unchanged = before == after
    counts = {st: sum(r.status == st for r in results) for st in STATUSES}
    passed = unchanged and not any(r.status in ("fail", "error", "inconclusive") for r in results) \
        and any(r.status == "pass" for r in results)
    payload = {"passed": passed, "counts": counts, "inputs_unchanged": unchanged,
               "input_hashes": {"before": before, "after": after},
               "settings": {**asdict(s), "partition": str(s.partition), "update_matrices": list(s.update_matrices), "checks": list(checks)},
               "checks": [asdict(r) for r in results], "wall_s": round(time.time() - t0, 2)}
    path = write_result(out / "validate.json", kind="validate", schema_version=VALIDATE_SCHEMA_VERSION,
                        payload=payload, seed=s.seed, inputs=inputs)
    doc = json.loads(path.read_text())
    write_text_atomic(out / "validate.md", render_markdown(doc))
    return doc
