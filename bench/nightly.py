"""Benchmark: nights of the nightly workflow, simulated on this machine, as it runs now
beside the steps it ran before (every target rebuilt, each build folder handed to the
publish job), in one run.

    .venv/bin/python bench/nightly.py

Two flavors, `fixture` and a copy of it, `twin` (amd64, the fixture image of
scripts/fixture-image.sh), each served as its own upstream by a loopback mirror; one
docker-registry on loopback (each way of running publishes under its own path). Each job
of a night runs in a fresh folder of its own, as on a fresh runner (no build folder, no
download cache, no stage cache); what one job hands the next goes through a folder, as
GitHub's artifacts do, and is counted. The lock is kept from night to night, as the
repository keeps it. Nights, in order:

1. first: nothing published yet;
2. no-op: nothing changed upstream or in the catalogue;
3. one upstream changed: `twin` ships a new build;
4. one upstream down: `fixture`'s mirror answers 404;
5. one job failing: `fixture` is back with a build whose bytes do not match its signed
   checksum (its download fails, in its own job).

For each: build jobs started, libguestfs runs (sysprep and sparsify stages that ran), bytes
handed between jobs, bytes pushed to the registry (blobs and manifests sent, as the push and
publish results count them), requests to the registry (its access log, without the /v2/
pings), whether the night ended red, and the wall time of all its jobs run one after the
other. Prints a Markdown table.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kmi.demo import fixture as fixture_image
from kmi.demo.registry import RegistryServer
from kmi.demo.timing import DODO, services
from kmi.demo.upstreams import SigningKey, Upstreams, environment
from kmi.progress import human

FLAVORS = {"fixture": fixture_image.HOST, "twin": "https://twin.kmi.invalid/images"}
TARGETS = [f"{name}-12-amd64" for name in FLAVORS]
NIGHTS = ("first", "no-op", "one upstream changed", "one upstream down", "one job failing")


@dataclass
class Night:
    way: str
    name: str
    jobs: int = 0
    failed_jobs: int = 0
    libguestfs: int = 0
    handed: int = 0
    pushed: int = 0
    requests: int = 0
    red: bool = False
    seconds: float = 0.0


def doit(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(DODO), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    return done.returncode, done.stdout + done.stderr


def ran(out: str) -> list[str]:
    return [line[3:].strip() for line in out.splitlines() if line.startswith(".  ")]


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Upstream:
    """The two flavors' upstreams in the mirror, each changeable on its own."""

    def __init__(self, upstreams: Upstreams, image: bytes) -> None:
        self.upstreams, self.image = upstreams, image

    def ship(self, flavor: str, release: str, corrupt: bool = False) -> None:
        """Serve a build of `flavor` (replacing what its folder held)."""
        folder = self.upstreams.root / FLAVORS[flavor].split("://", 1)[1] / "12"
        shutil.rmtree(folder, ignore_errors=True)
        url = f"{FLAVORS[flavor]}/12/kmi-fixture-12-{release}-amd64.qcow2"
        self.upstreams.put(url, self.image)
        listed = self.image if not corrupt else self.image + b"not what upstream signed"
        sums = f"{hashlib.sha256(listed).hexdigest()}  {url.rsplit('/', 1)[1]}\n".encode()
        directory = url.rsplit("/", 1)[0]
        self.upstreams.put(f"{directory}/SHA256SUMS", sums)
        self.upstreams.put(f"{directory}/SHA256SUMS.asc", self.upstreams.key.detach_sign(sums))

    def down(self, flavor: str) -> None:
        shutil.rmtree(self.upstreams.root / FLAVORS[flavor].split("://", 1)[1])

    def before(self, night: str) -> None:
        """What changes upstream before `night`."""
        if night == "one upstream changed":
            self.ship("twin", "20260102")
        elif night == "one upstream down":
            self.down("fixture")
        elif night == "one job failing":
            self.ship("fixture", "20260103", corrupt=True)


def catalogue_for(work: Path, built: Path, key: SigningKey) -> Path:
    """The repository's catalogue: the fixture flavor and its twin with an upstream of its
    own, and (after the first night) the lock the discover jobs commit."""
    catalogue = work / "distros"
    catalogue.mkdir(parents=True)
    (catalogue / "local-key.asc").write_bytes(key.public)
    fixture = fixture_image.add_flavor(catalogue, built, key).read_text()
    twin = fixture.replace("name: fixture", "name: twin").replace(
        fixture_image.HOST, FLAVORS["twin"]
    )
    (catalogue / "twin.yaml").write_text(twin)
    return catalogue


def run_night(
    way: str, name: str, base: dict[str, str], work: Path, registry: RegistryServer
) -> Night:
    """One night: the discover job, a build job per target in the matrix, the publish job;
    each in a fresh folder under `work`."""
    night = Night(way, name)
    new = way == "now"
    _, mark = registry.requests_since(0, way)
    started = time.perf_counter()

    def job(folder: str, **extra: str) -> dict[str, str]:
        root = work / folder
        return {
            **base,
            "KMI_BUILD_DIR": str(root / "build"),
            "KMI_CACHE_DIR": str(root / "cache"),
            **extra,
        }

    discover_env = job("discover")
    code, out = doit(discover_env, "discover")
    night.red |= code != 0
    matrix_args = ["ci-matrix", "only=stale"] if new else ["ci-matrix"]
    code, out = doit(discover_env, *matrix_args)
    if code:
        raise SystemExit(f"{way} {name}: doit {' '.join(matrix_args)} failed:\n{out}")
    matrix = json.loads((work / "discover" / "build" / "ci-matrix.json").read_text())
    artifacts = work / "artifacts"
    for entry in matrix["include"]:
        target = entry["target"]
        night.jobs += 1
        env = job(f"build-{target}", KMI_LOCKED="1")
        steps = [f"build:{target}", f"test:{target}"] + ([f"push:{target}"] if new else [])
        code, out = doit(env, *steps)
        night.libguestfs += sum(1 for t in ran(out) if t.split(":")[0] in ("sysprep", "sparsify"))
        if code:
            night.failed_jobs += 1
            night.red = True
        folder = work / f"build-{target}" / "build" / target
        if not folder.exists():
            continue
        handed = artifacts / target
        if new:  # the receipts and the logs
            handed.mkdir(parents=True)
            for receipt in folder.glob("*.json"):
                shutil.copy2(receipt, handed / receipt.name)
            if (folder / "logs").exists():
                shutil.copytree(folder / "logs", handed / "logs")
            pushed = folder / "push.json"
            if pushed.exists():
                night.pushed += json.loads(pushed.read_text())["bytes_sent"]
        else:  # the build folder without the intermediate image
            shutil.copytree(folder, handed, ignore=shutil.ignore_patterns("sysprep.qcow2"))
        night.handed += size_of(handed)
    publish_build = work / "publish" / "build"
    publish_build.mkdir(parents=True)
    if artifacts.exists():
        for handed in artifacts.iterdir():
            shutil.copytree(handed, publish_build / handed.name)
    extra = {"KMI_LOCKED": "1", "KMI_INDEX_ARCHES": "built"}
    if new:
        extra["KMI_PUBLISH_FROM"] = "pushed"
    code, out = doit(job("publish", **extra), "publish")
    night.red |= code != 0
    results = publish_build / "results.json"
    if results.exists():
        images = json.loads(results.read_text()).get("images", {})
        night.pushed += sum(int(e.get("bytes_sent") or 0) for e in images.values())
    night.seconds = time.perf_counter() - started
    night.requests, _ = registry.requests_since(mark, way)
    print(
        f"{way} / {name}: {night.jobs} job(s), {night.libguestfs} libguestfs run(s), "
        f"{night.seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return night


def main() -> None:
    built = fixture_image.fixture()
    image = (built / "fixture.qcow2").read_bytes()
    nights: list[Night] = []
    with services("nightly") as served:
        work, key, registry = served.work, served.key, served.registry
        for way in ("now", "before"):
            upstream = Upstream(Upstreams(work / "mirror", key), image)
            for flavor in FLAVORS:
                upstream.ship(flavor, "20260101")
            catalogue = catalogue_for(work / way, built, key)
            base = environment(
                catalogue,
                work / way,
                served.mirror.url,
                KMI_REGISTRY=f"{registry.host}/{way}",
                KMI_CI_RUNNERS="amd64=runner",
                KMI_CACHE_URL="",
                KMI_PROGRESS="off",
            )
            for n, name in enumerate(NIGHTS):
                upstream.before(name)
                folder = work / way / f"night-{n}"
                nights.append(run_night(way, name, base, folder, registry))
                shutil.rmtree(folder)  # the runners are gone
    print(
        f"host: {platform.machine()}, {os.cpu_count()} cores; libguestfs and QEMU under TCG; "
        "each job's wall time, one job after the other\n"
    )
    print(
        "| night | workflow | build jobs (failed) | libguestfs runs | handed between jobs "
        "| pushed | registry requests | red | wall s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    order = {name: i for i, name in enumerate(dict.fromkeys(n.name for n in nights))}
    for night in sorted(nights, key=lambda n: (order[n.name], n.way != "now")):
        label = "now" if night.way == "now" else "before (every target, build folders)"
        print(
            f"| {night.name} | {label} | {night.jobs} ({night.failed_jobs}) | "
            f"{night.libguestfs} | {human(night.handed)} | {human(night.pushed)} | "
            f"{night.requests} | {'yes' if night.red else 'no'} | {night.seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
