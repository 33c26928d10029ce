"""build:T and manifest:I — the per-arch containerdisk and the multi-arch index over them.

Both are OCI image layouts in the build folder, written by kmi.oci without a daemon. What
goes into them comes from the catalogue and the lock only (never the clock or the host),
so the same final disk and the same inputs give the same digests on any machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kmi import oci, templates
from kmi.catalogue import Flavor, Target
from kmi.errors import KmiError
from kmi.keys import stage_key
from kmi.lock import LockEntry

STAGE_VERSION = "1"
INSTANCETYPE_ENV = "INSTANCETYPE_KUBEVIRT_IO_DEFAULT_INSTANCETYPE"
PREFERENCE_ENV = "INSTANCETYPE_KUBEVIRT_IO_DEFAULT_PREFERENCE"
OCI = "org.opencontainers.image"


def created_at(entry: LockEntry, source_date_epoch: int | None) -> tuple[str, int]:
    """The image's creation time: SOURCE_DATE_EPOCH when set, else when the upstream build
    was first found (the lock's `found`): both the same on every machine."""
    if source_date_epoch is not None:
        try:
            moment = dt.datetime.fromtimestamp(source_date_epoch, dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise KmiError(
                f"SOURCE_DATE_EPOCH={source_date_epoch!r}: expected seconds since 1970"
            ) from None
    else:
        try:
            moment = dt.datetime.fromisoformat(entry.found.replace("Z", "+00:00"))
        except ValueError:
            raise KmiError(
                f"the lock entry of {entry.url} has found={entry.found!r}, not an ISO 8601 "
                "time; run doit discover to rewrite it"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    moment = moment.astimezone(dt.UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), int(moment.timestamp())


def preference_of(target: Target) -> str:
    disk = target.flavor.containerdisk
    chosen = disk.preferences.get(target.arch) or disk.preference
    return templates.render(chosen, target.template_values()) if chosen else ""


CUSTOMIZED = "kmi.customized"  # per-arch manifest annotation: "native" or "emulated"
# Per-arch manifest annotation (and config label): what the image was made from, the same on
# every machine (made by kmi.plan), so a CI job elsewhere can tell from the registry alone
# whether the image published for an arch is the one tonight's lock and catalogue would make.
RECIPE = "kmi.recipe"
DISK_KEY = "kmi.disk.key"  # config label: the final disk's key (with tool versions: local)


def image_annotations(
    flavor: Flavor, version: str, release: str, created: str, source_url: str
) -> dict[str, str]:
    """The org.opencontainers.image.* annotations shared by the manifests and the index."""
    found = {
        f"{OCI}.title": f"{flavor.name} {version}",
        f"{OCI}.description": flavor.description,
        f"{OCI}.version": f"{version}-{release}",
        f"{OCI}.created": created,
        f"{OCI}.licenses": flavor.license,
        f"{OCI}.url": flavor.homepage,
        f"{OCI}.documentation": flavor.documentation or flavor.homepage,
        f"{OCI}.source": source_url,
    }
    return {k: v for k, v in found.items() if v}


def image_spec(
    target: Target,
    entry: LockEntry,
    disk_key: str,
    source_date_epoch: int | None = None,
    source_url: str = "",
) -> oci.ImageSpec:
    """What the containerdisk of `target` carries besides its disk."""
    created, mtime = created_at(entry, source_date_epoch)
    version = target.version.version
    env = {INSTANCETYPE_ENV: target.flavor.containerdisk.instancetype}
    if preference := preference_of(target):
        env[PREFERENCE_ENV] = preference
    upstream = {
        "kmi.upstream.url": entry.url,
        "kmi.upstream.digest": entry.digest,
        "kmi.upstream.release": entry.release,
        "kmi.upstream.pulled": entry.found,
        "kmi.upstream.signed-by": entry.signed_by,
    }
    labels = {**upstream, DISK_KEY: disk_key, "kmi.target": target.name}
    annotations = {
        **image_annotations(target.flavor, version, entry.release, created, source_url),
        **upstream,
    }
    return oci.ImageSpec(
        arch=str(target.arch),
        created=created,
        mtime=mtime,
        env=env,
        labels=labels,
        annotations=annotations,
        ref=target.name,
        history=f"kmi build:{target.name} from {entry.url}",
    )


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def build_key(disk_key: str, spec: oci.ImageSpec, compression: str) -> str:
    # the spec's fields are strings, numbers and flat dicts of strings: no deep copy needed
    fields = {f.name: _plain(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    config = {"spec": fields, "compression": compression}
    return stage_key("build", config, {"kmi-build": STAGE_VERSION}, [disk_key])


def with_recipe(spec: oci.ImageSpec, recipe_disk: str, compression: str) -> oci.ImageSpec:
    """`spec` carrying its recipe: the build key's material without what is local to a
    machine (the tools' versions in the disk key): `recipe_disk` is the final disk's key
    computed without them."""
    labels = {k: v for k, v in spec.labels.items() if k != DISK_KEY}
    recipe = build_key(recipe_disk, dataclasses.replace(spec, labels=labels), compression)
    return dataclasses.replace(
        spec,
        labels={**spec.labels, RECIPE: recipe},
        annotations={**spec.annotations, RECIPE: recipe},
    )


def containerize(
    disk: Path,
    layout: Path,
    spec: oci.ImageSpec,
    compression: oci.Compression,
    advance: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Write the per-arch image layout; returns what its receipt records."""
    built = oci.write_image(disk, layout, spec, compression, advance)
    return {
        "layout": str(layout),
        "manifest": built.manifest.digest,
        "manifest_size": built.manifest.size,
        "config": built.config.digest,
        "layer": built.layer.descriptor.digest,
        "layer_size": built.layer.descriptor.size,
        "diff_id": built.layer.diff_id,
        "compression": compression,
        "disk_size": disk.stat().st_size,
    }


def index_key(build_keys: Mapping[str, str], annotations: Mapping[str, str], ref: str) -> str:
    config = {"annotations": dict(annotations), "ref": ref, "arches": sorted(build_keys)}
    inputs = [build_keys[a] for a in sorted(build_keys)]
    return stage_key("manifest", config, {"kmi-manifest": STAGE_VERSION}, inputs)


def assemble(layout: Path, images: list[Path], annotations: Mapping[str, str], ref: str) -> str:
    """Write the image index layout over the per-arch layouts; returns the index digest."""
    return oci.write_index(layout, images, annotations, ref).digest
