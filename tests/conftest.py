"""Shared fixtures: a loopback mirror server, generated signing keys, a test catalogue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, environment, pin_key

REPO = Path(__file__).resolve().parent.parent
# Modules whose tests run on the fixture images (built once per machine, minutes): the images
# build in the background, side by side, while the other tests run. scripts/test.sh runs
# two workers that take whole files (`--dist loadfile`: a module fixture builds once, on one
# worker), in this order: test_sysprep_real first (the longest module, about half the run)
# while the other worker takes the rest, the arm64 module last (its image, emulated, is
# ready last). Run serially (-n 0), the modules on the fixtures come last.
ON_FIXTURES = {"test_arm64", "test_boottest", "test_space", "test_sysprep_real"}
LONGEST = "test_sysprep_real"
_building: list[subprocess.Popen[bytes]] = []


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")

    def rank(item: pytest.Item) -> int:
        module = _module(item)
        if module not in ON_FIXTURES:
            return 1
        if module == LONGEST and worker is not None:
            return 0
        return 3 if module == "test_arm64" else 2

    items.sort(key=rank)  # stable
    from kmi.demo import fixture

    missing = [arch for arch in ("amd64", "arm64") if fixture.cached(arch) is None]
    first = worker in (None, "gw0")  # one builder (the images' locks make a second harmless)
    if first and missing and any(_module(item) in ON_FIXTURES for item in items):
        # side by side: built one after the other, the arm64 image (emulated, about 12 min
        # alone) was ready only after 28 min of a fresh run, its test last of all
        for arch in missing:
            log = fixture.cache_dir() / f"background-build-{arch}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"\nbuilding the {arch} fixture image meanwhile; log: {log}")
            _building.append(
                subprocess.Popen(
                    [sys.executable, "-m", "kmi.demo.fixture", arch],
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )


def pytest_sessionfinish() -> None:
    for build in _building:  # only when the session ends before the tests needing it
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGTERM)
            build.wait()


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    key = SigningKey(tmp_path_factory.mktemp("gpg") / "home", "kmi test <test@kmi.invalid>")
    yield key
    key.close()


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    key = SigningKey(tmp_path_factory.mktemp("gpg2") / "home", "impostor <evil@kmi.invalid>")
    yield key
    key.close()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[MirrorServer]:
    server = MirrorServer(tmp_path / "mirror").start()
    (tmp_path / "mirror").mkdir()
    yield server
    server.stop()


@pytest.fixture
def upstreams(mirror: MirrorServer, gpg_key: SigningKey) -> Upstreams:
    return Upstreams(mirror.root, gpg_key)


@pytest.fixture
def catalogue(tmp_path: Path, gpg_key: SigningKey) -> Path:
    return pin_key(REPO / "distros", tmp_path / "distros", gpg_key)


@dataclass
class DoitRun:
    code: int
    out: str

    def ran(self) -> set[str]:
        """Tasks that executed (doit prints `.  name`)."""
        return {line[3:].strip() for line in self.out.splitlines() if line.startswith(".  ")}

    def skipped(self) -> set[str]:
        """Tasks found up to date (doit prints `-- name`)."""
        return {line[3:].strip() for line in self.out.splitlines() if line.startswith("-- ")}


@dataclass
class Project:
    """A kmi checkout's settings pointing at a temp catalogue, build, cache and mirror."""

    work: Path
    catalogue: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        dodo = str(REPO / "dodo.py")
        return [sys.executable, "-m", "doit", "-f", dodo, "-d", str(self.work), *args]

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """A doit run in the background, in its own process group (as a CI job is)."""
        log = (self.work / "background.log").open("wb")
        return subprocess.Popen(
            self.argv(*args),
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def doit(self, *args: str, **extra_env: str) -> DoitRun:
        env = {**self.env, **extra_env}
        done = subprocess.run(
            self.argv(*args),
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,  # a build under TCG takes minutes
        )
        return DoitRun(done.returncode, done.stdout + done.stderr)


@pytest.fixture
def project(tmp_path: Path, catalogue: Path, mirror: MirrorServer) -> Project:
    return Project(tmp_path, catalogue, environment(catalogue, tmp_path, mirror.url))
