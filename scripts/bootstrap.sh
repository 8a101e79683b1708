#!/usr/bin/env bash
# Create .venv (if needed) and install frankenscope with the exact versions in constraints.txt.
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.frankenscope-stamp
WANT="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  # torch is pinned in the same command so pip takes the CPU wheel (an unpinned torch pulls CUDA builds).
  .venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0 -e ".[train,dev,ray]"
  echo "$WANT" > "$STAMP"
fi
