"""Receipts: what each stage made, one frozen dataclass per stage, read and written here.

A receipt is written last, atomically, after its output is verified and in place; it holds
the stage key it was made under (a stage is current when its receipt holds the key the plan
computes now). Reading never fails: a missing, damaged or hand-edited receipt, or one of an
older shape, reads as None and the stage is made again.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from kmi.files import write_if_changed

R = TypeVar("R", bound="Receipt")


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """The fields every receipt has; `restored_from` names the stage-cache entry it came from."""

    STAGE: ClassVar[str] = ""
    key: str
    restored_from: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def details(self) -> dict[str, Any]:
        """What the stage cache keeps beside an output: the receipt without its key."""
        found = self.to_json()
        del found["key"], found["restored_from"]
        return found

    @classmethod
    def from_json(cls: type[R], data: object) -> R | None:
        """The receipt in `data` when every field has its type; None otherwise."""
        if not isinstance(data, dict):
            return None
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    return None
                continue
            if not _fits(data[f.name], hints[f.name]):
                return None
            values[f.name] = data[f.name]
        return cls(**values)


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value has the declared type (str, int, float, bool, list, dict, unions)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        _, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            isinstance(k, str) and _fits(v, item) for k, v in value.items()
        )
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@dataclass(frozen=True, kw_only=True)
class Download(Receipt):
    STAGE: ClassVar[str] = "download"
    target: str
    url: str
    digest: str
    release: str
    image: str
    signed_by: str


@dataclass(frozen=True, kw_only=True)
class Checksum(Receipt):
    STAGE: ClassVar[str] = "checksum"
    target: str
    digest: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class Sysprep(Receipt):
    STAGE: ClassVar[str] = "sysprep"
    target: str
    size: int
    skipped_guest_steps: list[str] = field(default_factory=list)
    customized: str = "native"  # or "emulated": how the guest steps ran
    built: dict[str, str] = field(default_factory=dict)  # kmi.provenance.made_by: host, tools


@dataclass(frozen=True, kw_only=True)
class Sparsify(Receipt):
    STAGE: ClassVar[str] = "sparsify"
    target: str
    sysprep_size: int
    final_size: int
    customized: str = "native"  # how the disk's customized image was made (its sysprep's)
    built: dict[str, str] = field(default_factory=dict)  # the sysprep's, with sparsify's tools


@dataclass(frozen=True, kw_only=True)
class Sbom(Receipt):
    """The final disk's SBOM (build/<target>/sbom.spdx.json)."""

    STAGE: ClassVar[str] = "sbom"
    target: str
    packages: int
    licensed: int


@dataclass(frozen=True, kw_only=True)
class Verify(Receipt):
    """The tiers' criteria checked on the built image without booting it (kmi.criteria):
    name -> {"passed": bool, "detail": str}."""

    STAGE: ClassVar[str] = "verify"
    target: str
    results: dict[str, dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Build(Receipt):
    """The native engine's per-arch containerdisk, an OCI layout in the build folder."""

    STAGE: ClassVar[str] = "build"
    target: str
    layout: str
    manifest: str
    manifest_size: int
    config: str
    layer: str
    layer_size: int
    diff_id: str
    compression: str
    disk_size: int


@dataclass(frozen=True, kw_only=True)
class PushedBuild(Receipt):
    """The buildx engine's per-arch image, pushed by digest to `repository`."""

    STAGE: ClassVar[str] = "build"
    target: str
    engine: str
    repository: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class Pushed(Receipt):
    """push:T — the target's per-arch image in the publish registry by digest (no tag):
    what the publish job of a nightly needs of it (KMI_PUBLISH_FROM=pushed), in a few
    hundred bytes."""

    STAGE: ClassVar[str] = "push"
    target: str
    host: str
    repository: str
    digest: str
    size: int
    media_type: str
    arch: str
    recipe: str
    bytes_sent: int = 0


@dataclass(frozen=True, kw_only=True)
class Test(Receipt):
    """A passed boot test (kmi.boottest.report.Report.to_json)."""

    STAGE: ClassVar[str] = "test"
    target: str
    arch: str
    accel: str
    status: str
    seconds: float
    boot_seconds: float | None = None
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Manifest(Receipt):
    """The multi-arch index, an OCI layout in the image's folder."""

    STAGE: ClassVar[str] = "manifest"
    image: str
    digest: str
    arches: list[str]
    annotations: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Publish(Receipt):
    """What publish pushed; its key is the index digest. `immutable` is the release tag it
    pushed (with its digest suffix when the registry already had the plain one)."""

    STAGE: ClassVar[str] = "publish"
    host: str
    repository: str
    immutable: str = ""
    blobs: list[str] = field(default_factory=list)
    engine: str = "native"
    per_arch: dict[str, str] = field(default_factory=dict)


def read(path: Path, kind: type[R]) -> R | None:
    """The receipt at `path` as `kind`, or None when it is missing, damaged or of another shape."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return kind.from_json(data)


def key_of(path: Path) -> str | None:
    """Only the key (the up-to-date checks need no more)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def write(path: Path, receipt: Receipt) -> None:
    """Write the receipt atomically; call it last, after the output is verified and in place."""
    text = json.dumps(receipt.to_json(), indent=2, sort_keys=True) + "\n"
    write_if_changed(path, text)
