#!/usr/bin/env bash
# Set up, then run the whole test suite: ruff, mypy --strict and pytest (real gpg, real
# HTTP server on loopback, real doit, real libguestfs and QEMU on the fixture images).
# The fixture images (amd64 and arm64, built once per machine and version of their
# scripts) build in the background while the tests that do not need them run first.
# Two pytest workers (KMI_TEST_WORKERS; 0 runs serially), each taking whole test files, the
# longest started first (tests/conftest.py): on two cores under TCG one worker alone keeps
# about 1.3 of them busy. The 20 slowest tests are listed at
# the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --durations=20 -n "${KMI_TEST_WORKERS:-2}" \
    --dist loadfile --no-loadscope-reorder "$@"
