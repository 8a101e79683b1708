"""Command-line interface: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import typer

from frankenscope.errors import FrankenscopeError
from frankenscope.probes.cli import attention_cmd, localize_app
from frankenscope.weights.cli import diff_cmd, merge_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="What did SFT and RL change inside a vision-language model, and where?")
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
    from frankenscope.data.io import write_suite

    if suite != "organism":
        _fail(FrankenscopeError(f"unknown suite {suite!r}; the built-in suite is 'organism'"))
    try:
        _check_n("--n", n)
        path = write_suite(out, n_per_task=n, n_pairs=pairs, seed=seed, overwrite=overwrite)
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


def run_eval(model: str, out: Path, *, suite: str = "organism", data: Path | None = None,
             tasks: str | None = None, n: int | None = None, batch_size: int = 16,
             max_new_tokens: int = 64, seed: int = 0, dtype: str = "float32", device: str | None = None,
             cache: Path | None = None, progress: bool = True) -> dict:
    """Evaluate one model on a suite; write out/results.json and return its summary.

    Responses go through the response cache (default OUT/cache.sqlite), committed in chunks, so an
    interrupted run resumes where it stopped and a rerun of a finished one loads no model.
    """
    from frankenscope.data.io import first_n_per_task, load_items, write_suite
    from frankenscope.evaluate.cache import CachedGenerator, ResponseCache
    from frankenscope.evaluate.cli import _fingerprint, _LazyGenerator
    from frankenscope.evaluate.runner import HFGenerator, evaluate, format_table, write_eval_result
    from frankenscope.loading import check_model_source, load_model

    _check_n("--n", n)
    if batch_size < 1 or max_new_tokens < 1:
        raise FrankenscopeError(f"--batch-size and --max-new-tokens must be >= 1 (got {batch_size}, {max_new_tokens})")
    if data is None and suite != "organism":
        raise FrankenscopeError(f"unknown suite {suite!r}; use 'organism' or pass --data PATH")
    check_model_source(model)
    if data is not None:
        items = load_items(data)
    else:
        data = out / "suite"
        try:
            current = json.loads((data / "suite.json").read_text())
        except (OSError, ValueError):
            current = {}
        if not isinstance(current, dict) or current.get("seed") != seed:
            write_suite(data, seed=seed)
        items = load_items(data)
    if tasks:
        wanted = {t.strip() for t in tasks.split(",")}
        unknown = wanted - {it.task for it in items}
        if unknown:
            raise FrankenscopeError(f"--tasks names {sorted(unknown)}, not in {data}")
        items = [it for it in items if it.task in wanted]
    items = first_n_per_task(items, n)
    settings = {"generator": "hf", "system": None, "max_new_tokens": max_new_tokens, "do_sample": False,
                "repetition_penalty": 1.0, "max_image_pixels": None, "dtype": dtype, "batch_size": batch_size}

    def make() -> HFGenerator:
        return HFGenerator(load_model(model, dtype=dtype, device=device), batch_size=batch_size,
                           max_new_tokens=max_new_tokens, progress=progress)

    fp = _fingerprint(model)
    t0 = time.time()
    with ResponseCache(cache or out / "cache.sqlite") as store:
        gen = CachedGenerator(_LazyGenerator(make), store, fp, settings, chunk_size=max(batch_size, 1) * 4)
        result = evaluate(items, gen, seed=seed)
    run = {**settings, "greedy": True, "data": str(data), "n_items": len(items), "wall_s": round(time.time() - t0, 2),
           "cache": {"path": str(cache or out / "cache.sqlite"), "hits": gen.hits, "misses": gen.misses}}
    write_eval_result(result, out, model_source=model, model_fingerprint=fp, seed=seed, settings=run)
    typer.echo(format_table(result))
    typer.echo(f"generated {gen.misses}, cached {gen.hits}")
    return result.summary()


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
    no_query: bool = typer.Option(False, help="MathVista: use question+choices instead of the `query` field."),
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
                  max_new_tokens=max_new_tokens, seed=seed, dtype=dtype, device=device, prompt_style=prompt_style,
                  labels=labels, n_per_task=n_per_task, benchmarks=benchmarks, max_image_pixels=max_image_pixels,
                  cache=cache, judge=judge, describe=describe, descriptions=descriptions, no_query=no_query,
                  from_hub=from_hub, reference=reference)
    except FrankenscopeError as e:
        _fail(e)


def _eval(models: list[str], out: Path, *, metrics: str, suite: str, data: Path | None, tasks: str | None,
          n: int | None, batch_size: int, max_new_tokens: int, seed: int, dtype: str, device: str | None,
          prompt_style: str, labels: str | None, n_per_task: int, benchmarks: str | None,
          max_image_pixels: int | None, cache: Path | None, judge: bool, describe: bool | None,
          descriptions: Path | None, no_query: bool, from_hub: bool, reference: str | None) -> None:
    """The body of `eval` (raises FrankenscopeError)."""
    if metrics == "fine-grained":
        if tasks:
            raise FrankenscopeError("--tasks applies to --metrics accuracy only")
        from frankenscope.evaluate.cli import finegrained_eval

        finegrained_eval(models, out, suite=suite, data=data, prompt_style=prompt_style,
                         labels=labels.split(",") if labels else None, n=n, n_per_task=n_per_task, seed=seed,
                         benchmarks=benchmarks, batch_size=batch_size, max_new_tokens=max_new_tokens,
                         max_image_pixels=max_image_pixels, dtype=dtype, device=device, cache=cache,
                         judge=judge, describe=describe, descriptions=descriptions, use_query=not no_query,
                         from_hub=from_hub, reference=reference, echo=typer.echo)
    elif metrics == "accuracy":
        if len(models) != 1:
            raise FrankenscopeError("--metrics accuracy takes exactly one MODEL (use --metrics fine-grained "
                                    "to compare several)")
        run_eval(models[0], out, suite=suite, data=data, tasks=tasks, n=n, batch_size=batch_size,
                 max_new_tokens=max_new_tokens, seed=seed, dtype=dtype, device=device, cache=cache)
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
    out: Path = typer.Option(..., help="Output folder: one subfolder per analysis, report.html, report.md."),
) -> None:
    """Run every analysis for one Base -> IN -> RL triple and write the report; reruns skip finished units."""
    from frankenscope.study.config import load_config
    from frankenscope.study.run import run_study

    try:
        run_study(load_config(config), out, log=typer.echo)
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
        })
        (out / "study.yaml").write_text(yaml.safe_dump(cfg.model_dump(by_alias=True), sort_keys=False))
        run_study(cfg, out / "study", log=typer.echo)
    except FrankenscopeError as e:
        _fail(e)
    typer.echo(f"[{time.time() - t0:6.1f}s] demo done; open {out / 'study' / 'report.html'}")


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
