"""The shared stage cache (KMI_CACHE_URL): stage outputs addressed by their stage key, so a
machine that finds a key there restores the output instead of making it again.

    KMI_CACHE_URL=/mnt/ci-cache/kmi     a folder (a CI cache, a shared mount)

An entry is `<folder>/<stage>/<key>/`: the output's files and `manifest.json` (each file's
size and sha256, and the receipt details), written last and renamed into place, so a reader
never sees half an entry. Every restored byte is checked against the manifest; an entry
that does not match is reported and ignored (the stage runs), never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmi.errors import KmiError

MANIFEST = "manifest.json"
CHUNK = 1 << 20


def _files(output: Path) -> list[Path]:
    """The output's files, relative to its parent: the file itself, or a folder's files."""
    if output.is_dir():
        return sorted(p.relative_to(output.parent) for p in output.rglob("*") if p.is_file())
    return [Path(output.name)]


def _copy(source: Path, dest: Path) -> tuple[int, str]:
    """Copy one file, hashing it on the way; (size, sha256)."""
    hasher, size = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, dest.open("wb") as out:
        while block := src.read(CHUNK):
            hasher.update(block)
            out.write(block)
            size += len(block)
    return size, hasher.hexdigest()


@dataclass(frozen=True)
class DirCache:
    """A stage cache in a folder."""

    root: Path

    @classmethod
    def parse(cls, value: str) -> DirCache:
        text = value.strip()
        if text.startswith("file://"):
            text = text[len("file://") :]
        if "://" in text:
            raise KmiError(
                f"KMI_CACHE_URL={value!r}: only a folder (a path or file:///path) is supported "
                "as a stage cache for now"
            )
        return cls(Path(text).expanduser().resolve())

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def store(self, stage: str, key: str, output: Path, details: Mapping[str, Any]) -> bool:
        """Add the output under its key, unless the cache has it; True when added."""
        entry = self.entry(stage, key)
        if (entry / MANIFEST).exists():
            return False
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key[:12]}."))
        try:
            files = {}
            for rel in _files(output):
                size, digest = _copy(output.parent / rel, staging / rel)
                files[str(rel)] = {"size": size, "sha256": digest}
            manifest = {"stage": stage, "key": key, "files": files, "details": dict(details)}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.rename(staging, entry)  # atomic; fails if another machine won the race
        except OSError:
            if (entry / MANIFEST).exists():
                return False  # someone else stored the same key first
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def fetch(
        self, stage: str, key: str, output: Path, warn: Callable[[str], None]
    ) -> dict[str, Any] | None:
        """Restore the output under its key (checked byte for byte against the manifest);
        the receipt details, or None on a miss or a damaged entry."""
        entry = self.entry(stage, key)
        try:
            manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.restore."))
        try:
            for rel, want in sorted(manifest["files"].items()):
                size, digest = _copy(entry / rel, staging / rel)
                if (size, digest) != (want["size"], want["sha256"]):
                    warn(
                        f"stage cache entry {entry} is damaged ({rel}: sha256:{digest[:12]}…, "
                        f"expected sha256:{want['sha256'][:12]}…); ignoring it"
                    )
                    return None
            restored = staging / output.name
            if output.is_dir():
                shutil.rmtree(output)
            os.replace(restored, output)
        except OSError as err:
            warn(f"stage cache entry {entry} could not be read ({err.strerror}); ignoring it")
            return None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        details: dict[str, Any] = manifest.get("details") or {}
        return details
