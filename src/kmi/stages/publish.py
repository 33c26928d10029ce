"""publish:I — push an image index and its manifests and blobs, then move its tags; and
push:T — one per-arch image by digest, for a publish job elsewhere to index.

Order is what makes a failure harmless: blobs (HEAD first; mounted from another repository
of the registry when one is known to hold them; uploaded otherwise), then each manifest by
digest, then the index by digest, and only then the tags. A run cut anywhere leaves every
tag where it was, pointing at a whole image; the next run sends only what is missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmi import oci
from kmi.progress import Progress, human
from kmi.releases import tag_of

if TYPE_CHECKING:  # requests (about 65 ms to import) is imported by what talks to a registry
    from kmi.registry import Client


@dataclass(frozen=True)
class Plan:
    """What to publish for one image."""

    image: str  # <flavor>-<version>
    repository: str  # the repository path in the registry, e.g. containerdisks/fedora
    layout: Path | None  # the OCI layout (an index, or push:T's one image); None: all pushed
    tags: tuple[str, ...]  # tags moved to every new build: <version>, maybe latest
    immutable: str  # set once for this build and never moved: <version>-<release>


@dataclass
class Outcome:
    """One image's line in the summary and in results.json."""

    image: str
    reference: str
    digest: str = ""
    tags: list[str] = field(default_factory=list)
    status: str = "failed"  # pushed, unchanged, dry-run or failed
    bytes_sent: int = 0
    blobs_sent: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    seconds: float = 0.0
    signed: int = 0  # manifests signed by this run (those already signed by the key: not)
    attested: int = 0  # attestations (SBOM, provenance) attached by this run
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _contents(
    layout: Path,
) -> tuple[oci.Descriptor, list[tuple[oci.Descriptor, list[oci.Descriptor]]]]:
    """The index, and each manifest with its blobs, from the image layout."""
    index = oci.top(layout)
    data = oci.read_json(layout, index.digest)
    manifests = []
    for entry in data["manifests"]:
        manifest = oci.Descriptor.from_json(entry)
        manifests.append((manifest, oci.blobs_of(layout, manifest)))
    return index, manifests


def blob_digests(layout: Path) -> set[str]:
    """Every blob the image's manifests refer to (what another repository could mount)."""
    _, manifests = _contents(layout)
    return {b.digest for _, blobs in manifests for b in blobs}


def dry_run(plan: Plan, registry: str, say: Callable[[str], None]) -> Outcome:
    """What would be pushed, without a registry."""
    assert plan.layout is not None
    index, manifests = _contents(plan.layout)
    size = sum(b.size for _, blobs in manifests for b in blobs)
    tags = [*plan.tags, plan.immutable]
    say(
        f"{plan.image}: dry run (no registry given: set KMI_REGISTRY or pass registry=HOST/PATH)"
        f"; would push {index.digest[:19]}… ({len(manifests)} arch(es), {human(size)} of "
        f"blobs, less what the registry has) as {registry}/{plan.repository}:"
        f"{{{','.join(tags)}}}"
    )
    return Outcome(plan.image, f"{registry}/{plan.repository}", index.digest, tags, "dry-run")


class _Pusher:
    def __init__(
        self,
        client: Client,
        plan: Plan,
        known: Mapping[str, str],
        progress: str,
    ) -> None:
        self.client, self.plan, self.known = client, plan, known
        self.progress = progress
        self.repo = plan.repository
        self.outcome = Outcome(plan.image, f"{client.registry.host}/{plan.repository}")

    @property
    def layout(self) -> Path:
        assert self.plan.layout is not None  # only what is in a layout is uploaded
        return self.plan.layout

    def blob(self, desc: oci.Descriptor) -> None:
        if self.client.has_blob(self.repo, desc.digest):
            self.outcome.blobs_present += 1
            return
        source = self.known.get(desc.digest)
        if source and source != self.repo and self.client.mount(self.repo, desc.digest, source):
            self.outcome.blobs_mounted += 1
            return
        meter = Progress(f"{self.plan.image}: push {desc.digest[7:19]}", desc.size, self.progress)
        sent = self.client.upload(
            self.repo, desc.digest, oci.blob_path(self.layout, desc.digest), meter.advance
        )
        if desc.size > 1 << 20:
            meter.finish()
        self.outcome.blobs_sent += 1
        self.outcome.bytes_sent += sent

    def manifest(self, desc: oci.Descriptor, reference: str, data: bytes | None = None) -> None:
        if data is None:
            data = oci.blob_path(self.layout, desc.digest).read_bytes()
        self.client.put_manifest(self.repo, reference, data, desc.media_type)
        self.outcome.bytes_sent += len(data)

    def image(self, manifest: oci.Descriptor, blobs: list[oci.Descriptor]) -> None:
        for blob in blobs:
            self.blob(blob)
        self.manifest(manifest, manifest.digest)


# Signs the given manifest digests (per-arch ones, then the index) where the key has not
# signed them yet, and attaches each per-arch image's SBOM and provenance where the key has
# not attested them yet; returns how many signatures and attestations it added
# (kmi.publishing.signing makes one).
Sign = Callable[[list[str]], tuple[int, int]]


def publish(
    client: Client,
    plan: Plan,
    known: Mapping[str, str],
    say: Callable[[str], None],
    progress: str = "auto",
    sign: Sign | None = None,
) -> Outcome:
    """Push `plan` (its layout: an index over per-arch images) to the registry of `client`;
    `known` maps blob digests to repositories of the same registry that hold them (for
    mounts). Raises KmiError on failure."""
    assert plan.layout is not None
    index, manifests = _contents(plan.layout)
    data = oci.blob_path(plan.layout, index.digest).read_bytes()

    def arches(pusher: _Pusher) -> None:
        for manifest, blobs in manifests:
            pusher.image(manifest, blobs)

    return _publish(_Pusher(client, plan, known, progress), index, data, arches, say, sign)


def publish_index(
    client: Client,
    plan: Plan,
    data: bytes,
    say: Callable[[str], None],
    sign: Sign | None = None,
) -> Outcome:
    """Push an index whose per-arch manifests the registry already holds (push:T put them
    there, or an earlier night), then move the tags; nothing else is sent."""
    index = oci.Descriptor(oci.INDEX, oci.sha256_of(data), len(data))
    return _publish(_Pusher(client, plan, {}, "none"), index, data, None, say, sign)


def manifests_of(data: bytes) -> list[str]:
    """The per-arch manifest digests an index (kmi's own bytes) lists, then the index's."""
    entries = json.loads(data)["manifests"]
    return [str(entry["digest"]) for entry in entries] + [oci.sha256_of(data)]


def _publish(
    pusher: _Pusher,
    index: oci.Descriptor,
    data: bytes,
    arches: Callable[[_Pusher], None] | None,
    say: Callable[[str], None],
    sign: Sign | None,
) -> Outcome:
    started = time.monotonic()
    client, plan, out = pusher.client, pusher.plan, pusher.outcome
    out.digest = index.digest
    out.tags = [*plan.tags, _immutable_tag(client, plan, index.digest, say)]
    remote = {t: client.manifest_digest(pusher.repo, t) for t in out.tags}
    if all(d == index.digest for d in remote.values()):
        if sign is not None:  # signed already, as a rule; a key set since signs it now
            out.signed, out.attested = sign(manifests_of(data))
        out.status, out.seconds = "unchanged", time.monotonic() - started
        say(f"{plan.image}: unchanged at {out.reference} ({index.digest[:19]}…), nothing sent")
        return out
    if client.manifest_digest(pusher.repo, index.digest) != index.digest:
        if arches is not None:
            arches(pusher)
        pusher.manifest(index, index.digest, data)
    if sign is not None:  # before any tag names it: a node requiring signatures never
        out.signed, out.attested = sign(manifests_of(data))  # finds a tag on an unsigned image
    for tag in out.tags:
        if remote[tag] != index.digest:
            pusher.manifest(index, tag, data)
    out.status, out.seconds = "pushed", time.monotonic() - started
    say(
        f"{plan.image}: pushed {index.digest[:19]}… to {out.reference}:{{{','.join(out.tags)}}}"
        f" — {human(out.bytes_sent)} sent, {out.blobs_sent} blob(s) uploaded, "
        f"{out.blobs_present} already there, {out.blobs_mounted} mounted"
    )
    return out


def push_image(
    client: Client,
    plan: Plan,
    known: Mapping[str, str],
    say: Callable[[str], None],
    progress: str = "auto",
) -> tuple[oci.Descriptor, Outcome]:
    """push:T — the one image of `plan.layout` (a per-arch layout) by digest, no tag: its
    blobs (or mounts) and its manifest, unless the registry has the manifest already."""
    assert plan.layout is not None
    started = time.monotonic()
    pusher = _Pusher(client, plan, known, progress)
    manifest = oci.top(plan.layout)
    out = pusher.outcome
    out.digest = manifest.digest
    if client.manifest_digest(pusher.repo, manifest.digest) == manifest.digest:
        out.status = "unchanged"
        say(f"{plan.image}: {out.reference}@{manifest.digest[:19]}… is there, nothing sent")
    else:
        pusher.image(manifest, oci.blobs_of(plan.layout, manifest))
        out.status = "pushed"
        say(
            f"{plan.image}: pushed {out.reference}@{manifest.digest[:19]}… (no tag) — "
            f"{human(out.bytes_sent)} sent, {out.blobs_sent} blob(s) uploaded, "
            f"{out.blobs_present} already there, {out.blobs_mounted} mounted"
        )
    out.seconds = time.monotonic() - started
    return manifest, out


def _immutable_tag(client: Client, plan: Plan, digest: str, say: Callable[[str], None]) -> str:
    """The immutable tag for this build: `<version>-<release>`, unless the registry already
    has it for another build (the recipe changed, upstream did not): then it gets the
    index digest's first 12 hex digits appended, and the old tag stays where it is."""
    current = client.manifest_digest(plan.repository, plan.immutable)
    if current is None or current == digest:
        return plan.immutable
    suffixed = tag_of(f"{plan.immutable}-{digest[7:19]}")
    say(f"{plan.image}: {plan.immutable} already names another build; tagging {suffixed}")
    return suffixed
