#!/usr/bin/env bash
# Set up, then run the pipeline end to end against a local mirror: no internet needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m kmi.demo "$@"
