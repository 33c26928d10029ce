"""The release policy, as pure functions: which upstream release is newest, and the tags a
build of an image carries. Discovery, the index, publish and the docs all use these."""

from __future__ import annotations

import re
from collections.abc import Iterable

from kmi.errors import KmiError

NATURAL = re.compile(r"(\d+)")
TAG_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def release_order(release: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 9.10 after 9.9, 20250101.1 after 20241231.9."""
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in NATURAL.split(release) if p)


def newest(releases: Iterable[str]) -> str:
    """The newest of some releases, in natural order; "" when there are none."""
    return max(releases, key=release_order, default="")


def tag_of(text: str) -> str:
    """A valid tag from any text: other characters become '-', at most 128 characters."""
    tag = TAG_CHARS.sub("-", text).lstrip(".-")[:128]
    if not tag:
        raise KmiError(f"cannot make a tag from {text!r}")
    return tag


def build_tag(version: str, release: str) -> str:
    """The immutable tag of one build of an image: `<version>-<release>` (publish adds 12 hex
    of the index digest when the registry already has that tag for another build)."""
    return tag_of(f"{version}-{release}")


def moving_tags(version: str, latest: bool) -> tuple[str, ...]:
    """The tags every new build of an image moves: its version, and `latest` when it is
    the flavor's newest maintained version."""
    return (tag_of(version), "latest") if latest else (tag_of(version),)
