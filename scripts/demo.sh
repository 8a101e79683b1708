#!/usr/bin/env bash
# Set up and run the main job: the demo study on the built-in model organism.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/frankenscope demo "$@"
