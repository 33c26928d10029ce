"""Which targets are maintained, and which catalogue settings decide each target's pin.

Kept apart from discovery (which needs HTTP) so that loading tasks stays cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kmi.catalogue import Flavor, Target, Version, targets_of
from kmi.keys import stage_key
from kmi.lock import Lock


def upstream_config(flavor: Flavor) -> dict[str, Any]:
    """The flavor's settings that decide which upstream file its targets pin."""
    up = flavor.upstream
    return {
        "discovery": dataclasses.asdict(up.discovery),
        "checksum": dataclasses.asdict(up.checksum),
        "signature": dataclasses.asdict(up.signature),
        "compression": up.compression,
    }


def source_key(target: Target, upstream: dict[str, Any] | None = None) -> str:
    """A hash of the catalogue settings that decide which upstream file a target pins
    (`upstream`: its flavor's upstream_config, when the caller has it already)."""
    config = {**(upstream or upstream_config(target.flavor)), "values": target.template_values()}
    return stage_key("upstream", config)[:16]


def maintained_versions(flavor: Flavor, lock: Lock) -> tuple[Version, ...]:
    """The catalogue's versions, or those a tracking policy found (kept in the lock)."""
    tracked = lock.versions.get(flavor.name)
    if flavor.track is None or not tracked:
        return flavor.versions
    known = {v.version: v for v in flavor.versions}
    return tuple(known.get(v, Version(version=v)) for v in tracked)


def maintained_targets(flavor: Flavor, lock: Lock) -> list[Target]:
    return targets_of(flavor, maintained_versions(flavor, lock))


def latest_version(flavor: Flavor, lock: Lock) -> str | None:
    """The version tagged `latest`: the one the catalogue marks, or the newest tracked one
    when the tracking policy says so."""
    versions = maintained_versions(flavor, lock)
    for v in versions:
        if v.latest:
            return v.version
    if flavor.track is not None and flavor.track.latest and versions:
        return versions[0].version  # tracked versions are kept newest first
    return None


def why_unknown(flavors: tuple[Flavor, ...], lock: Lock, name: str, image: bool) -> str | None:
    """Why a requested target (`fedora-40-arm64`) or image (`fedora-40`) is not in the task
    graph, when it names a flavor of the catalogue; None when it names none."""
    for flavor in sorted(flavors, key=lambda f: -len(f.name)):
        if not name.startswith(f"{flavor.name}-"):
            continue
        rest = name[len(flavor.name) + 1 :]
        version, _, arch = (rest, "", "") if image else rest.rpartition("-")
        kept = maintained_versions(flavor, lock)
        listed = ", ".join(v.version for v in kept)
        known = next((v for v in kept if v.version == version), None)
        if known is not None and not image:
            arches = ", ".join(str(a) for a in flavor.arches_of(known))
            return (
                f"{flavor.name} {version} is not built for {arch or '(no arch)'}; its arches "
                f"are {arches} ({flavor.source.name}: upstream.arches)"
            )
        how = (
            f"{flavor.name} follows the newest {flavor.track.keep} versions upstream (track in "
            f"{flavor.source.name}); to keep more, raise track.keep"
            if flavor.track is not None
            else f"to add it, list it under versions: in {flavor.source.name}"
        )
        return (
            f"{flavor.name} {version or '(no version)'} is not maintained (maintained: "
            f"{listed}); {how}, then run doit discover:{flavor.name}"
        )
    return None
