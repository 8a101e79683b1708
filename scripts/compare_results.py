"""Compare the JSON result files of two runs (e.g. the demo before and after a change).

    python scripts/compare_results.py RUN_A RUN_B [--ignore KEY ...]

Every `*.json` under RUN_A is compared with the file at the same relative path under RUN_B, ignoring keys
that differ between any two runs (timings, timestamps, package versions, absolute paths of the run
folders). Prints one line per file that differs (with the first differing key paths) and exits 1 when any
does, 0 when all are equal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# "key": a done marker's hash of settings that name the run folder, so it differs between any two folders
VOLATILE = {"created", "wall_s", "versions", "elapsed_s", "seconds", "time_s", "wall", "cache", "train_s", "key"}


def _strip(obj: Any, roots: tuple[str, str], ignore: set[str]) -> Any:
    """obj with volatile keys dropped and the two run folders' paths replaced by a placeholder."""
    if isinstance(obj, dict):
        return {k: _strip(v, roots, ignore) for k, v in obj.items() if k not in ignore}
    if isinstance(obj, list):
        return [_strip(v, roots, ignore) for v in obj]
    if isinstance(obj, str):
        for root in roots:
            obj = obj.replace(root, "<RUN>")
        return obj
    return obj


def _diff_paths(a: Any, b: Any, path: str = "") -> list[str]:
    if type(a) is not type(b):
        return [path or "<root>"]
    if isinstance(a, dict):
        out = [f"{path}.{k}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _diff_paths(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}[len {len(a)} vs {len(b)}]"]
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _diff_paths(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "<root>"]


def compare(run_a: Path, run_b: Path, ignore: set[str]) -> list[tuple[str, list[str]]]:
    """(relative path, differing key paths) for every JSON file of run_a that differs in run_b."""
    roots = (str(run_a.resolve()), str(run_b.resolve()))
    diffs = []
    for fa in sorted(run_a.rglob("*.json")):
        rel = fa.relative_to(run_a)
        fb = run_b / rel
        if not fb.is_file():
            diffs.append((str(rel), ["<missing in B>"]))
            continue
        a = _strip(json.loads(fa.read_text()), roots, ignore)
        b = _strip(json.loads(fb.read_text()), roots, ignore)
        if a != b:
            diffs.append((str(rel), _diff_paths(a, b)))
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--ignore", nargs="*", default=[], help="More keys to ignore anywhere.")
    args = ap.parse_args()
    diffs = compare(args.run_a, args.run_b, VOLATILE | set(args.ignore))
    for rel, paths in diffs:
        print(f"{rel}: {len(paths)} difference(s), e.g. {', '.join(paths[:6])}")
    n = len(list(args.run_a.rglob("*.json")))
    print(f"{n - len(diffs)} of {n} JSON files equal")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
