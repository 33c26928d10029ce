"""The lock file (`distros/lock.json`): which upstream bytes every target is built from.

Builds read only the lock. `doit discover` and first builds of unlocked targets write it,
under an exclusive file lock, re-reading it first so parallel writers never lose an entry.
The file is rewritten only when its content changes, with sorted keys, so diffs stay small.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kmi.errors import KmiError
from kmi.files import exclusive, write_if_changed

FORMAT = 1


@dataclass(frozen=True)
class LockEntry:
    """One target's pinned upstream file."""

    flavor: str
    url: str
    digest: str  # "<algorithm>:<hex>"
    size: int | None
    release: str
    found: str  # ISO 8601 UTC, when discovery first saw this build
    checksum_url: str
    signed_by: str  # the fingerprint that signed it, or "unsigned"
    image_signature_url: str = ""  # set when upstream signs the image itself
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


def parse_lock(text: str, path: Path) -> Lock:
    """Parse lock text; a damaged file is a one-line error naming it."""
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise KmiError(f"{path}: lock format {data.get('format')!r} is not {FORMAT}")
        targets = {k: LockEntry(**v) for k, v in data.get("targets", {}).items()}
        versions = {k: list(v) for k, v in data.get("versions", {}).items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise KmiError(f"{path}: damaged lock file ({err}); restore it with git") from None
    return Lock(targets, versions)


def read_lock(path: Path) -> Lock:
    """The lock at `path`, or an empty one when the file does not exist yet."""
    try:
        return parse_lock(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        return Lock()


@contextlib.contextmanager
def updating(path: Path) -> Iterator[Lock]:
    """Hold the lock file exclusively, yield its current content, write it back if changed."""
    with exclusive(path.with_name(f".{path.name}.guard")):
        lock = read_lock(path)
        yield lock
        write_if_changed(path, lock.to_json())
