"""The registry of analyses: one entry per analysis, the single place that says what it is.

Each `Analysis` names its study unit (and the unit's folder), the function that builds the unit, the
result file the unit writes, the figures and table the report shows, the paper figure or table it
reproduces, the CLI command that runs it on its own, the claims whose verdicts read it, and the
config sections it does not depend on. From this registry are derived:

* the CLI's analysis commands (`frankenscope.cli` registers `command` -> `cli` for each entry);
* the study's units and their order (`frankenscope.study.run.study_units`), and which config
  changes rerun a unit (`UNIT_IGNORES`);
* the report's sections (`frankenscope.study.report.SECTIONS`);
* which units each verdict reads (`frankenscope.study.verdicts.CLAIMS`).

Functions are named as "module:attribute" strings and imported on use, so reading the registry (as
`frankenscope --help` does) imports no torch. Adding an analysis: write its `run` function in the
application layer (`evaluate/run.py`, `probes/run.py`, ...), its unit builder in `study/units.py`, a
command in the subpackage's `cli.py`, then one `Analysis` here; docs/architecture.md has the checklist.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from frankenscope.errors import FrankenscopeError


@dataclass(frozen=True)
class Analysis:
    """One analysis.

    name: the study unit's name and its folder under the study output.
    title: the report section's heading ("" for an analysis rendered elsewhere in the report).
    paper: the paper figure/table it reproduces ("" when it is not the paper's).
    result: the file the unit writes in its folder when it succeeds.
    unit: "module:function" building the study unit: f(UnitContext) -> run(folder) or None (not in this
        study, e.g. disabled in the config).
    figures, table: what the report shows from the unit's folder (glob patterns; a markdown file).
    command: the CLI command that runs the analysis alone ("localize vision"), None when it has none.
    cli: "module:function" of that command (a typer command function).
    claims: the paper's claims whose verdicts read this unit's results.
    ignores: config sections the unit does not depend on (changing them does not rerun it).
    models: models one task of the unit holds at once (an executor reserves GPUs per model; 0: the unit's
        own task is CPU work: evaluation units generate in separate shards, the diff streams weights).
    """

    name: str
    title: str
    paper: str
    result: str
    unit: str
    figures: tuple[str, ...] = ()
    table: str | None = None
    command: str | None = None
    cli: str | None = None
    claims: tuple[str, ...] = ()
    ignores: tuple[str, ...] = ()
    models: int = 1


_U = "frankenscope.study.units:"

#: Every analysis, in the order a study runs them (later units may read earlier units' outputs).
ANALYSES: tuple[Analysis, ...] = (
    Analysis("validate", "", "", "validate.json", _U + "validate_unit",
             command="validate", cli="frankenscope.validate_cli:validate_cmd",
             ignores=("evaluation", "probes", "freeze")),
    Analysis("finegrained", "Fine-grained abilities (Fig. 2, Table 1)", "Fig. 2, Table 1", "finegrained.json",
             _U + "finegrained_unit", ("finegrained.png",), "table.md",
             command="eval", cli="frankenscope.evaluate.cli:eval_cmd", claims=("P1",),
             ignores=("probes", "freeze", "partition", "non_layer_from", "validate"), models=0),
    Analysis("attention", "Attention to the image, IN vs RL (Fig. 3)", "Fig. 3", "attention.json",
             _U + "attention_unit", ("*.png",),
             command="attention", cli="frankenscope.probes.cli:attention_cmd", claims=("P2",),
             ignores=("freeze", "partition", "non_layer_from", "validate"), models=2),
    Analysis("localize-vision", "Vision localization by visual-token swapping (Fig. 4a)", "Fig. 4a", "summary.json",
             _U + "localize_vision_unit", ("*.png",),
             command="localize vision", cli="frankenscope.probes.cli:localize_vision_cmd", claims=("P3",),
             ignores=("freeze", "partition", "non_layer_from", "validate")),
    Analysis("localize-reasoning", "Reasoning localization by layer skipping (Fig. 4b)", "Fig. 4b", "summary.json",
             _U + "localize_reasoning_unit", ("*.png",),
             command="localize reasoning", cli="frankenscope.probes.cli:localize_reasoning_cmd", claims=("P3",),
             ignores=("freeze", "partition", "non_layer_from", "validate")),
    Analysis("diff", "Update energy (Fig. 5) and diversity (Fig. 6)", "Fig. 5, Fig. 6", "diff.json",
             _U + "diff_unit", ("fig5_energy.png", "fig6_*.png"),
             command="diff", cli="frankenscope.weights.cli:diff_cmd", claims=("P4", "P5"),
             ignores=("evaluation", "probes", "freeze", "non_layer_from", "validate"), models=0),
    Analysis("hybrids", "Transferability: six Frankenstein hybrids (Table 2)", "Table 2", "finegrained.json",
             _U + "hybrids_unit", ("finegrained.png",), "table.md",
             command="merge", cli="frankenscope.weights.cli:merge_cmd", claims=("P6",),
             ignores=("probes", "freeze", "validate"), models=0),
    Analysis("freeze", "Necessity: RL with one region frozen (Table 3)", "Table 3", "finegrained.json",
             _U + "freeze_unit", ("finegrained.png",), "table.md", claims=("P7",),
             ignores=("probes", "validate"), models=0),
)

#: Command groups of the CLI ("localize vision" is command "vision" of group "localize") and their help.
COMMAND_GROUPS: dict[str, str] = {
    "localize": "Functional localization: visual-token swapping and layer skipping (paper Fig. 4).",
}


def get_analysis(name: str) -> Analysis:
    """The registered analysis `name` (FrankenscopeError listing the names otherwise)."""
    for a in ANALYSES:
        if a.name == name:
            return a
    raise FrankenscopeError(f"unknown analysis {name!r}; analyses: {', '.join(a.name for a in ANALYSES)}")


def resolve(ref: str) -> Any:
    """The object named by "module:attribute" (imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def claim_units() -> dict[str, tuple[str, ...]]:
    """Claim -> the units whose results its verdict reads, in registry order."""
    out: dict[str, tuple[str, ...]] = {}
    for a in ANALYSES:
        for c in a.claims:
            out[c] = (*out.get(c, ()), a.name)
    return dict(sorted(out.items()))


def _check_registry() -> None:
    names = [a.name for a in ANALYSES]
    dup = {n for n in names if names.count(n) > 1}
    commands = [a.command for a in ANALYSES if a.command]
    dup |= {c for c in commands if commands.count(c) > 1}
    if dup:
        raise FrankenscopeError(f"analysis registry: {sorted(dup)} registered twice")
    for a in ANALYSES:
        if (a.command is None) != (a.cli is None):
            raise FrankenscopeError(f"analysis {a.name}: command and cli go together")
        group = a.command.split()[0] if a.command and " " in a.command else None
        if group is not None and group not in COMMAND_GROUPS:
            raise FrankenscopeError(f"analysis {a.name}: command group {group!r} is not in COMMAND_GROUPS")


_check_registry()
