"""The `eval` command (argument parsing only; the work is `evaluate/run.py`)."""

from __future__ import annotations

from pathlib import Path

import typer

from frankenscope.cli_common import check_n, fail, new_out
from frankenscope.errors import FrankenscopeError


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
    batch_size: str = typer.Option("16", help="Prompts per generate call, or auto: sized from free GPU memory "
                                   "once the model is loaded (16 on the CPU)."),
    max_new_tokens: int = typer.Option(64), seed: int = typer.Option(0),
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
        check_n("--n", n)
        check_n("--n-per-task", n_per_task)
    except FrankenscopeError as e:
        fail(e)
    try:
        with new_out(out):
            _eval(models, out, metrics=metrics, suite=suite, data=data, tasks=tasks, n=n, batch_size=batch_size,
                  max_new_tokens=max_new_tokens, seed=seed, prompt_style=prompt_style,
                  placement={"dtype": dtype, "device": device, "device_map": device_map,
                             "attn_implementation": attn_implementation},
                  labels=labels, n_per_task=n_per_task, benchmarks=benchmarks, max_image_pixels=max_image_pixels,
                  cache=cache, judge=judge, describe=describe, descriptions=descriptions,
                  prompts={"mathvista": mathvista_prompt, "mathverse": mathverse_prompt},
                  from_hub=from_hub, reference=reference)
    except FrankenscopeError as e:
        fail(e)


def _eval(models: list[str], out: Path, *, metrics: str, suite: str, data: Path | None, tasks: str | None,
          n: int | None, batch_size: int | str, max_new_tokens: int, seed: int, placement: dict[str, str | None],
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
