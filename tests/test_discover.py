"""Discovery from each upstream's own layout: releases.json, listings, dated folders,
simplestreams; signatures checked; only changed entries rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmi.catalogue import Flavor, load_catalogue
from kmi.demo.layouts import LAYOUTS, centos, debian, fedora, ubuntu
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams
from kmi.discover import discover_flavor
from kmi.lock import read_lock
from kmi.net import Http
from kmi.settings import load_settings


def run(catalogue: Path, mirror: MirrorServer, name: str) -> tuple[list[str], list[str]]:
    flavor: Flavor = load_catalogue(catalogue).flavor(name)
    http = Http(load_settings({"KMI_MIRROR": mirror.url, "KMI_HTTP_BACKOFF": "0"}, catalogue))
    said: list[str] = []
    failures = discover_flavor(http, catalogue / "lock.json", flavor, said.append)
    return said, failures


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_upstream_layout(
    name: str, catalogue: Path, mirror: MirrorServer, upstreams: Upstreams, gpg_key: SigningKey
) -> None:
    populate, algorithm, signing = LAYOUTS[name]
    expected = populate(upstreams)
    said, failures = run(catalogue, mirror, name)
    assert failures == []
    lock = read_lock(catalogue / "lock.json")
    assert sorted(lock.targets) == sorted(expected)
    for target, image in expected.items():
        entry = lock.targets[target]
        assert entry.url == image.url
        assert entry.digest == f"{algorithm}:{image.hexdigest(algorithm)}"
        assert entry.size == len(image.data)
        assert entry.signed_by == {"key": gpg_key.fingerprint}.get(signing, signing)
        assert f"{target}: new {entry.release} " in "\n".join(said)
        assert "latest" not in entry.url


def test_newer_build_rewrites_only_its_entry(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    debian(upstreams)
    run(catalogue, mirror, "debian")
    before = read_lock(catalogue / "lock.json")
    newer = upstreams.debian("12", "bookworm", "20241110-1921", "amd64")
    said, failures = run(catalogue, mirror, "debian")
    after = read_lock(catalogue / "lock.json")
    assert failures == []
    assert [line for line in said if "unchanged" not in line] == [
        f"debian-12-amd64: 20241004-1894 -> 20241110-1921 "
        f"({before.targets['debian-12-amd64'].digest[:19]}… -> sha512:"
        f"{newer.hexdigest('sha512')[:12]}…)"
    ]
    assert after.targets["debian-12-amd64"].url == newer.url
    for name in ("debian-12-arm64", "debian-13-amd64", "debian-13-arm64"):
        assert after.targets[name] == before.targets[name]  # `found` kept too


def test_newest_folder_without_the_arch_falls_back(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    images = debian(upstreams)
    upstreams.debian("12", "bookworm", "20241201-2000", "amd64")  # arm64 not out yet
    _, failures = run(catalogue, mirror, "debian")
    lock = read_lock(catalogue / "lock.json")
    assert failures == []
    assert lock.targets["debian-12-arm64"].url == images["debian-12-arm64"].url
    assert lock.targets["debian-12-amd64"].release == "20241201-2000"


def test_tracking_policy_follows_new_versions(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    fedora(upstreams)
    run(catalogue, mirror, "fedora")
    for uarch in ("x86_64", "aarch64", "s390x"):
        upstreams.fedora("44", "1.2", uarch)
    said, failures = run(catalogue, mirror, "fedora")
    lock = read_lock(catalogue / "lock.json")
    assert failures == []
    assert lock.versions["fedora"] == ["44", "43"]
    assert sorted(n for n in lock.targets if n.startswith("fedora-")) == [
        f"fedora-{v}-{a}" for v in ("43", "44") for a in ("amd64", "arm64", "s390x")
    ]
    assert "fedora: maintained versions ['43', '42'] -> ['44', '43']" in said
    assert "fedora-42-amd64: removed (was 1.1)" in said


def test_tracking_policy_reads_a_listing_of_versions(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    centos(upstreams)
    for uarch in ("x86_64", "aarch64", "s390x"):
        upstreams.centos("11", "20260101", uarch)
    said, failures = run(catalogue, mirror, "centos-stream")
    assert failures == []
    assert read_lock(catalogue / "lock.json").versions["centos-stream"] == ["11", "10"]
    assert "centos-stream: maintained versions (catalogue) -> ['11', '10']" in said
    assert "centos-stream-11-arm64: new 20260101.0 " in "\n".join(said)


def test_moving_folder_is_pinned_at_the_dated_build(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    first = upstreams.amazonlinux("2023.6.20241111.0")
    run(catalogue, mirror, "amazonlinux")
    assert read_lock(catalogue / "lock.json").targets["amazonlinux-2023-amd64"].url == first.url
    newer = upstreams.amazonlinux("2023.6.20241212.0")
    said, failures = run(catalogue, mirror, "amazonlinux")
    entry = read_lock(catalogue / "lock.json").targets["amazonlinux-2023-amd64"]
    assert failures == []
    assert entry.url == newer.url
    assert "/os-images/2023.6.20241212.0/kvm/" in entry.url
    assert said[0].startswith("amazonlinux-2023-amd64: 2023.6.20241111.0 -> 2023.6.20241212.0")


def test_index_and_checksum_file_must_agree(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    fedora(upstreams)
    for entry in upstreams.releases:
        if entry["link"].endswith("43-1.6.x86_64.qcow2"):
            entry["sha256"] = "f" * 64
    upstreams.put("https://fedoraproject.org/releases.json", json.dumps(upstreams.releases))
    _, failures = run(catalogue, mirror, "fedora")
    assert len(failures) == 1
    assert failures[0].startswith(
        f"fedora-43-amd64: the index says {'f' * 64} but the verified "
        "checksum file https://download.fedoraproject.org/"
    )
    assert "fedora-43-amd64" not in read_lock(catalogue / "lock.json").targets


def test_bad_signature_keeps_the_lock(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams, other_key: SigningKey
) -> None:
    ubuntu(upstreams)
    run(catalogue, mirror, "ubuntu")
    before = read_lock(catalogue / "lock.json")
    upstreams.ubuntu("24.04", "noble", "20241201", "amd64", signer=other_key)
    _, failures = run(catalogue, mirror, "ubuntu")
    assert len(failures) == 1
    assert failures[0] == (
        f"ubuntu-24.04-amd64: {catalogue}/ubuntu.yaml: upstream.signature: signed by unknown "
        f"key {other_key.fingerprint[-16:]}, not among upstream.signature.keys"
    )
    assert read_lock(catalogue / "lock.json").targets == before.targets


def test_flavor_without_pinned_keys_is_refused(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    from tests.conftest import REPO

    catalogue = tmp_path / "real"
    catalogue.mkdir()
    (catalogue / "fedora.yaml").write_text((REPO / "distros" / "fedora.yaml").read_text())
    fedora(upstreams)
    _, failures = run(catalogue, mirror, "fedora")
    assert failures[0] == (
        f"fedora-43-amd64: {catalogue}/fedora.yaml: upstream.signature: no key fingerprints "
        "are pinned (upstream.signature.fingerprints); pin the upstream's signing keys, or set "
        "signature.kind: none if it signs nothing"
    )
    assert not (catalogue / "lock.json").exists() or not read_lock(catalogue / "lock.json").targets
