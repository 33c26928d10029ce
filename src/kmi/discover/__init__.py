"""Discovery: find the newest build of every maintained target and pin it in the lock.

A build is pinned only after its checksum file was fetched, its signature verified
against the pinned fingerprints (unless the flavor says upstream signs nothing), and its
digest read from the verified text. Nothing unverified reaches the lock.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
from collections.abc import Callable
from pathlib import Path

from kmi import lock as lockfile
from kmi import templates
from kmi.catalogue import Flavor, Target
from kmi.checksums import find_digest
from kmi.discover.finders import Build, find_builds, find_versions
from kmi.errors import KmiError, TransferError, VerificationError
from kmi.lock import LockEntry
from kmi.maintained import maintained_targets, source_key
from kmi.net import Http
from kmi.signatures import Keyring, Pins

MAX_FALLBACK = 3  # older builds tried when the newest is not (yet) fully published
UNSIGNED = "unsigned upstream: trust rests on HTTPS and the published checksum"


class NotPublished(KmiError):
    """A build whose checksum does not list the file yet: try the one before it."""


class KeyringCache:
    """One keyring per flavor per run, read from the key files kept beside the catalogue."""

    def __init__(self) -> None:
        self._rings: dict[str, Keyring] = {}

    def of(self, flavor: Flavor) -> Keyring:
        if flavor.name not in self._rings:
            keys = [_key_file(flavor, ref) for ref in flavor.upstream.signature.keys]
            self._rings[flavor.name] = Keyring(keys, _what(flavor))
        return self._rings[flavor.name]

    def clearsigned(self, target: Target, signed: bytes) -> tuple[str, str]:
        """The verified text of a clear-signed file and who signed it, for `target`."""
        return self.of(target.flavor).clearsigned(signed, pins_of(target))

    def detached(self, target: Target, data: Path, signature: bytes) -> str:
        """Who made `signature` over `data`, for `target`."""
        return self.of(target.flavor).detached(data, signature, pins_of(target))

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()


def _what(flavor: Flavor) -> str:
    return f"{flavor.source}: upstream.signature"


def pins_of(target: Target) -> Pins:
    """The fingerprints trusted for the target's version (a VerificationError if none)."""
    return target.flavor.upstream.signature.pins(target.version.version, _what(target.flavor))


def _key_file(flavor: Flavor, ref: str) -> bytes:
    path = flavor.source.parent / ref
    try:
        return path.read_bytes()
    except OSError as err:
        raise KmiError(
            f"{flavor.source}: upstream.signature.keys: {path}: {err.strerror}"
        ) from None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pin(http: Http, rings: KeyringCache, target: Target, build: Build) -> LockEntry:
    """Verify one build's checksum file (and its signature) and make its lock entry."""
    up = target.flavor.upstream
    directory, _, filename = build.url.rpartition("/")
    values = {
        **target.template_values(),
        "release": build.release,
        "url": build.url,
        "dir": directory,
        "file": filename,
    }
    checksum_url = templates.render(up.checksum.url, values)
    values["checksum_url"] = checksum_url
    try:
        raw = http.content(checksum_url)
    except TransferError as err:
        if err.status == 404:
            raise NotPublished(str(err)) from None
        raise
    text, signed_by, image_sig = _verified_text(http, rings, target, raw, values)
    try:
        hexdigest = find_digest(
            text, up.checksum.format, filename, up.checksum.algorithm, http.describe(checksum_url)
        )
    except VerificationError as err:
        raise NotPublished(str(err)) from None
    if build.index_digest and build.index_digest.lower() != hexdigest:
        raise VerificationError(
            f"{target.name}: the index says {build.index_digest} but the verified checksum "
            f"file {checksum_url} says {hexdigest}; refusing both"
        )
    size = build.size if build.size is not None else http.size(build.url)
    return LockEntry(
        flavor=target.flavor.name,
        url=build.url,
        digest=f"{up.checksum.algorithm}:{hexdigest}",
        size=size,
        release=build.release or hexdigest[:12],
        found=_now(),
        checksum_url=checksum_url,
        signed_by=signed_by,
        image_signature_url=image_sig,
        source=source_key(target),
    )


def _verified_text(
    http: Http, rings: KeyringCache, target: Target, raw: bytes, values: dict[str, str]
) -> tuple[str, str, str]:
    """(checksum text to trust, who signed it, URL of the image's own signature)."""
    sig = target.flavor.upstream.signature
    text = raw.decode("utf-8", errors="replace")
    if sig.kind == "none":
        return text, "unsigned", ""
    if sig.kind == "clearsigned":
        verified, fingerprint = rings.clearsigned(target, raw)
        return verified, fingerprint, ""
    signature_url = templates.render(sig.url, values)
    if sig.of == "image":  # checked on the downloaded bytes; refuse now if nothing is pinned
        pins_of(target)
        return text, "image", signature_url
    signature = http.content(signature_url)
    with tempfile.NamedTemporaryFile(prefix="kmi-checksum-") as data:
        data.write(raw)
        data.flush()
        return text, rings.detached(target, Path(data.name), signature), ""


def say_unsigned(target: Target, say: Callable[[str], None]) -> None:
    """Tell the user, for each target pinned from an upstream that signs nothing."""
    sig = target.flavor.upstream.signature
    if sig.kind == "none":
        say(f"{target.name}: {UNSIGNED} ({sig.why})")


def refuse_unsigned(http: Http, target: Target) -> None:
    """KMI_REQUIRE_SIGNED=1: an upstream that signs nothing is an error, not a warning."""
    sig = target.flavor.upstream.signature
    if sig.kind == "none" and http.settings.require_signed:
        raise KmiError(
            f"{target.name}: {UNSIGNED} ({sig.why}), and KMI_REQUIRE_SIGNED is set; "
            f"leave it unset to build it, or drop {target.flavor.name} from the catalogue"
        )


def discover_target(http: Http, rings: KeyringCache, target: Target) -> LockEntry:
    """Pin the newest fully published build of one target."""
    refuse_unsigned(http, target)
    builds = find_builds(http, target)
    if not builds:
        index = templates.render(target.flavor.upstream.discovery.index, target.template_values())
        raise KmiError(
            f"{target.name}: no build found at {http.describe(index)}; "
            f"check upstream.discovery in {target.flavor.source}"
        )
    problems = []
    for build in builds[:MAX_FALLBACK]:
        try:
            return pin(http, rings, target, build)
        except NotPublished as err:
            problems.append(str(err))
    raise KmiError(f"{target.name}: newest builds not fully published: {problems[0]}")


def describe_change(name: str, old: LockEntry | None, new: LockEntry | None) -> str:
    if old is None and new is not None:
        return f"{name}: new {new.release} {new.digest[:19]}… ({new.signed_by})"
    if new is None and old is not None:
        return f"{name}: removed (was {old.release})"
    assert old is not None and new is not None
    return f"{name}: {old.release} -> {new.release} ({old.digest[:19]}… -> {new.digest[:19]}…)"


def record(lock_path: Path, name: str, entry: LockEntry) -> str | None:
    """Write one entry unless the lock already pins the same build; the change line or None."""
    with lockfile.updating(lock_path) as lock:
        old = lock.targets.get(name)
        if old is not None and old.same_build(entry):
            if old.source != entry.source:
                lock.targets[name] = dataclasses.replace(old, source=entry.source)
            return None
        lock.targets[name] = entry
        return describe_change(name, old, entry)


def discover_flavor(
    http: Http, lock_path: Path, flavor: Flavor, say: Callable[[str], None]
) -> list[str]:
    """Refresh every target of a flavor; returns the failures (one line each)."""
    failures: list[str] = []
    if flavor.track is not None:
        versions = find_versions(http, flavor)
        if not versions:
            failures.append(f"{flavor.name}: track.match found no version at {flavor.track.index}")
        else:
            _record_versions(lock_path, flavor.name, versions, say)
    current = maintained_targets(flavor, lockfile.read_lock(lock_path))
    rings = KeyringCache()
    try:
        for target in current:
            try:
                change = record(lock_path, target.name, discover_target(http, rings, target))
            except KmiError as err:
                line = str(err).splitlines()[0]
                prefix = "" if line.startswith(f"{target.name}: ") else f"{target.name}: "
                failures.append(prefix + line)
                continue
            say(change or f"{target.name}: unchanged")
            say_unsigned(target, say)
    finally:
        rings.close()
    _drop_unmaintained(lock_path, flavor, {t.name for t in current}, say)
    return failures


def _record_versions(
    lock_path: Path, flavor: str, versions: list[str], say: Callable[[str], None]
) -> None:
    with lockfile.updating(lock_path) as lock:
        old = lock.versions.get(flavor)
        if old != versions:
            say(f"{flavor}: maintained versions {old or '(catalogue)'} -> {versions}")
            lock.versions[flavor] = versions


def _drop_unmaintained(
    lock_path: Path, flavor: Flavor, keep: set[str], say: Callable[[str], None]
) -> None:
    with lockfile.updating(lock_path) as lock:
        for name, entry in sorted(lock.targets.items()):
            if entry.flavor == flavor.name and name not in keep:
                say(describe_change(name, lock.targets.pop(name), None))
