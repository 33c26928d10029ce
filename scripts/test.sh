#!/usr/bin/env bash
# Set up, then run the whole test suite: ruff, mypy --strict and pytest (real gpg, real
# HTTP server on loopback, real doit, real libguestfs and QEMU on the fixture images).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The two fixture images (built once per machine and version of their scripts, then
# cached): side by side, since one waits on Debian's mirror while the other runs arm64
# programs through qemu-user. Already built: no time at all.
.venv/bin/python -m kmi.demo.fixture amd64 arm64
exec .venv/bin/python -m pytest -q --durations=20 "$@"
