"""Sample builds of every catalogue flavor, in each upstream's layout (tests, demo, bench).

Each function writes the builds of one flavor's maintained targets (and an older build
beside most, so that "newest" is decided) and returns the image each target should pin.
"""

from __future__ import annotations

from collections.abc import Callable

from kmi.demo.upstreams import Image, Upstreams

Populate = Callable[[Upstreams], dict[str, Image]]


def fedora(u: Upstreams) -> dict[str, Image]:
    out = {}
    for v, rel in (("44", "1.7"), ("43", "1.6")):
        for arch, uarch in (("amd64", "x86_64"), ("arm64", "aarch64"), ("s390x", "s390x")):
            out[f"fedora-{v}-{arch}"] = u.fedora(v, rel, uarch)
    return out


def centos(u: Upstreams) -> dict[str, Image]:
    out = {}
    for v in ("10", "9"):
        for arch, uarch in (("amd64", "x86_64"), ("arm64", "aarch64"), ("s390x", "s390x")):
            u.centos(v, "20240101", uarch)
            out[f"centos-stream-{v}-{arch}"] = u.centos(v, "20241118", uarch)
    return out


def almalinux(u: Upstreams) -> dict[str, Image]:
    out = {}
    for v, build in (("10", ("2", "20260526.0")), ("9", ("8", "20260526"))):
        for arch, uarch in (("amd64", "x86_64"), ("arm64", "aarch64"), ("s390x", "s390x")):
            out[f"almalinux-{v}-{arch}"] = u.almalinux(v, *build, uarch)
    return out


def rocky(u: Upstreams) -> dict[str, Image]:
    out = {}
    for v in ("10", "9"):
        for arch, uarch in (("amd64", "x86_64"), ("arm64", "aarch64"), ("s390x", "s390x")):
            u.rocky(v, "9", "20241001", uarch)
            out[f"rocky-{v}-{arch}"] = u.rocky(v, "10", "20250101", uarch)
    return out


def ubuntu(u: Upstreams) -> dict[str, Image]:
    out = {}
    for v, name in (("26.04", "resolute"), ("24.04", "noble")):
        for arch in ("amd64", "arm64", "s390x"):
            u.ubuntu(v, name, "20260801", arch)
            out[f"ubuntu-{v}-{arch}"] = u.ubuntu(v, name, "20260927", arch)
    return out


def debian(u: Upstreams) -> dict[str, Image]:
    out = {}
    for v, name in (("13", "trixie"), ("12", "bookworm")):
        for arch in ("amd64", "arm64"):
            u.debian(v, name, "20240901-1800", arch)
            out[f"debian-{v}-{arch}"] = u.debian(v, name, "20241004-1894", arch)
    return out


def opensuse(u: Upstreams) -> dict[str, Image]:
    """amd64 has a build-numbered twin (pinned); arm64 and s390x only the fixed name."""
    return {
        "opensuse-leap-16.0-amd64": u.opensuse("16.0", "x86_64", build="16.2"),
        "opensuse-leap-16.0-arm64": u.opensuse("16.0", "aarch64"),
        "opensuse-leap-16.0-s390x": u.opensuse("16.0", "s390x"),
    }


def alpine(u: Upstreams) -> dict[str, Image]:
    out = {}
    for v in ("3.24", "3.23"):
        for arch, uarch in (("amd64", "x86_64-bios"), ("arm64", "aarch64-uefi")):
            u.alpine(v, "1", uarch)
            out[f"alpine-{v}-{arch}"] = u.alpine(v, "10", uarch)
    return out


def amazonlinux(u: Upstreams) -> dict[str, Image]:
    u.amazonlinux("2023.6.20241010.0", latest=False)
    return {"amazonlinux-2023-amd64": u.amazonlinux("2023.6.20241111.0")}


def archlinux(u: Upstreams) -> dict[str, Image]:
    u.archlinux("20240915.263127")
    return {"archlinux-rolling-amd64": u.archlinux("20241001.267073")}


LAYOUTS: dict[str, tuple[Populate, str, str]] = {
    # flavor: (layout, digest algorithm, how it is signed)
    "fedora": (fedora, "sha256", "key"),
    "centos-stream": (centos, "sha256", "unsigned"),
    "almalinux": (almalinux, "sha256", "key"),
    "rocky": (rocky, "sha256", "unsigned"),
    "ubuntu": (ubuntu, "sha256", "key"),
    "debian": (debian, "sha512", "unsigned"),
    "opensuse-leap": (opensuse, "sha256", "key"),
    "alpine": (alpine, "sha512", "image"),
    "archlinux": (archlinux, "sha256", "key"),
    "amazonlinux": (amazonlinux, "sha256", "unsigned"),
}


def populate_all(upstreams: Upstreams) -> dict[str, Image]:
    """Every flavor's builds; target name -> the image it should pin."""
    images: dict[str, Image] = {}
    for populate, _, _ in LAYOUTS.values():
        images.update(populate(upstreams))
    return images
