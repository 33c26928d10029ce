"""The offline demo: the real pipeline against a local mirror of every upstream.

    python -m kmi.demo            (from a kmi checkout; scripts/demo.sh sets it up)

Part 1 writes sample builds of every catalogue flavor in each upstream's own layout, signs
them with a key made for the demo, pins that key in a copy of the catalogue, serves the tree
on loopback as KMI_MIRROR, and runs doit: discover, then download and checksum of every
target, then the same again to show that nothing reruns (the samples are synthetic bytes).

Part 2 takes a real, bootable Debian disk built offline (the fixture) through the whole
pipeline, served by the mirror as an upstream: download, checksum, sysprep, sparsify, build,
manifest, a boot test in QEMU (cloud-init, guest agent, SSH: the fixture's flavor requires it
before publishing), and publish to a registry started on loopback (Debian's docker-registry);
then publishes again (nothing is sent), reads the image back with skopeo, and writes the
image's README and the release chart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kmi.demo import fixture
from kmi.demo.layouts import populate_all
from kmi.demo.registry import RegistryServer
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, environment, pin_key
from kmi.lock import read_lock


def _key(home: Path) -> SigningKey:
    """Reuse the demo key across runs so that the lock stays valid."""
    return SigningKey(home, "kmi demo <demo@kmi.invalid>")


def _doit(repo: Path, env: dict[str, str], *args: str) -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(repo / "dodo.py"), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    return done.returncode, time.monotonic() - started, output


def _steps(repo: Path, env: dict[str, str], *steps: tuple[str, list[str]]) -> int:
    """Run doit once per step, showing a short account of each; stop at the first failure."""
    for title, args in steps:
        code, seconds, output = _doit(repo, env, *args)
        ran = sum(1 for line in output.splitlines() if line.startswith(".  "))
        fresh = sum(1 for line in output.splitlines() if line.startswith("-- "))
        print(
            f"\n== {title}\n$ doit {' '.join(args)}   ({seconds:.2f} s, {ran} tasks ran, "
            f"{fresh} up to date, exit {code})"
        )
        shown = [line for line in output.splitlines() if not line.startswith("-- ")]
        print("\n".join(shown[:30] + (["  ..."] if len(shown) > 30 else [])), flush=True)
        if code != 0:
            print(output, file=sys.stderr)
            return code
    return 0


def _whole_pipeline(
    repo: Path,
    work: Path,
    upstreams: Upstreams,
    catalogue: Path,
    key: SigningKey,
    env: dict[str, str],
) -> int:
    """Part 2: the fixture disk from the mirror to a registry on loopback."""
    print("\n== part 2: a real disk through every stage, published to a local registry")
    built = fixture.fixture()
    fixture.publish(upstreams, built)
    fixture.add_flavor(catalogue, built, key)
    registry = RegistryServer(work / "registry").start()
    where = f"{registry.host}/demo"
    try:
        code = _steps(
            repo,
            {**env, "KMI_REGISTRY": where},
            (
                "download, checksum, sysprep, sparsify, build, manifest, boot test, publish "
                "(minutes under TCG)",
                ["publish:fixture-12"],
            ),
            ("publish again: the registry has it, nothing is sent", ["publish:fixture-12"]),
            ("the image's README and the release chart", ["docs:fixture-12", "docs:release-chart"]),
        )
        if code == 0:
            code = _show(where)
    finally:
        registry.stop()
    print(
        f"\nthe registry's storage is in {work / 'registry'}; to pull from it later:\n"
        f"  docker-registry serve {work / 'registry' / 'config.yml'} &\n"
        f"  skopeo copy --src-tls-verify=false docker://{where}/fixture:12 oci:fixture-12\n"
        "(the port is chosen per run: read it from config.yml)"
    )
    return code


def _show(where: str) -> int:
    """Read the published image back with skopeo, a client kmi did not write."""
    reference = f"docker://{where}/fixture:12"
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", reference],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    index = json.loads(done.stdout)
    platforms = [m["platform"]["architecture"] for m in index["manifests"]]
    print(f"\n== skopeo inspect --raw {reference}\n{index['mediaType']} over {platforms}")
    print(f"$ skopeo copy --src-tls-verify=false {reference} oci:fixture-12   # to pull it")
    return 0


def main() -> int:
    repo = Path.cwd()
    if not (repo / "dodo.py").exists():
        print("ERROR: run the demo from the kmi checkout (where dodo.py is)", file=sys.stderr)
        return 2
    work = repo / os.environ.get("KMI_DEMO_DIR", "build/demo")
    key = _key(work / "gnupg")
    shutil.rmtree(work / "mirror", ignore_errors=True)
    upstreams = Upstreams(work / "mirror", key)
    images = populate_all(upstreams)
    catalogue = pin_key(repo / "distros", work / "distros", key)
    server = MirrorServer(work / "mirror").start()
    env = environment(
        catalogue, work, server.url, KMI_HTTP_BACKOFF="0.2", KMI_DOCS_DIR=str(work / "docs")
    )
    try:
        print(
            f"kmi demo: {len(images)} targets of {len(list(catalogue.glob('*.yaml')))} "
            f"flavors served from {server.url} (a local mirror of their upstreams)"
        )
        code = _steps(
            repo,
            env,
            ("discover: find and verify the newest build of every target", ["discover"]),
            ("download + checksum of every target", ["checksum"]),
            ("the same again: everything is up to date", ["checksum"]),
        )
        if code == 0:
            code = _whole_pipeline(repo, work, upstreams, catalogue, key, env)
    finally:
        server.stop()
        key.close()
    if code != 0:
        return code
    lock = read_lock(catalogue / "lock.json")
    wrong = [t for t, img in images.items() if lock.targets[t].url != img.url]
    print(
        f"\nlock: {catalogue / 'lock.json'} pins {len(lock.targets)} targets"
        f"{'' if not wrong else f'; WRONG: {wrong}'}"
    )
    print(
        f"cache: {work / 'cache'}; try: KMI_CATALOGUE={catalogue} KMI_BUILD_DIR={work}/build "
        f"KMI_CACHE_DIR={work}/cache .venv/bin/doit list --all"
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
