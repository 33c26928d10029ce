"""The lock file (`distros/lock.json`): which upstream bytes every target is built from.

Builds read only the lock. `doit discover` and first builds of unlocked targets write it,
under an exclusive file lock, re-reading it first so parallel writers never lose an entry.
The file is rewritten only when its content changes, with sorted keys, so diffs stay small.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kmi import schema
from kmi.catalogue import NAME
from kmi.errors import LockError
from kmi.files import exclusive, write_if_changed

FORMAT = 1
DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
FOUND = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
SIGNER = re.compile(r"^(unsigned|image|[0-9A-F]{40})$")
SPACE = re.compile(r"\s")
RELEASE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")  # becomes part of an OCI tag


def _matches(pattern: re.Pattern[str], expected: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if pattern.match(value) else f"expected {expected}, got {value[:80]!r}"

    return check


def _url(optional: bool = False) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if optional and value == "":
            return None
        ok = value.startswith(("https://", "http://")) and SPACE.search(value) is None
        return None if ok else f"expected an http(s) URL, got {value[:80]!r}"

    return check


def _size(value: int | None) -> str | None:
    return "expected a size in bytes, 0 or more" if value is not None and value < 0 else None


def _check(check: Callable[[Any], str | None]) -> dict[str, Any]:
    return {"check": check}


@dataclass(frozen=True)
class LockEntry:
    """One target's pinned upstream file."""

    flavor: str = field(metadata=_check(_matches(NAME, "a flavor name")))
    url: str = field(metadata=_check(_url()))
    digest: str = field(  # "<algorithm>:<hex>"
        metadata=_check(_matches(DIGEST, "'sha256:<64 hex>' or 'sha512:<128 hex>'"))
    )
    size: int | None = field(metadata=_check(_size))
    release: str = field(metadata=_check(_matches(RELEASE, "a release id")))
    found: str = field(  # ISO 8601 UTC, when discovery first saw this build
        metadata=_check(_matches(FOUND, "a UTC time such as '2026-12-02T01:02:03Z'"))
    )
    checksum_url: str = field(metadata=_check(_url()))
    signed_by: str = field(  # the fingerprint that signed it, "image" or "unsigned"
        metadata=_check(_matches(SIGNER, "a 40-hex fingerprint, 'image' or 'unsigned'"))
    )
    image_signature_url: str = field(  # set when upstream signs the image itself
        default="", metadata=_check(_url(optional=True))
    )
    source: str = ""  # key of the catalogue's upstream section this was found with

    @property
    def algorithm(self) -> str:
        return self.digest.split(":", 1)[0]

    @property
    def hexdigest(self) -> str:
        return self.digest.split(":", 1)[1]

    def same_build(self, other: LockEntry) -> bool:
        """Whether two entries pin the same bytes from the same place."""
        return (self.url, self.digest) == (other.url, other.digest)


@dataclass(frozen=True)
class LockFile:
    """The lock file's JSON, as the schema validates it."""

    format: int = field(metadata=_check(lambda v: None if v == FORMAT else f"expected {FORMAT}"))
    targets: dict[str, LockEntry] = field(default_factory=dict)
    versions: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Lock:
    """The whole lock file: target entries and versions followed by a tracking policy."""

    targets: dict[str, LockEntry] = field(default_factory=dict)
    versions: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "targets": {k: _entry_dict(v) for k, v in sorted(self.targets.items())},
            "versions": dict(sorted(self.versions.items())),
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _entry_dict(entry: LockEntry) -> dict[str, Any]:
    return {k: v for k, v in asdict(entry).items() if v != ""}


def parse_lock(data: bytes, path: Path) -> Lock:
    """Parse and validate lock bytes; every problem comes back at once, located."""
    fix = "restore it with git, or delete it and run doit discover"
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise LockError([f"{path}: not UTF-8 (byte {err.start}); {fix}"]) from None
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise LockError([f"{path}: not valid JSON at {where}: {err.msg}; {fix}"]) from None
    except RecursionError:
        raise LockError([f"{path}: nested too deeply to be a lock file; {fix}"]) from None
    problems: list[str] = []
    parsed = schema.build(LockFile, document, "", problems)
    if isinstance(parsed, LockFile):
        problems += [
            f".targets.{name}: not a target name (<flavor>-<version>-<arch>)"
            for name in parsed.targets
            if not NAME.match(name)
        ]
    if problems or not isinstance(parsed, LockFile):
        located = [f"{path}: {p}" for p in problems]
        raise LockError([*located[:-1], f"{located[-1]}; {fix}"])
    return Lock(dict(parsed.targets), {k: list(v) for k, v in parsed.versions.items()})


def read_lock(path: Path) -> Lock:
    """The lock at `path`, or an empty one when the file does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Lock()
    except OSError as err:
        raise LockError([f"{path}: cannot read: {err.strerror}"]) from None
    return parse_lock(data, path)


@contextlib.contextmanager
def updating(path: Path) -> Iterator[Lock]:
    """Hold the lock file exclusively, yield its current content, write it back if changed."""
    with exclusive(path.with_name(f".{path.name}.guard")):
        lock = read_lock(path)
        yield lock
        write_if_changed(path, lock.to_json())
