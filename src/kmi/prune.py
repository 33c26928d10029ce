"""prune:I — the retention policy: keep the newest KMI_KEEP_RELEASES immutable release tags
(`<version>-<release>`) of an image, delete the older ones from the registry.

Never deleted: a manifest that a tag staying in the repository points at (the moving
`<version>` and `latest`, a kept release, another version's tags), nor a per-arch manifest
such a tag's index still lists (tonight's index may reuse last week's arch). A manifest is
deleted by digest (the registry API has no tag delete), the indexes before their per-arch
manifests, so a run cut half way leaves only untagged manifests. The blobs only the deleted
manifests used are what the registry's next garbage collection frees; their sizes come
from the manifests. The stage cache lives in its own repository and is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kmi.published import manifest_json
from kmi.releases import release_order, tag_of


class Registry(Protocol):
    def tags(self, repository: str) -> list[str]: ...

    def manifest_digest(self, repository: str, reference: str) -> str | None: ...

    def get_manifest(self, repository: str, reference: str) -> bytes | None: ...

    def delete_manifest(self, repository: str, digest: str) -> None: ...


def release_tags(
    tags: Iterable[str], version: str, other_versions: Iterable[str], moving: Iterable[str]
) -> list[str]:
    """The immutable release tags of `version` among `tags`, newest first. A tag that
    belongs to a longer version of the flavor (`9-stream-…` when `9` is pruned) is not one."""
    prefix = tag_of(version) + "-"
    longer = [tag_of(other) + "-" for other in other_versions if tag_of(other).startswith(prefix)]
    skip = set(moving)
    found = [
        t
        for t in tags
        if t.startswith(prefix) and t not in skip and not any(t.startswith(o) for o in longer)
    ]
    return sorted(found, key=lambda t: release_order(t[len(prefix) :]), reverse=True)


@dataclass
class Pruning:
    """What prune does (or would do) to one image's repository."""

    image: str
    where: str  # host/repository
    kept: list[str] = field(default_factory=list)  # release tags kept, newest first
    going: dict[str, str] = field(default_factory=dict)  # release tag -> digest it names
    spared: list[str] = field(default_factory=list)  # old tags on a digest still in use
    manifests: list[str] = field(default_factory=list)  # digests to delete, in order
    frees: int = 0  # bytes of blobs only the deleted manifests use


class _Reader:
    def __init__(self, client: Registry, repository: str, where: str) -> None:
        self.client, self.repository, self.where = client, repository, where
        self.seen: dict[str, Mapping[str, Any]] = {}

    def manifest(self, digest: str) -> Mapping[str, Any]:
        if digest not in self.seen:
            data = self.client.get_manifest(self.repository, digest)
            where = f"{self.where}@{digest}"
            self.seen[digest] = manifest_json(data, where) if data is not None else {}
        return self.seen[digest]

    def images(self, digest: str) -> list[str]:
        """The per-arch manifests an index lists, or the manifest itself."""
        entries = self.manifest(digest).get("manifests")
        if not isinstance(entries, list):
            return [digest]
        return [e["digest"] for e in entries if isinstance(e, dict) and "digest" in e]

    def blobs(self, digest: str) -> dict[str, int]:
        """digest -> size of an image manifest's config and layers."""
        found = self.manifest(digest)
        parts = [found.get("config"), *(found.get("layers") or [])]
        return {
            p["digest"]: int(p.get("size") or 0)
            for p in parts
            if isinstance(p, dict) and isinstance(p.get("digest"), str)
        }


def plan(
    client: Registry,
    image: str,
    repository: str,
    where: str,
    version: str,
    other_versions: Iterable[str],
    moving: tuple[str, ...],
    keep: int,
) -> Pruning:
    """What to delete from `repository` so that `version` keeps its newest `keep` releases."""
    tags = client.tags(repository)
    releases = release_tags(tags, version, other_versions, moving)
    out = Pruning(image, where, kept=releases[:keep])
    old = releases[keep:]
    if not old:
        return out
    digest_of = {t: client.manifest_digest(repository, t) for t in tags}
    staying = {d for t, d in digest_of.items() if t not in old and d is not None}
    reader = _Reader(client, repository, where)
    kept_images = {i for d in staying for i in reader.images(d)}
    tops: list[str] = []
    for tag in old:
        digest = digest_of.get(tag)
        if digest is None:
            continue
        if digest in staying:
            out.spared.append(tag)
            continue
        out.going[tag] = digest
        if digest not in tops:
            tops.append(digest)
    doomed_images = [
        i for d in tops for i in reader.images(d) if i not in kept_images and i not in tops
    ]
    out.manifests = tops + list(dict.fromkeys(doomed_images))
    kept_blobs = {b for i in kept_images for b in reader.blobs(i)}
    freed: dict[str, int] = {}
    for i in [*tops, *doomed_images]:
        if reader.images(i) == [i]:  # an image manifest, not an index
            freed.update((b, s) for b, s in reader.blobs(i).items() if b not in kept_blobs)
    out.frees = sum(freed.values())
    return out


def apply(client: Registry, repository: str, pruning: Pruning) -> None:
    """Delete what `pruning` lists, indexes first."""
    for digest in pruning.manifests:
        client.delete_manifest(repository, digest)
