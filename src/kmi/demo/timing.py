"""For the benchmarks: one `doit` run of kmi's dodo.py, timed."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kmi.demo.registry import RegistryServer
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey

DODO = Path(__file__).resolve().parents[3] / "dodo.py"


def timed_doit(env: dict[str, str], *tasks: str) -> tuple[float, str]:
    """(wall seconds, its output) of `doit TASKS`; a failed run ends the benchmark with
    what doit printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(DODO), *tasks],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"doit {' '.join(tasks)} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started, done.stdout


@dataclass
class Services:
    """What a benchmark serves on loopback: a signing key for upstream checksums, the
    upstream mirror, a registry; under `work`."""

    work: Path
    key: SigningKey
    mirror: MirrorServer
    registry: RegistryServer


@contextmanager
def services(name: str) -> Iterator[Services]:
    """The benchmark's servers in a temporary folder, stopped and removed at the end."""
    with tempfile.TemporaryDirectory(prefix=f"kmi-bench-{name}-") as tmp:
        work = Path(tmp)
        key = SigningKey(work / "gnupg", "kmi bench <bench@kmi.invalid>")
        mirror = MirrorServer(work / "mirror").start()
        registry = RegistryServer(work / "registry").start()
        try:
            yield Services(work, key, mirror, registry)
        finally:
            registry.stop()
            mirror.stop()
            key.close()
