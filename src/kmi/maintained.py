"""Which targets are maintained, and which catalogue settings decide each target's pin.

Kept apart from discovery (which needs HTTP) so that loading tasks stays cheap.
"""

from __future__ import annotations

import dataclasses

from kmi.catalogue import Flavor, Target, Version, targets_of
from kmi.keys import stage_key
from kmi.lock import Lock


def source_key(target: Target) -> str:
    """A hash of the catalogue settings that decide which upstream file a target pins."""
    up = target.flavor.upstream
    config = {
        "discovery": dataclasses.asdict(up.discovery),
        "checksum": dataclasses.asdict(up.checksum),
        "signature": dataclasses.asdict(up.signature),
        "compression": up.compression,
        "values": target.template_values(),
    }
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
