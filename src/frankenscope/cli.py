"""Command-line interface: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import typer

from frankenscope.errors import FrankenscopeError
from frankenscope.probes.cli import attention_cmd, localize_app
from frankenscope.weights.cli import diff_cmd, merge_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="What did SFT and RL change inside a vision-language model, and where?")


def _version(value: bool) -> None:
    if value:
        from frankenscope import __version__

        typer.echo(f"frankenscope {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """What did SFT and RL change inside a vision-language model, and where?"""

data_app = typer.Typer(no_args_is_help=True, help="Synthetic task suites and probe pairs.")
organism_app = typer.Typer(no_args_is_help=True, help="The built-in model organism (a tiny Qwen2.5-VL).")
app.add_typer(data_app, name="data")
app.add_typer(organism_app, name="organism")
app.command("diff")(diff_cmd)
app.command("merge")(merge_cmd)
app.add_typer(localize_app, name="localize")
app.command("attention")(attention_cmd)


def _fail(e: Exception) -> None:
    """Print the error and exit: 2 for usage and input errors, 1 for runtime failures."""
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=getattr(e, "exit_code", 1))


def _check_n(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise FrankenscopeError(f"{name} must be >= 1, got {value}")


@contextmanager
def _new_out(out: Path) -> Iterator[None]:
    """Remove OUT again when the command fails and OUT did not exist before, unless it already holds
    resumable work (a response cache with entries); an existing OUT is never touched."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not _holds_cached_work(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _holds_cached_work(out: Path) -> bool:
    import sqlite3

    for db in out.rglob("*.sqlite"):
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                if con.execute("SELECT COUNT(*) FROM entries").fetchone()[0]:
                    return True
        except sqlite3.Error:
            return True  # unreadable: keep it
    return False


@data_app.command("make")
def data_make(
    out: Path = typer.Option(..., help="Folder to write (replaced atomically; an existing folder that is not "
                             "a suite is refused unless --overwrite)."),
    suite: str = typer.Option("organism", help="Which suite; only 'organism' is built in."),
    n: int = typer.Option(50, help="Items per task."),
    pairs: int = typer.Option(50, help="Probe pairs per probe task (0: none)."),
    seed: int = typer.Option(0, help="Seed of the generators."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT even if it is not an earlier suite."),
) -> None:
    """Draw the synthetic task suite: items/<task>/data.jsonl + PNGs and probe/<task>/data.jsonl (paper format)."""
    from frankenscope.providers import suite as suite_provider

    if suite != "organism":
        _fail(FrankenscopeError(f"unknown suite {suite!r}; the built-in suite is 'organism'"))
    try:
        _check_n("--n", n)
        path = suite_provider(suite).write_suite(out, n_per_task=n, n_pairs=pairs, seed=seed, overwrite=overwrite)
    except FrankenscopeError as e:
        _fail(e)
    summary = json.loads((path / "suite.json").read_text())
    typer.echo(f"wrote {path}: " + ", ".join(f"{k} {v}" for k, v in {**summary.get("items", {}), **{f"probe:{k}": v for k, v in summary.get("probe", {}).items()}}.items()))


@organism_app.command("init")
def organism_init(
    out: Path = typer.Option(..., help="HF folder to write (an existing folder that is not an organism is "
                             "refused unless --overwrite)."),
    preset: str = typer.Option("small", help="micro (~1.1M params) or small (~6.2M params)."),
    seed: int = typer.Option(0, help="Initialisation seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT even if it is not an organism folder."),
) -> None:
    """Write a randomly initialised organism (model + tokenizer + processor) as a standard HF folder."""
    from frankenscope.io import check_out
    from frankenscope.organism.model import build_organism, save_folder

    def organism_folder(path: Path) -> bool:
        """An earlier `organism init` output: an HF folder with the organism's processor."""
        try:
            return (path / "config.json").is_file() and \
                "OrganismProcessor" in (path / "processor_config.json").read_text()
        except OSError:
            return False

    try:
        check_out(out, own=organism_folder, overwrite=overwrite)
        model, proc = build_organism(preset, seed=seed)
    except FrankenscopeError as e:
        _fail(e)
    save_folder(model, proc, out)
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"wrote {out} ({preset}, {n / 1e6:.2f}M parameters, seed {seed})")


@organism_app.command("build")
def organism_build(
    out: Path = typer.Option(Path("runs/organism"), help="Folder for base/, in/, rl*/ and manifest.json."),
    preset: str = typer.Option("small", help="small (default, ~6.2M params) or micro (~1.1M, for tests)."),
    seed: int = typer.Option(0, help="Seed of initialisation, data streams and training."),
    freeze: str | None = typer.Option(None, help="Keep these LLM layers fixed during RL: early|mid|late "
                                       "(joined with '+') or a layer list like '0-2'. Writes rl-frozen-<region>/."),
    partition: str = typer.Option("thirds", help="Region partition: thirds | 8,12,8 | cuts:9,18 | early=0-8;..."),
    rl_steps: int | None = typer.Option(None, help="Override the recipe's GRPO steps."),
    rl_lr: float | None = typer.Option(None, help="Override the recipe's GRPO learning rate."),
    rl_beta: float | None = typer.Option(None, help="Override the recipe's KL beta."),
    rl_generations: int | None = typer.Option(None, help="Override the recipe's generations per prompt."),
) -> None:
    """Train the organism Base -> IN (SFT) -> RL (GRPO); finished stages with unchanged inputs are skipped."""
    from frankenscope.organism.build import build, recipe_for

    overrides = {k: v for k, v in dict(rl_steps=rl_steps, rl_lr=rl_lr, rl_beta=rl_beta,
                                       rl_generations=rl_generations).items() if v is not None}
    try:
        recipe = recipe_for(preset, **overrides)
        manifest = build(out, preset=preset, seed=seed, freeze=freeze, partition=partition, recipe=recipe,
                         log=typer.echo)
    except FrankenscopeError as e:
        _fail(e)
        return
    for cat, d in (manifest.get("rl_vs_in") or {}).items():
        if cat in ("v2r", "text", "perception"):
            typer.echo(f"held-out {cat}: IN {d['mean_a']:.3f} -> RL {d['mean_b']:.3f}, paired diff {d['diff']:+.3f} "
                       f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (n={d['n']})")


@organism_app.command("freeze-plan")
def organism_freeze_plan(
    region: str = typer.Option(..., help="early|mid|late (joined with '+') or a layer list like '0-2,5'."),
    model: str = typer.Option(..., help="HF folder or hub id (its config gives the layer count)."),
    partition: str = typer.Option("thirds", help="Region partition spec."),
    format: str = typer.Option("regex", help="regex (one pattern per line) or json."),
) -> None:
    """Print the parameter-name patterns to freeze, for external trainers (TRL, verl, EasyR1, OpenRLHF)."""
    from frankenscope.loading import load_model
    from frankenscope.weights.freeze import freeze_plan

    if format not in ("regex", "json"):
        _fail(FrankenscopeError(f"--format {format!r}: choose regex or json"))
    try:
        loaded = load_model(model)
        plan = freeze_plan(loaded.adapter, loaded.model, region, partition)
    except FrankenscopeError as e:
        _fail(e)
    typer.echo("\n".join(plan["patterns"]) if format == "regex" else json.dumps(plan, indent=2))


@app.command("eval")
def eval_cmd(
    models: list[str] = typer.Argument(..., help="HF folders or hub ids; fine-grained compares them in this order."),
    out: Path = typer.Option(..., help="Output folder."),
    metrics: str = typer.Option("accuracy", help="accuracy (per-task accuracy, one model) | fine-grained "
                                "(M_vis, M_v2r, M_rea and benchmarks, several models compared)."),
    suite: str = typer.Option("organism", help="organism | paper"),
    data: Path | None = typer.Option(None, help="A suite folder / task folder / jsonl (accuracy), or the "
                                     "folder with the paper datasets (fine-grained --suite paper)."),
    tasks: str | None = typer.Option(None, help="accuracy only: comma-separated task names to keep."),
    n: int | None = typer.Option(None, help="accuracy: first N per task; fine-grained: N items per metric "
                                 "set (seeded subsample, saved as an id list)."),
    batch_size: int = typer.Option(16), max_new_tokens: int = typer.Option(64), seed: int = typer.Option(0),
    dtype: str = typer.Option("float32"), device: str | None = typer.Option(None),
    device_map: str | None = typer.Option(None, help="e.g. auto: spread each model over the visible GPUs."),
    attn_implementation: str = typer.Option("sdpa", help="sdpa | eager | flash_attention_2"),
    prompt_style: str = typer.Option("plain", help="plain|boxed|think_answer|think_boxed|STYLE.json; one, or "
                                     "comma-separated per model."),
    labels: str | None = typer.Option(None, help="Comma-separated column names for the models."),
    n_per_task: int = typer.Option(50, help="Organism suite size per task (fine-grained)."),
    benchmarks: str | None = typer.Option(None, help="paper suite: 'paper' or e.g. 'mathvista,mathverse'."),
    max_image_pixels: int | None = typer.Option(None, help="Downscale larger images (LANCZOS)."),
    cache: Path | None = typer.Option(None, help="SQLite response cache (default OUT/cache.sqlite); reruns and "
                                      "interrupted runs reuse it."),
    judge: bool = typer.Option(False, help="Grade with the LLM judge (FRANKENSCOPE_JUDGE_* variables)."),
    describe: bool | None = typer.Option(None, "--describe/--no-describe",
                                         help="Generate image descriptions with the judge endpoint."),
    descriptions: Path | None = typer.Option(None, help="JSON/jsonl file of image descriptions by id."),
    mathvista_prompt: str = typer.Option("query", help="MathVista prompt: query (its hint query; rebuilt from the "
                                         "fields when the file has none) | question (question + choices + unit)."),
    mathverse_prompt: str = typer.Option("query_cot", help="MathVerse prompt: query_cot | query_wo | question."),
    from_hub: bool = typer.Option(False, help="Load datasets through HF `datasets` (needs network)."),
    reference: str | None = typer.Option(None, help="Label of the model the others are compared with."),
) -> None:
    """Greedy batched evaluation with bootstrap 95% CIs: per-task accuracy, or the paper's fine-grained metrics."""
    try:
        _check_n("--n", n)
        _check_n("--n-per-task", n_per_task)
    except FrankenscopeError as e:
        _fail(e)
    try:
        with _new_out(out):
            _eval(models, out, metrics=metrics, suite=suite, data=data, tasks=tasks, n=n, batch_size=batch_size,
                  max_new_tokens=max_new_tokens, seed=seed, prompt_style=prompt_style,
                  placement={"dtype": dtype, "device": device, "device_map": device_map,
                             "attn_implementation": attn_implementation},
                  labels=labels, n_per_task=n_per_task, benchmarks=benchmarks, max_image_pixels=max_image_pixels,
                  cache=cache, judge=judge, describe=describe, descriptions=descriptions,
                  prompts={"mathvista": mathvista_prompt, "mathverse": mathverse_prompt},
                  from_hub=from_hub, reference=reference)
    except FrankenscopeError as e:
        _fail(e)


def _eval(models: list[str], out: Path, *, metrics: str, suite: str, data: Path | None, tasks: str | None,
          n: int | None, batch_size: int, max_new_tokens: int, seed: int, placement: dict[str, str | None],
          prompt_style: str, labels: str | None, n_per_task: int, benchmarks: str | None,
          max_image_pixels: int | None, cache: Path | None, judge: bool, describe: bool | None,
          descriptions: Path | None, prompts: dict[str, str], from_hub: bool, reference: str | None) -> None:
    """The body of `eval` (raises FrankenscopeError)."""
    if metrics == "fine-grained":
        if tasks:
            raise FrankenscopeError("--tasks applies to --metrics accuracy only")
        from frankenscope.evaluate.run import finegrained_eval

        finegrained_eval(models, out, suite=suite, data=data, prompt_style=prompt_style,
                         labels=labels.split(",") if labels else None, n=n, n_per_task=n_per_task, seed=seed,
                         benchmarks=benchmarks, batch_size=batch_size, max_new_tokens=max_new_tokens,
                         max_image_pixels=max_image_pixels, **placement, cache=cache,
                         judge=judge, describe=describe, descriptions=descriptions, prompts=prompts,
                         from_hub=from_hub, reference=reference, echo=typer.echo)
    elif metrics == "accuracy":
        if len(models) != 1:
            raise FrankenscopeError("--metrics accuracy takes exactly one MODEL (use --metrics fine-grained "
                                    "to compare several)")
        from frankenscope.evaluate.run import accuracy_eval

        accuracy_eval(models[0], out, suite=suite, data=data, tasks=tasks, n=n, batch_size=batch_size,
                      max_new_tokens=max_new_tokens, seed=seed, **placement, prompt_style=prompt_style,
                      cache=cache, echo=typer.echo)
    else:
        raise FrankenscopeError(f"--metrics {metrics!r}: choose accuracy or fine-grained")


@app.command("architectures")
def architectures() -> None:
    """List the supported model architectures (HF config.architectures names)."""
    from frankenscope.adapters import supported_architectures

    for a in supported_architectures():
        typer.echo(a)


@app.command("study")
def study_cmd(
    config: Path = typer.Argument(..., help="Study YAML (see configs/)."),
    out: Path | None = typer.Option(None, help="Output folder: one subfolder per analysis, report.html, report.md "
                                    "(needed unless --plan)."),
    device: str | None = typer.Option(None, help="Override the config's device (e.g. cuda:0)."),
    device_map: str | None = typer.Option(None, help="Override the config's device_map (e.g. auto)."),
    dtype: str | None = typer.Option(None, help="Override the config's dtype (e.g. bfloat16)."),
    executor: str | None = typer.Option(None, help="Where units run: local (default, one process) or ray "
                                        "(Ray tasks; pip install 'frankenscope[ray]'). Overrides executor.kind."),
    address: str | None = typer.Option(None, help="Ray cluster to join (auto, ray://HOST:PORT); default: start "
                                       "a local one. Overrides executor.address."),
    backend: str | None = typer.Option(None, help="Evaluation generation: hf (transformers) or vllm "
                                       "(pip install 'frankenscope[vllm]'). Overrides evaluation.backend."),
    plan: bool = typer.Option(False, "--plan", help="Print the work of every unit and GPU-hour estimates; run "
                              "nothing."),
    gpus: str = typer.Option("1,8,64", help="With --plan: GPU counts to estimate for (comma-separated)."),
) -> None:
    """Run every analysis for one Base -> IN -> RL triple and write the report; reruns skip finished units."""
    from frankenscope.study.config import StudyConfig, load_config
    from frankenscope.study.run import run_study

    try:
        cfg = load_config(config)
        overrides: dict[str, Any] = {k: v for k, v in {"device": device, "device_map": device_map,
                                                       "dtype": dtype}.items() if v is not None}
        raw = cfg.model_dump(by_alias=True)
        if executor is not None or address is not None:
            overrides["executor"] = {**raw["executor"], **({"kind": executor} if executor else {}),
                                     **({"address": address} if address else {})}
        if backend is not None:
            overrides["evaluation"] = {**raw["evaluation"], "backend": backend}
        if overrides:
            try:
                cfg = StudyConfig.model_validate({**raw, **overrides})
            except ValueError as e:
                raise FrankenscopeError(f"study options: {e}") from e
        if plan:
            from frankenscope.study.plan import format_plan, study_plan

            try:
                counts = [int(g) for g in gpus.split(",") if g.strip()]
            except ValueError:
                raise FrankenscopeError(f"--gpus {gpus!r}: give GPU counts such as 1,8,64") from None
            typer.echo(format_plan(study_plan(cfg, config_path=config), counts))
            return
        if out is None:
            raise FrankenscopeError("study: --out is required (except with --plan)")
        run_study(cfg, out, log=typer.echo)
    except FrankenscopeError as e:
        _fail(e)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    preset: str = typer.Option("small", help="Organism preset: small (default) or micro."),
    seed: int = typer.Option(0),
) -> None:
    """The main job: build the organism (Base -> IN -> RL) if needed, then run the full study on it."""
    import yaml

    from frankenscope.organism.build import build
    from frankenscope.study.config import StudyConfig
    from frankenscope.study.run import run_study

    t0 = time.time()
    try:
        org = out / "organism"
        build(org, preset=preset, seed=seed, log=typer.echo)
        typer.echo(f"[{time.time() - t0:6.1f}s] organism ready: {org}")
        cfg = StudyConfig.model_validate({
            "name": f"organism-{preset}", "organism": True, "organism_preset": preset, "seed": seed,
            "base": {"path": str(org / "base")}, "in": {"path": str(org / "in")}, "rl": {"path": str(org / "rl")},
            "evaluation": {"n_per_task": 30 if preset == "small" else 4, "max_new_tokens": 48},
            "probes": {"skip_max_new_tokens": 48, "attention_max_new_tokens": 48},
        })
        (out / "study.yaml").write_text(yaml.safe_dump(cfg.model_dump(by_alias=True), sort_keys=False))
        run_study(cfg, out / "study", log=typer.echo)
    except FrankenscopeError as e:
        _fail(e)
    typer.echo(f"[{time.time() - t0:6.1f}s] demo done; open {out / 'study' / 'report.html'}")


@app.command("tiny")
def tiny_cmd(
    family: str = typer.Argument(..., help="Model family, e.g. qwen2.5-vl, internvl, gemma3 (unknown: lists all)."),
    out: Path = typer.Option(..., help="Folder to write; must not exist or be empty."),
    seed: int = typer.Option(0, help="Random seed of the weights (same seed, same tensors)."),
    init_range: float = typer.Option(0.02, help="initializer_range; about 0.2 makes random models input-sensitive."),
) -> None:
    """Write a tiny random checkpoint of FAMILY's real architecture, with its processor and an offline tokenizer."""
    from frankenscope.testing.families import save_tiny

    try:
        save_tiny(family, out, seed=seed, initializer_range=init_range)
    except FrankenscopeError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"wrote a tiny {family} checkpoint to {out}")


@app.command("validate")
def validate_cmd(
    model: str = typer.Argument(..., help="Local HF model folder (only read: variants are written under OUT/.work)."),
    out: Path = typer.Option(..., help="Output folder: validate.json and validate.md."),
    in_: str | None = typer.Option(None, "--in", help="IN checkpoint for the transfer check (with --rl)."),
    rl: str | None = typer.Option(None, "--rl", help="RL checkpoint for the transfer check (with --in); without "
                                  "both, the check uses the model and a noise-perturbed copy."),
    checks: str = typer.Option(",".join(("blind", "dead_layer", "planted_update", "transfer", "attention")),
                               help="Comma-separated checks to run; frozen_transfer (organism only: trains an RL run with early and mid frozen) runs only when named."),
    n: int = typer.Option(2, help="Items (pairs) per task of each analysis."),
    max_new_tokens: int = typer.Option(12, help="Greedy decoding budget of every analysis."),
    suite: str = typer.Option("organism", help="Fine-grained evaluation suite: organism | paper."),
    data: str | None = typer.Option(None, help="Evaluation data (a suite folder, or the paper datasets' folder)."),
    pairs: str = typer.Option("organism", help="Swap probe pairs, as `localize vision --pairs`."),
    swap_engine: str = typer.Option("fast", help="Swap engine of the blind check: fast (what the probes use) or "
                                    "naive (the oracle)."),
    dataset: str = typer.Option("organism", help="Layer-skip and attention items, as `localize reasoning --dataset`."),
    data_root: str | None = typer.Option(None, help="Folder of the paper datasets named by --dataset."),
    dead_layer: int | None = typer.Option(None, help="Layer of the dead-layer check (default: n_layers // 2)."),
    attention_layers: str | None = typer.Option(None, help="Layers of the attention check, e.g. '3,5' "
                                                "(default: n_layers // 2)."),
    region: str = typer.Option("mid", help="Region of the planted update (early|mid|late, '+'-joined, or layers)."),
    rank: int = typer.Option(4, help="Rank of the planted update."),
    matrices: str = typer.Option("q_proj,o_proj,down_proj", help="Matrices of the planted update in each layer "
                                 "(q_proj, k_proj, v_proj, o_proj, down_proj, or an MLP linear's name)."),
    partition: str = typer.Option("thirds", help="Region partition spec."),
    prompt_style: str = typer.Option("plain", help="Prompt style of every analysis."),
    seed: int = typer.Option(0), dtype: str = typer.Option("float32", help="dtype of the variants (float32 for "
                                                              "exact planted spectra)."),
    device: str | None = typer.Option(None),
    keep_work: bool = typer.Option(False, "--keep-work", help="Keep the variants and analysis outputs in OUT/.work."),
) -> None:
    """Planted effects with known answers: edit copies of MODEL so each analysis's answer is known, run it, compare."""
    from frankenscope.validate import ValidateSettings, validate

    try:
        settings = ValidateSettings(
            n=n, max_new_tokens=max_new_tokens, seed=seed, dtype=dtype, device=device, dead_layer=dead_layer,
            attention_layers=[int(x) for x in attention_layers.split(",")] if attention_layers else None,
            update_region=region, update_rank=rank, partition=partition,
            update_matrices=tuple(x.strip() for x in matrices.split(",") if x.strip()), suite=suite, data=data, pairs=pairs, swap_engine=swap_engine,
            dataset=dataset, data_root=data_root, prompt_style=prompt_style)
        doc = validate(model, out, in_=in_, rl=rl, checks=[c.strip() for c in checks.split(",") if c.strip()],
                       settings=settings, keep_work=keep_work, echo=typer.echo)
    except (FrankenscopeError, ValueError) as e:
        _fail(e)
        return
    for c in doc["checks"]:
        typer.echo(f"{c['status']:>14}  {c['title']}" + (f": {c['reason']}" if c.get("reason") and
                                                         c["status"] != "pass" else ""))
    typer.echo(f"wrote {out / 'validate.json'} and {out / 'validate.md'}")
    if not doc["passed"]:
        raise typer.Exit(code=1)


def main() -> None:
    """Entry point: file-system failures that escape a command (disk full, permissions) become a
    one-line error naming the file and exit code 1 instead of a traceback."""
    try:
        app()
    except OSError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
