"""The `validate` command (argument parsing only; the work is `frankenscope.validate`)."""

from __future__ import annotations

from pathlib import Path

import typer

from frankenscope.cli_common import fail
from frankenscope.errors import FrankenscopeError


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
        fail(e)
        return
    for c in doc["checks"]:
        typer.echo(f"{c['status']:>14}  {c['title']}" + (f": {c['reason']}" if c.get("reason") and
                                                         c["status"] != "pass" else ""))
    typer.echo(f"wrote {out / 'validate.json'} and {out / 'validate.md'}")
    if not doc["passed"]:
        raise typer.Exit(code=1)
