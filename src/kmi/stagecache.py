"""The shared stage cache (KMI_CACHE_URL): stage outputs addressed by their stage key, so a
machine that finds a key there restores the output instead of making it again.

    KMI_CACHE_URL=/mnt/ci-cache/kmi                  a folder (a CI cache, a shared mount)
    KMI_CACHE_URL=docker://ghcr.io/acme/kmi-cache    a repository in an OCI registry

In a folder an entry is `<folder>/<stage>/<key>/`: the output's files and `manifest.json`
(each file's size and sha256, and the receipt details), written last and renamed into place,
so a reader never sees half an entry. In a registry an entry is the tag `<stage>-<key>`: an
OCI artifact whose config holds the same manifest and whose layers are the output's files,
one blob each, named by their `org.opencontainers.image.title` annotation; the tag is set
last. Either way every restored byte is checked against the manifest; an entry that does
not match is reported and ignored (the stage runs), never used. A cache that cannot be
reached is reported and the stage runs: the cache makes builds faster, never fail.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from kmi.errors import KmiError
from kmi.files import feed
from kmi.oci import canonical
from kmi.progress import human
from kmi.registry_ref import Registry
from kmi.settings import Settings

MANIFEST = "manifest.json"
ARTIFACT = "application/vnd.kmi.stage-cache.v1"
CONFIG = "application/vnd.kmi.stage-cache.config.v1+json"
FILE = "application/octet-stream"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
Say = Callable[[str], None]


class StageCache(Protocol):
    def where(self, stage: str, key: str) -> str:
        """The entry's address, for messages and receipts."""
        ...

    def store(
        self, stage: str, key: str, output: Path, details: Mapping[str, Any], say: Say
    ) -> bool:
        """Add the output under its key, unless the cache has it; True when added."""
        ...

    def fetch(self, stage: str, key: str, output: Path, say: Say) -> dict[str, Any] | None:
        """Restore the output under its key, every byte checked; the receipt details, or
        None on a miss, a damaged entry or a cache that cannot be read (said why)."""
        ...


def open_cache(where: Path | Registry, settings: Settings) -> StageCache:
    """KMI_CACHE_URL, as the settings parsed it: a folder, or a registry repository (its
    client made as publish makes one)."""
    if isinstance(where, Path):
        return DirCache(where)
    from kmi.registry import client_for

    return RegistryCache(client_for(settings, where), where.prefix)


def _files(output: Path) -> list[Path]:
    """The output's files, relative to its parent: the file itself, or a folder's files."""
    if output.is_dir():
        return sorted(p.relative_to(output.parent) for p in output.rglob("*") if p.is_file())
    return [Path(output.name)]


def _copy(source: Path, dest: Path) -> tuple[int, str]:
    """Copy one file, hashing it on the way; (size, sha256)."""
    hasher = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as out:
        size = feed(hasher, source, copy_to=out)
    return size, hasher.hexdigest()


class Damaged(Exception):
    """An entry whose bytes are not what its manifest says."""


def _check(where: str, rel: str, got: tuple[int, str], want: Mapping[str, Any]) -> None:
    if got != (want["size"], want["sha256"]):
        raise Damaged(
            f"stage cache entry {where} is damaged ({rel}: sha256:{got[1][:12]}…, "
            f"expected sha256:{want['sha256'][:12]}…); ignoring it"
        )


@contextmanager
def _restoring(output: Path) -> Iterator[Path]:
    """A staging folder beside `output`; what the block leaves there as `output.name`
    replaces the output when the block succeeds, and nothing changes when it fails."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.restore."))
    try:
        yield staging
        if output.is_dir():
            shutil.rmtree(output)
        os.replace(staging / output.name, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class DirCache:
    """A stage cache in a folder."""

    root: Path

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def where(self, stage: str, key: str) -> str:
        return str(self.entry(stage, key))

    def store(
        self, stage: str, key: str, output: Path, details: Mapping[str, Any], say: Say
    ) -> bool:
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
        except OSError as err:
            if (entry / MANIFEST).exists():
                return False  # someone else stored the same key first
            say(f"stage cache {entry} could not be written ({err.strerror}); not added")
            return False
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def fetch(self, stage: str, key: str, output: Path, say: Say) -> dict[str, Any] | None:
        entry = self.entry(stage, key)
        try:
            manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        try:
            with _restoring(output) as staging:
                for rel, want in sorted(manifest["files"].items()):
                    _check(str(entry), rel, _copy(entry / rel, staging / rel), want)
        except Damaged as err:
            say(str(err))
            return None
        except OSError as err:
            say(f"stage cache entry {entry} could not be read ({err.strerror}); ignoring it")
            return None
        details: dict[str, Any] = manifest.get("details") or {}
        return details


def _safe(rel: str) -> bool:
    """A relative path that stays inside the output (a registry's answer is not trusted)."""
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


class RegistryCache:
    """A stage cache in one repository of an OCI registry: the tag `<stage>-<key>`."""

    def __init__(self, client: Any, repository: str) -> None:
        self.client = client  # a kmi.registry.Client
        self.repository = repository

    def tag(self, stage: str, key: str) -> str:
        return f"{stage}-{key}"  # a stage name and a hex key: a valid tag

    def where(self, stage: str, key: str) -> str:
        return f"{self.client.registry.host}/{self.repository}:{self.tag(stage, key)}"

    def store(
        self, stage: str, key: str, output: Path, details: Mapping[str, Any], say: Say
    ) -> bool:
        repo, tag = self.repository, self.tag(stage, key)
        try:
            if self.client.manifest_digest(repo, tag) is not None:
                return False
            files, layers = {}, []
            every = _files(output)
            total = sum((output.parent / rel).stat().st_size for rel in every)
            where = self.where(stage, key)
            say(f"stage cache {where}: pushing {len(every)} file(s), {human(total)}")
            for rel in every:
                path = output.parent / rel
                hasher = hashlib.sha256()
                size = feed(hasher, path)
                digest = "sha256:" + hasher.hexdigest()
                if not self.client.has_blob(repo, digest):
                    self.client.upload(repo, digest, path, lambda n: None)
                files[str(rel)] = {"size": size, "sha256": hasher.hexdigest()}
                layers.append(
                    {
                        "mediaType": FILE,
                        "digest": digest,
                        "size": size,
                        "annotations": {TITLE: str(rel)},
                    }
                )
            config = canonical(
                {"stage": stage, "key": key, "files": files, "details": dict(details)}
            )
            config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
            with tempfile.NamedTemporaryFile(prefix=".kmi-cache-config.") as blob:
                blob.write(config)
                blob.flush()
                self.client.upload(repo, config_digest, Path(blob.name), lambda n: None)
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": ARTIFACT,
                "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
                "layers": layers,
            }
            self.client.put_manifest(repo, tag, canonical(manifest), OCI_MANIFEST)
        except KmiError as err:
            say(f"stage cache {self.where(stage, key)} could not be written ({err}); not added")
            return False
        return True

    def fetch(self, stage: str, key: str, output: Path, say: Say) -> dict[str, Any] | None:
        where = self.where(stage, key)
        repo = self.repository
        try:
            raw = self.client.get_manifest(repo, self.tag(stage, key))
            if raw is None:
                return None
            manifest = json.loads(raw)
            config_desc = manifest["config"]
            if config_desc.get("mediaType") != CONFIG:
                raise Damaged(
                    f"stage cache entry {where} is not a kmi stage cache entry; ignoring it"
                )
            buffer = io.BytesIO()
            got = self.client.get_blob(repo, config_desc["digest"], buffer, lambda n: None)
            if "sha256:" + got[1] != config_desc["digest"]:
                raise Damaged(f"stage cache entry {where} is damaged (its config); ignoring it")
            config = json.loads(buffer.getvalue())
            files: dict[str, Any] = config["files"]
            layers = {layer["annotations"][TITLE]: layer for layer in manifest["layers"]}
            if sorted(layers) != sorted(files) or not all(_safe(rel) for rel in files):
                raise Damaged(
                    f"stage cache entry {where} lists other files than it holds; ignoring it"
                )
            total = sum(int(want["size"]) for want in files.values())
            say(f"stage cache {where}: pulling {len(files)} file(s), {human(total)}")
            with _restoring(output) as staging:
                for rel, want in sorted(files.items()):
                    if layers[rel]["digest"] != "sha256:" + want["sha256"]:
                        raise Damaged(f"stage cache entry {where} is damaged ({rel}); ignoring it")
                    dest = staging / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with dest.open("wb") as out:
                        got = self.client.get_blob(repo, layers[rel]["digest"], out, lambda n: None)
                    _check(where, rel, got, want)
        except Damaged as err:
            say(str(err))
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            say(f"stage cache entry {where} is not a kmi stage cache entry; ignoring it")
            return None
        except (KmiError, OSError) as err:  # an unreachable cache must not fail the build
            say(f"stage cache {where} could not be read ({err}); building instead")
            return None
        details: dict[str, Any] = config.get("details") or {}
        return details
