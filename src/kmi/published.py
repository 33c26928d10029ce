"""What the registry already holds for an image, read with a few GETs: per arch, the
manifest its moving tag's index points at and the recipe that manifest was made from
(kmi.stages.containerdisk.RECIPE). The CI matrix compares those recipes with tonight's plan;
the publish job reuses an arch whose recipe did not change."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kmi import oci
from kmi.errors import KmiError
from kmi.stages.containerdisk import RECIPE

INDEX_TYPES = (oci.INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")


class Reader(Protocol):
    def get_manifest(self, repository: str, reference: str) -> bytes | None: ...


@dataclass(frozen=True)
class PublishedArch:
    """One arch of a published image: its manifest's descriptor and recipe ("" when the
    manifest carries none: made by another tool or an older kmi)."""

    descriptor: oci.Descriptor
    recipe: str

    def made_from(self, recipe: str | None) -> bool:
        """Whether it was made from `recipe` (never, when it carries none)."""
        return bool(self.recipe) and self.recipe == recipe


def manifest_json(data: bytes, where: str) -> Mapping[str, Any]:
    """A manifest's JSON object; a one-line error naming `where` for anything else."""
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        found = None
    if not isinstance(found, dict):
        raise KmiError(f"{where}: the registry returned a manifest that is not a JSON object")
    return found


def _arch_of(platform: Any) -> str | None:
    if isinstance(platform, Mapping) and platform.get("os") == "linux":
        arch = platform.get("architecture")
        return arch if isinstance(arch, str) else None
    return None


def published_arches(
    client: Reader, repository: str, tag: str, where: str
) -> dict[str, PublishedArch]:
    """arch -> what `repository:tag` holds for it; {} when the tag does not exist. `where`
    names the image in errors (host/repository:tag)."""
    data = client.get_manifest(repository, tag)
    if data is None:
        return {}
    top = manifest_json(data, where)
    if top.get("mediaType") not in INDEX_TYPES and "manifests" not in top:
        return {}  # a single-arch image: not what kmi publishes; every arch counts as stale
    found: dict[str, PublishedArch] = {}
    entries = top.get("manifests")
    for entry in entries if isinstance(entries, list) else []:
        arch = _arch_of(entry.get("platform")) if isinstance(entry, Mapping) else None
        if arch is None or arch in found:
            continue  # attestations (platform unknown/unknown) and repeats
        try:
            descriptor = oci.Descriptor.from_json(entry)
        except (KeyError, TypeError, ValueError):
            raise KmiError(f"{where}: the index's entry for {arch} is malformed") from None
        body = client.get_manifest(repository, descriptor.digest)
        if body is None:
            raise KmiError(
                f"{where}: the index names {descriptor.digest} for {arch}, which the "
                "registry does not have"
            )
        if oci.sha256_of(body) != descriptor.digest:
            raise KmiError(f"{where}: the manifest for {arch} does not match its digest")
        annotations = manifest_json(body, f"{where} ({arch})").get("annotations")
        recipe = annotations.get(RECIPE, "") if isinstance(annotations, Mapping) else ""
        found[arch] = PublishedArch(descriptor, recipe if isinstance(recipe, str) else "")
    return found
