"""Benchmark: how long a boot test takes, per arch and accelerator, and where the time goes.

    .venv/bin/python bench/boottest.py            # amd64, and arm64 if its fixture is built
    .venv/bin/python bench/boottest.py --arm64    # build the arm64 fixture first if needed

amd64: builds `fixture-12-amd64` with kmi up to its final disk, then times `doit test:...`
(a cold run that boots) and the same command again (up to date: nothing boots). arm64: the
arm64 fixture (scripts/fixture-image-arm64.sh) built with kmi up to its final disk (the
agent installed by emulation on an amd64 host), then booted by the same stage under
qemu-system-aarch64 with UEFI. KVM is used where the probe finds it working;
prints the accelerator it got. Output: a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from kmi.accel import choose
from kmi.demo import fixture as fixture_image
from kmi.demo.timing import timed_doit

REPO = Path(__file__).resolve().parent.parent
TARGET = "fixture-12-amd64"


def doit_seconds(env: dict[str, str], task: str) -> float:
    return timed_doit(env, task)[0]


def row(entry: dict[str, Any], disk: str, wall: float) -> str:
    checks = entry["checks"]

    def at(name: str) -> str:
        seconds = checks[name]["seconds"]
        return f"{seconds:.0f}" if seconds is not None else "-"

    return (
        f"| {entry['arch']} | {entry['accel']} | {disk} | {at('boot')} | {at('ssh')} | "
        f"{at('agent')} | {at('cloud-init')} | {entry['seconds']:.0f} | {wall:.1f} |"
    )


def amd64(work: Path) -> list[str]:
    with fixture_image.served(work) as env:
        doit_seconds(env, f"sparsify:{TARGET}")
        cold = doit_seconds(env, f"test:{TARGET}")
        warm = doit_seconds(env, f"test:{TARGET}")
    results = json.loads((work / "build" / "results.json").read_text())
    entry = results["tests"][TARGET]
    return [
        row(entry, "fixture after sysprep (Debian 12)", cold),
        f"| amd64 | - | the same, up to date | - | - | - | - | - | {warm:.1f} |",
    ]


def arm64(work: Path, build: bool) -> list[str]:
    if not build and fixture_image.cached("arm64") is None:
        return ["| arm64 | - | not built here (run with --arm64) | - | - | - | - | - | - |"]
    folder = work / "arm64"
    folder.mkdir()
    target = "fixture-12-arm64"
    with fixture_image.served(folder, arm64=True) as env:
        doit_seconds(env, f"sparsify:{target}")  # the agent installed by emulation
        cold = doit_seconds(env, f"test:{target}")
    entry = json.loads((folder / "build" / "results.json").read_text())["tests"][target]
    return [row(entry, "arm64 fixture after sysprep (Debian 12, UEFI)", cold)]


def main() -> None:
    accel, why = choose("auto", Path(tempfile.gettempdir()) / "kmi-bench-accel.json")
    print(f"host acceleration: {accel} ({why}); foreign arches always run under TCG")
    lines = [
        "| arch | accel | disk | guest answered (s) | ssh ok (s) | agent ok (s) | "
        "cloud-init done (s) | test (s) | wall (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="kmi-bench-") as tmp:
        work = Path(tmp)
        lines += amd64(work)
        print("\n".join(lines), flush=True)
        lines = arm64(work, "--arm64" in sys.argv[1:])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
