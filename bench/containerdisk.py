"""Benchmark: containerize + push of one disk, kmi against buildah, in one run; and the
layer compressions kmi offers, beside pigz, on the same disk.

    .venv/bin/python bench/containerdisk.py [--size-mib 512] [--runs 3]

The disk is a qcow2 of random bytes (incompressible, as a compressed final qcow2 is). Both
tools push to the same Debian docker-registry on loopback, each run to a new repository
so that nothing is skipped. kmi: write the per-arch layout, the index layout, publish.
buildah (what a user would reach for): `from scratch`, `add --chown 107:107`, `commit`,
`push`, with vfs storage in a temp folder. Needs buildah (Debian package) for its half.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from kmi import oci
from kmi.demo.registry import RegistryServer
from kmi.registry import Client
from kmi.registry_ref import Registry
from kmi.stages.publish import Plan, publish

SPEC = oci.ImageSpec(
    arch="amd64",
    created="2026-01-01T00:00:00Z",
    mtime=1767225600,
    env={"INSTANCETYPE_KUBEVIRT_IO_DEFAULT_INSTANCETYPE": "u1.medium"},
    labels={},
    annotations={},
    ref="bench-amd64",
    history="kmi bench",
)


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return done.stdout


def make_disk(path: Path, mib: int) -> None:
    raw = path.with_suffix(".raw")
    with raw.open("wb") as out, open("/dev/urandom", "rb") as rnd:
        for _ in range(mib):
            out.write(rnd.read(1 << 20))
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    raw.unlink()


def kmi_run(disk: Path, work: Path, client: Client, repo: str) -> float:
    started = time.perf_counter()
    oci.write_image(disk, work / "amd64", SPEC)
    oci.write_index(work / "image", [work / "amd64"], {}, "bench")
    plan = Plan("bench", repo, work / "image", ("1",), "1-1")
    publish(client, plan, {}, lambda line: None, "off")
    seconds = time.perf_counter() - started
    shutil.rmtree(work)
    return seconds


def buildah_run(disk: Path, work: Path, host: str, repo: str) -> float:
    store = ["--root", str(work / "root"), "--runroot", str(work / "run"), "--storage-driver=vfs"]
    started = time.perf_counter()
    ctr = sh("buildah", *store, "from", "scratch").strip()
    sh("buildah", *store, "add", "--chown", "107:107", ctr, str(disk), "/disk/disk.img")
    sh("buildah", *store, "commit", "--quiet", ctr, f"localhost/{repo}:1")
    sh(
        "buildah",
        *store,
        "push",
        "--quiet",
        "--tls-verify=false",
        f"localhost/{repo}:1",
        f"docker://{host}/{repo}:1",
    )
    seconds = time.perf_counter() - started
    subprocess.run(["buildah", *store, "rm", "--all"], capture_output=True)
    subprocess.run(["buildah", *store, "rmi", "--all", "--force"], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    return seconds


def compressions(disk: Path, tmp: Path) -> list[tuple[str, float, int]]:
    """Wall time and layer size of each way to compress the same layer."""
    rows = []
    for compression in ("gzip-stored", "none", "zstd", "gzip"):
        started = time.perf_counter()
        built = oci.write_image(disk, tmp / compression, SPEC, compression)
        rows.append(
            (f"kmi {compression}", time.perf_counter() - started, built.layer.descriptor.size)
        )
    layer = oci.blobs_of(tmp / "none", oci.top(tmp / "none"))[1]
    tar = oci.blob_path(tmp / "none", layer.digest)
    for name, argv in (
        ("pigz -1 (all cores)", ["pigz", "-1", "-c"]),
        ("gzip -1", ["gzip", "-1", "-c"]),
    ):
        if shutil.which(argv[0]) is None:
            continue
        out = tmp / "out"
        started = time.perf_counter()
        with tar.open("rb") as src, out.open("wb") as dst:
            subprocess.run(argv, stdin=src, stdout=dst, check=True)
        rows.append((f"{name} of the tar", time.perf_counter() - started, out.stat().st_size))
    return rows


def median(runs: list[float]) -> str:
    return f"{statistics.median(runs):.2f} s (runs: {', '.join(f'{r:.2f}' for r in runs)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kmi-bench-", dir="/var/tmp") as name:
        tmp = Path(name)
        disk = tmp / "disk.qcow2"
        make_disk(disk, args.size_mib)
        registry = RegistryServer(tmp / "registry").start()
        client = Client(Registry.parse(registry.host))
        kmi_times: list[float] = []
        buildah_times: list[float] = []
        have_buildah = shutil.which("buildah") is not None
        try:
            for n in range(args.runs):
                kmi_times.append(kmi_run(disk, tmp / "kmi", client, f"bench/kmi{n}"))
                if have_buildah:
                    buildah_times.append(
                        buildah_run(disk, tmp / "b", registry.host, f"bench/buildah{n}")
                    )
        finally:
            registry.stop()
        rows = compressions(disk, tmp / "layers")
        size = disk.stat().st_size
    print(f"disk: {args.size_mib} MiB of random data as qcow2 ({size / 2**20:.0f} MiB)\n")
    print("| containerize + push to a loopback registry | median wall time |")
    print("| --- | --- |")
    print(f"| kmi (layout, index, publish) | {median(kmi_times)} |")
    if buildah_times:
        print(f"| buildah from/add/commit/push | {median(buildah_times)} |")
        ratio = statistics.median(kmi_times) / statistics.median(buildah_times)
        print(f"\nkmi / buildah = {ratio:.2f}")
    else:
        print("| buildah | not installed (apt-get install buildah) |")
    print("\n| layer | wall time | size |")
    print("| --- | --- | --- |")
    for label, seconds, nbytes in rows:
        print(f"| {label} | {seconds:.2f} s | {nbytes / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
