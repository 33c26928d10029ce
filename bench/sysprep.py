"""Benchmark: sysprep and sparsify of the fixture image, and the sparsify alternatives a
user would reach for instead, in one run.

    .venv/bin/python bench/sysprep.py

Builds `fixture-12-amd64` with kmi (`doit sysprep:...`, then `doit sparsify:...`), then on
the same customized image times `virt-sparsify --compress` (the one-step tool) and plain
`qemu-img convert -c` (no zeroing). Prints sizes and wall times as a Markdown table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kmi.accel import choose, libguestfs_env
from kmi.demo import fixture as fixture_image

REPO = Path(__file__).resolve().parent.parent
TARGET = "fixture-12-amd64"


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started


def mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.0f}"


def main() -> None:
    made = fixture_image.fixture()
    accel, why = choose("auto", Path(tempfile.gettempdir()) / "kmi-bench-accel.json")
    guestfs_env = {**os.environ, **libguestfs_env(accel)}
    with tempfile.TemporaryDirectory(prefix="kmi-bench-") as tmp:
        work = Path(tmp)
        with fixture_image.served(work) as served:
            env = {**served, "KMI_ACCEL": accel}
            doit = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
            timed([*doit, f"checksum:{TARGET}"], env)
            sysprep_s = timed([*doit, f"sysprep:{TARGET}"], env)
            sparsify_s = timed([*doit, f"sparsify:{TARGET}"], env)
            build = work / "build" / TARGET
            customized, final = build / "sysprep.qcow2", build / "disk.qcow2"
            one_step = work / "virt-sparsify-compress.qcow2"
            one_step_s = timed(
                [
                    "virt-sparsify",
                    "--compress",
                    "--format",
                    "qcow2",
                    str(customized),
                    str(one_step),
                ],
                guestfs_env,
            )
            plain = work / "convert-c.qcow2"
            plain_s = timed(
                [
                    "qemu-img",
                    "convert",
                    "-f",
                    "qcow2",
                    "-c",
                    "-O",
                    "qcow2",
                    str(customized),
                    str(plain),
                ],
                guestfs_env,
            )
        print(
            f"fixture-12-amd64, libguestfs under {accel.upper()} ({why}), {os.cpu_count()} cores\n"
        )
        print("| step | wall s | output MiB |\n| --- | ---: | ---: |")
        print(f"| upstream image (fixture, as served) | | {mib(made / 'fixture.qcow2')} |")
        print(
            f"| kmi `sysprep` (qemu-img convert, virt-customize, virt-sysprep) | "
            f"{sysprep_s:.0f} | {mib(customized)} |"
        )
        print(
            f"| kmi `sparsify` (virt-sparsify --in-place, qemu-img convert -c, check, "
            f"compare) | {sparsify_s:.0f} | {mib(final)} |"
        )
        print(f"| instead: `virt-sparsify --compress` | {one_step_s:.0f} | {mib(one_step)} |")
        print(
            f"| instead: `qemu-img convert -c` alone (no zeroing) | {plain_s:.0f} | {mib(plain)} |"
        )


if __name__ == "__main__":
    main()
