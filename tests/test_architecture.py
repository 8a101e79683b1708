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
