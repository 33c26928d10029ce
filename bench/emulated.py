"""Benchmark: a foreign-arch target built on this host, stage by stage, beside the same
stages of the host's own arch, in one run.

    .venv/bin/python bench/emulated.py [--also-forced]

Serves the amd64 and arm64 fixtures (Debian 12 without the guest agent, each with a local
package repository) from a loopback mirror and builds `fixture-12-amd64` (native
customization with libguestfs) and `fixture-12-arm64` (on an amd64 host: customized by
booting the image under qemu-system-aarch64, UEFI, TCG) through sysprep, sparsify, build and
the boot test, timing each `doit` run. With --also-forced, the amd64 target's sysprep again
with KMI_CUSTOMIZE=emulated (same arch, same way as arm64), in a build folder of its own.
The stage cache is off: everything is made here. Prints a Markdown table.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

from kmi.demo import fixture as fixture_image
from kmi.demo.timing import timed_doit

REPO = Path(__file__).resolve().parent.parent
STAGES = ("sysprep", "sparsify", "build", "test")


def way(output: str) -> str:
    for line in output.splitlines():
        if ": customizing, " in line:
            return line.split(": customizing, ", 1)[1].split(":", 1)[0]
    return "-"


def main() -> None:
    forced = "--also-forced" in sys.argv[1:]
    rows: dict[str, dict[str, float]] = {}
    ways: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kmi-bench-") as tmp:
        work = Path(tmp)
        with fixture_image.served(work, arm64=True) as served:
            env = {**os.environ, **served, "KMI_PROGRESS": "off", "KMI_CACHE_URL": ""}
            for arch in ("amd64", "arm64"):
                target = f"fixture-12-{arch}"
                timed_doit(env, f"checksum:{target}")
                rows[target] = {}
                for stage in STAGES:
                    seconds, out = timed_doit(env, f"{stage}:{target}")
                    rows[target][stage] = seconds
                    if stage == "sysprep":
                        ways[target] = way(out)
                    print(f"{target} {stage}: {seconds:.0f} s", file=sys.stderr, flush=True)
            if forced:
                again = {**env, "KMI_CUSTOMIZE": "emulated", "KMI_BUILD_DIR": str(work / "b2")}
                seconds, out = timed_doit(again, "sysprep:fixture-12-amd64")
                rows["fixture-12-amd64 (forced)"] = {"sysprep": seconds}
                ways["fixture-12-amd64 (forced)"] = way(out)
    print(
        f"host: {platform.machine()}, {os.cpu_count()} cores; libguestfs and QEMU under TCG "
        "(KVM is unusable here); wall seconds of each `doit` run\n"
    )
    print("| target | customized | sysprep | sparsify | build | test | total |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for target, stages in rows.items():
        cells = [f"{stages[s]:.0f}" if s in stages else "-" for s in STAGES]
        total = sum(stages.values())
        print(f"| {target} | {ways[target]} | {' | '.join(cells)} | {total:.0f} |")


if __name__ == "__main__":
    main()
