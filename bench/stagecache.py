"""Benchmark: a second machine restoring N targets from the shared stage cache, beside a
machine rebuilding them, in one run.

    .venv/bin/python bench/stagecache.py [--targets N] [--cache registry|folder]

The targets are the fixture flavor and N-1 copies of it (`fixture-b`, `fixture-c`, ...),
each writing its own name into /etc/kmi-release, so every target's sysprep, sparsify and
build are their own work and their own cache entries. Machine A builds all N (download ..
build) with KMI_CACHE_URL set (by default a real registry on loopback, Debian's
docker-registry), which adds the three stage outputs of each target. Machines B and C start
from empty build and download folders: B with the same KMI_CACHE_URL (it downloads and
verifies the upstream files, then restores the stages), C without it (it rebuilds all).
"""

from __future__ import annotations

import argparse
import string
import tempfile
from pathlib import Path

from kmi.demo import fixture as fixture_image
from kmi.demo.registry import RegistryServer
from kmi.demo.timing import timed_doit

REPO = Path(__file__).resolve().parent.parent


def copies(catalogue: Path, count: int) -> list[str]:
    """The fixture flavor and count-1 copies with their own customization: target names."""
    source = (catalogue / "fixture.yaml").read_text()
    names = ["fixture"]
    for letter in string.ascii_lowercase[1:count]:
        name = f"fixture-{letter}"
        text = source.replace("name: fixture\n", f"name: {name}\n", 1)
        text = text.replace('"customized by kmi\\n"', f'"customized by kmi ({name})\\n"')
        (catalogue / f"{name}.yaml").write_text(text)
        names.append(name)
    return [f"{name}-12-amd64" for name in names]


def build(env: dict[str, str], targets: list[str]) -> tuple[float, str]:
    return timed_doit(env, *(f"build:{t}" for t in targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=3, help="how many targets (1-26)")
    parser.add_argument("--cache", choices=["registry", "folder"], default="registry")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kmi-bench-") as tmp:
        work = Path(tmp)
        registry = RegistryServer(work / "registry").start() if args.cache == "registry" else None
        try:
            with fixture_image.served(work) as served:
                targets = copies(Path(served["KMI_CATALOGUE"]), args.targets)
                where = f"docker://{registry.host}/kmi-cache" if registry else str(work / "shared")
                shared = {**served, "KMI_CACHE_URL": where}
                first, _ = build(shared, targets)
                machine_b = {
                    **shared,
                    "KMI_BUILD_DIR": str(work / "b" / "build"),
                    "KMI_CACHE_DIR": str(work / "b" / "cache"),
                }
                restored, said = build(machine_b, targets)
                assert said.count("restored from the stage cache") == 3 * len(targets), said
                machine_c = {
                    **served,
                    "KMI_BUILD_DIR": str(work / "c" / "build"),
                    "KMI_CACHE_DIR": str(work / "c" / "cache"),
                }
                rebuilt, _ = build(machine_c, targets)
        finally:
            if registry:
                registry.stop()
        holder = work / "registry" / "storage" if registry else work / "shared"
        size = sum(f.stat().st_size for f in holder.rglob("*") if f.is_file())
    kind = "a registry on loopback" if registry else "a folder"
    print(f"{len(targets)} targets ({', '.join(targets)}); stage cache in {kind}, ", end="")
    print(f"{size / 2**20:.0f} MiB\n")
    print("| machine | what it ran | wall s |\n| --- | --- | ---: |")
    print(f"| A | everything, adding sysprep, sparsify, build to the cache | {first:.1f} |")
    print(f"| B | download + checksum, three stages restored per target | {restored:.1f} |")
    print(f"| C | everything, no cache (the rebuild B avoided) | {rebuilt:.1f} |")


if __name__ == "__main__":
    main()
