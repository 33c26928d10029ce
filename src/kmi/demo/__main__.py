"""The offline demo: the real pipeline against a local mirror of every upstream.

    python -m kmi.demo            (from a kmi checkout; scripts/demo.sh sets it up)

It writes sample builds of every catalogue flavor in each upstream's own layout, signs them
with a key made for the demo, pins that key in a copy of the catalogue, serves the tree on
loopback as KMI_MIRROR, and runs doit: discover, then download and checksum of every
target, then the same again to show that nothing reruns. Until the sysprep stage exists the
sample images are synthetic bytes, not bootable disks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kmi.demo.layouts import populate_all
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
    env = environment(catalogue, work, server.url, KMI_HTTP_BACKOFF="0.2")
    try:
        print(
            f"kmi demo: {len(images)} targets of {len(list(catalogue.glob('*.yaml')))} "
            f"flavors served from {server.url} (a local mirror of their upstreams)"
        )
        for title, args in (
            ("discover: find and verify the newest build of every target", ["discover"]),
            ("download + checksum of every target", ["checksum"]),
            ("the same again: everything is up to date", ["checksum"]),
        ):
            code, seconds, output = _doit(repo, env, *args)
            ran = sum(1 for line in output.splitlines() if line.startswith(".  "))
            fresh = sum(1 for line in output.splitlines() if line.startswith("-- "))
            print(
                f"\n== {title}\n$ doit {' '.join(args)}   ({seconds:.2f} s, {ran} tasks ran, "
                f"{fresh} up to date, exit {code})"
            )
            shown = [line for line in output.splitlines() if not line.startswith("-- ")]
            print("\n".join(shown[:12] + (["  ..."] if len(shown) > 12 else [])))
            if code != 0:
                print(output, file=sys.stderr)
                return code
    finally:
        server.stop()
        key.close()
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
