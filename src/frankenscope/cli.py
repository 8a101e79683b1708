"""Command-line interface: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from frankenscope.analyses import ANALYSES, COMMAND_GROUPS, resolve
from frankenscope.cli_common import check_n, fail
from frankenscope.errors import FrankenscopeError

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


def _register_analysis_commands() -> None:
    """Every analysis command of the registry (`frankenscope.analyses`): "diff" on the app, "localize vision"
    as command "vision" of the group "localize"."""
    groups: dict[str, typer.Typer] = {}
    for a in ANALYSES:
        if a.command is None or a.cli is None:
            continue
        *group, name = a.command.split()
        target = app
        if group:
            if group[0] not in groups:
                groups[group[0]] = typer.Typer(no_args_is_help=True, help=COMMAND_GROUPS[group[0]])
                app.add_typer(groups[group[0]], name=group[0])
            target = groups[group[0]]
        target.command(name)(resolve(a.cli))



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
        fail(FrankenscopeError(f"unknown suite {suite!r}; the built-in suite is 'organism'"))
    try:
        check_n("--n", n)
        path = suite_provider(suite).write_suite(out, n_per_task=n, n_pairs=pairs, seed=seed, overwrite=overwrite)
    except FrankenscopeError as e:
        fail(e)
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
        fail(e)
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
        fail(e)
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
        fail(FrankenscopeError(f"--format {format!r}: choose regex or json"))
    try:
        loaded = load_model(model)
        plan = freeze_plan(loaded.adapter, loaded.model, region, partition)
    except FrankenscopeError as e:
        fail(e)
    typer.echo("\n".join(plan["patterns"]) if format == "regex" else json.dumps(plan, indent=2))


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
        fail(e)


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
        fail(e)
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


_register_analysis_commands()


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
