#!/usr/bin/env bash
# Set up and run the test suite (and the linter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests benchmarks
# One torch thread per test process: the tiny test models gain nothing from a second thread (suite 100 s
# vs 122 s on an idle 2-core machine), and with spare processes on the machine 2 spinning OpenMP threads
# slowed the suite ~8x (15 min). An explicit OMP_NUM_THREADS wins.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest --durations=10 "$@"
