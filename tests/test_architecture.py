"""The shape of the codebase: entry points, lazy imports and import boundaries (checked on the source)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import frankenscope

SRC = Path(frankenscope.__file__).parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(SRC.parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_answers_without_importing_torch() -> None:
    probe = ("import sys\nsys.argv = ['frankenscope', '--help']\nfrom frankenscope.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = _run("-c", probe)
    assert "Usage" in out.stdout and out.stdout.strip().endswith("NO-TORCH"), out.stdout + out.stderr


def test_python_dash_m_and_version() -> None:
    out = _run("-m", "frankenscope", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"frankenscope {frankenscope.__version__}", out.stderr


def test_public_api_names_resolve() -> None:
    import frankenscope.evaluate as ev
    import frankenscope.probes as pr
    import frankenscope.study as st
    import frankenscope.weights as wt

    for pkg in (ev, pr, st, wt):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None, (pkg.__name__, name)


# --------------------------------------------------------------------------- import boundaries

GENERIC = ("data", "probes", "evaluate", "weights")


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """frankenscope modules imported by a source file (absolute imports; function-level ones unless
    top_level_only)."""
    import ast

    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("frankenscope"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("frankenscope"))
    return out


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_generic_layers_never_import_the_organism_or_a_cli_module() -> None:
    bad = []
    for pkg in GENERIC:
        for f in sorted((SRC / pkg).rglob("*.py")):
            if f.stem == "cli":
                continue  # a subpackage's command module is CLI code itself
            for mod in _imports(f, top_level_only=False):
                last = mod.split(".")[-1]
                if mod.startswith("frankenscope.organism") or last == "cli" or last.startswith("cli_") \
                        or last.endswith("_cli") or ".cli." in mod:
                    bad.append(f"{f.relative_to(SRC)} imports {mod}")
    for f in (SRC / "loading.py",):
        bad += [f"loading.py imports {m}" for m in _imports(f, top_level_only=False)
                if m.startswith("frankenscope.organism")]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    modules = {_module_name(f): f for f in SRC.rglob("*.py")}
    graph = {}
    for name, f in modules.items():
        deps = set()
        for m in _imports(f, top_level_only=True):
            while m and m not in modules:
                m = m.rpartition(".")[0]  # "pkg.mod.name" -> "pkg.mod"
            if m and m != name:
                deps.add(m)
        graph[name] = deps
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(n: str, stack: list[str]) -> bool:
        state[n] = 1
        for d in graph[n]:
            if state.get(d) == 1:
                cycle.extend(stack[stack.index(d):] + [d] if d in stack else [n, d])
                return True
            if state.get(d) is None and visit(d, [*stack, d]):
                return True
        state[n] = 2
        return False

    for n in graph:
        if state.get(n) is None and visit(n, [n]):
            break
    assert not cycle, " -> ".join(cycle)


# --------------------------------------------------------------------------- the analysis registry

def test_registry_drives_cli_study_report_and_verdicts(tmp_path: Path) -> None:
    """Every registered analysis resolves; the CLI's analysis commands, the study's units, the report's
    sections and the verdicts' inputs are exactly what the registry says."""
    import typer
    from typer.main import get_command

    from frankenscope.analyses import ANALYSES, claim_units, get_analysis, resolve
    from frankenscope.cli import app
    from frankenscope.errors import FrankenscopeError
    from frankenscope.study import report, verdicts
    from frankenscope.study.config import StudyConfig
    from frankenscope.study.run import UNIT_IGNORES, study_units

    root = get_command(app)
    for a in ANALYSES:
        assert callable(resolve(a.unit)), a.name
        if a.command:
            cmd = root
            for part in a.command.split():
                cmd = cmd.commands[part]  # type: ignore[attr-defined]
            fn = resolve(a.cli)  # typer wraps the callback: compare what it wraps
            assert (cmd.callback.__module__, cmd.callback.__qualname__) == (fn.__module__, fn.__qualname__), a.command
    assert [s[1] for s in report.SECTIONS] == [a.name for a in ANALYSES if a.title]
    assert {c: u for c, (_, u) in verdicts.CLAIMS.items()} == {c: " / ".join(u) for c, u in claim_units().items()}
    assert set(verdicts.CLAIMS) == set(verdicts.STATEMENTS) == {f"P{i}" for i in range(1, 8)}
    assert {a.name: a.ignores for a in ANALYSES} == UNIT_IGNORES
    with __import__("pytest").raises(FrankenscopeError, match="unknown analysis 'nope'; analyses: validate"):
        get_analysis("nope")
    assert isinstance(app, typer.Typer)

    # a study on the organism has every unit, in registry order; off-switches drop theirs
    models = {k: {"path": str(tmp_path / k)} for k in ("base", "in", "rl")}
    cfg = StudyConfig.model_validate({"name": "t", "organism": True, **models})
    assert [u.name for u in study_units(cfg, tmp_path)] == [a.name for a in ANALYSES]
    assert [u.result for u in study_units(cfg, tmp_path)] == [a.result for a in ANALYSES]
    cfg = StudyConfig.model_validate({"name": "t", **models, "validate": {"enabled": False}})
    assert [u.name for u in study_units(cfg, tmp_path)] == [a.name for a in ANALYSES
                                                           if a.name not in ("validate", "freeze")]
