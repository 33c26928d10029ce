"""Shared fixtures: a loopback mirror server, generated signing keys, a test catalogue."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, environment, pin_key

REPO = Path(__file__).resolve().parent.parent


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
