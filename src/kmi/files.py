"""Writing files so that a crash never leaves a half-written output under its real name."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from kmi.errors import KmiError


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Yield a temp file beside `path`; rename it into place only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make shared outputs unreadable
        with os.fdopen(fd, mode) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive(guard: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `guard` (created if needed) across processes."""
    guard.parent.mkdir(parents=True, exist_ok=True)
    with open(guard, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def hold(guard: Path, busy: str) -> IO[str]:
    """Take the exclusive lock on `guard` without waiting, for as long as the returned file
    stays open (a process's lifetime); a KmiError with `busy` and the holder's pid if taken."""
    guard.parent.mkdir(parents=True, exist_ok=True)
    handle = open(guard, "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise KmiError(busy.format(pid=holder)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def feed(
    hasher: hashlib._Hash, path: Path, chunk: int = 1 << 20, copy_to: IO[bytes] | None = None
) -> int:
    """Hash the whole file at `path` into `hasher` (and write it to `copy_to`, if given, in
    the same pass); returns the number of bytes read."""
    size = 0
    with path.open("rb") as src:
        while block := src.read(chunk):
            hasher.update(block)
            if copy_to is not None:
                copy_to.write(block)
            size += len(block)
    return size


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace `path` with `text` unless it already holds exactly that."""
    data = text.encode("utf-8")
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:  # bytes: a damaged file is simply replaced
            return False
    with atomic_output(path) as out:
        out.write(data)
    return True
