#!/usr/bin/env bash
# Set up, then run the whole test suite: ruff, mypy --strict and pytest (real gpg, real
# HTTP server on loopback, real doit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
