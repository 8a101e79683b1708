"""What every command module shares: the error exit, argument checks, and cleanup of a failed run's folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import typer

from frankenscope.errors import FrankenscopeError


def fail(e: Exception) -> None:
    """Print the error and exit: 2 for usage and input errors, 1 for runtime failures."""
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=getattr(e, "exit_code", 1))


def check_n(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise FrankenscopeError(f"{name} must be >= 1, got {value}")


@contextmanager
def new_out(out: Path) -> Iterator[None]:
    """Remove OUT again when the command fails and OUT did not exist before, unless it already holds
    resumable work (a response cache with entries); an existing OUT is never touched."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not holds_cached_work(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def holds_cached_work(out: Path) -> bool:
    import sqlite3

    for db in out.rglob("*.sqlite"):
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                if con.execute("SELECT COUNT(*) FROM entries").fetchone()[0]:
                    return True
        except sqlite3.Error:
            return True  # unreadable: keep it
    return False
