"""Benchmark: a second machine restoring a target from the shared stage cache, beside the
same machine rebuilding it, in one run.

    .venv/bin/python bench/stagecache.py

Machine A builds `fixture-12-amd64` (download .. build) with KMI_CACHE_URL set, which adds
the sysprep, sparsify and build outputs to the cache. Machines B and C start from empty
build and download folders: B with the same KMI_CACHE_URL (it downloads and verifies the
upstream file, then restores the three stages), C without it (it rebuilds everything).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kmi.demo import fixture as fixture_image

REPO = Path(__file__).resolve().parent.parent
TARGET = "fixture-12-amd64"


def build(env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), f"build:{TARGET}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"doit build:{TARGET} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started, done.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kmi-bench-") as tmp:
        work = Path(tmp)
        with fixture_image.served(work) as served:
            shared = {**served, "KMI_CACHE_URL": str(work / "shared")}
            first, _ = build(shared)
            machine_b = {
                **shared,
                "KMI_BUILD_DIR": str(work / "b" / "build"),
                "KMI_CACHE_DIR": str(work / "b" / "cache"),
            }
            restored, said = build(machine_b)
            assert said.count("restored from the stage cache") == 3, said
            machine_c = {
                **served,
                "KMI_BUILD_DIR": str(work / "c" / "build"),
                "KMI_CACHE_DIR": str(work / "c" / "cache"),
            }
            rebuilt, _ = build(machine_c)
        size = sum(f.stat().st_size for f in (work / "shared").rglob("*") if f.is_file())
    print(f"{TARGET}, stage cache {size / 2**20:.0f} MiB in a folder\n")
    print("| machine | what it ran | wall s |\n| --- | --- | ---: |")
    print(f"| A | everything, adding sysprep, sparsify, build to the cache | {first:.1f} |")
    print(f"| B | download + checksum, three stages restored from the cache | {restored:.1f} |")
    print(f"| C | everything, no cache (the rebuild B avoided) | {rebuilt:.1f} |")


if __name__ == "__main__":
    main()
