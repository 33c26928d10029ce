"""Discovery from each upstream's own layout: releases.json, listings, dated folders,
simplestreams; signatures checked; only changed entries rewritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kmi.catalogue import Flavor, load_catalogue
from kmi.demo.layouts import (
    LAYOUTS,
    almalinux,
    alpine,
    centos,
    debian,
    fedora,
    opensuse,
    populate_all,
    ubuntu,
)
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
    assert [line for line in said if "unchanged" not in line and "unsigned" not in line] == [
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
    fedora(upstreams)  # 44 and 43, and a "45 Beta" entry without a digest
    said, _ = run(catalogue, mirror, "fedora")
    assert "fedora: maintained versions (catalogue) -> ['44', '43']" in said
    for uarch in ("x86_64", "aarch64", "s390x"):
        upstreams.fedora("45", "1.2", uarch)
    said, failures = run(catalogue, mirror, "fedora")
    lock = read_lock(catalogue / "lock.json")
    assert failures == []
    assert lock.versions["fedora"] == ["45", "44"]
    assert sorted(n for n in lock.targets if n.startswith("fedora-")) == [
        f"fedora-{v}-{a}" for v in ("44", "45") for a in ("amd64", "arm64", "s390x")
    ]
    assert "fedora: maintained versions ['44', '43'] -> ['45', '44']" in said
    assert "fedora-43-amd64: removed (was 1.6)" in said


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
        if entry["link"].endswith("Generic-43-1.6.x86_64.qcow2"):
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
    upstreams.ubuntu("24.04", "noble", "20261201", "amd64", signer=other_key)
    _, failures = run(catalogue, mirror, "ubuntu")
    assert len(failures) == 1
    assert failures[0] == (
        f"ubuntu-24.04-amd64: {catalogue}/ubuntu.yaml: upstream.signature: signed by unknown "
        f"key {other_key.fingerprint[-16:]}, not among upstream.signature.keys"
    )
    assert read_lock(catalogue / "lock.json").targets == before.targets


def real_catalogue(tmp_path: Path, *flavors: str) -> Path:
    """A copy of the repository's own flavors, with their real pinned keys."""
    from tests.conftest import REPO

    catalogue = tmp_path / "real"
    shutil.copytree(REPO / "distros" / "keys", catalogue / "keys")
    for name in flavors:
        shutil.copy(REPO / "distros" / f"{name}.yaml", catalogue)
    return catalogue


def test_real_keys_refuse_a_replica_signed_by_another_key(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams, gpg_key: SigningKey
) -> None:
    catalogue = real_catalogue(tmp_path, "fedora", "ubuntu", "almalinux")
    fedora(upstreams)
    ubuntu(upstreams)
    almalinux(upstreams)
    for name, first in (
        ("fedora", "fedora-44-amd64"),
        ("ubuntu", "ubuntu-26.04-amd64"),
        ("almalinux", "almalinux-10-amd64"),
    ):
        _, failures = run(catalogue, mirror, name)
        assert failures[0] == (
            f"{first}: {catalogue}/{name}.yaml: upstream.signature: signed by unknown key "
            f"{gpg_key.fingerprint[-16:]}, not among upstream.signature.keys"
        )
    assert not (catalogue / "lock.json").exists() or not read_lock(catalogue / "lock.json").targets


def test_flavor_without_pinned_keys_is_refused(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    catalogue = real_catalogue(tmp_path, "alpine")  # its key could not be pinned offline
    alpine(upstreams)
    _, failures = run(catalogue, mirror, "alpine")
    assert len(failures) == 4
    assert failures[0] == (
        f"alpine-3.24-amd64: {catalogue}/alpine.yaml: upstream.signature: no key fingerprints "
        "are pinned (upstream.signature.fingerprints); pin the upstream's signing keys, or set "
        "signature.kind: none if it signs nothing"
    )
    assert not (catalogue / "lock.json").exists() or not read_lock(catalogue / "lock.json").targets


def test_a_key_pinned_for_another_version_is_refused(
    catalogue: Path,
    mirror: MirrorServer,
    upstreams: Upstreams,
    gpg_key: SigningKey,
    other_key: SigningKey,
) -> None:
    (catalogue / "other-key.asc").write_bytes(other_key.public)
    path = catalogue / "fedora.yaml"
    data = yaml.safe_load(path.read_text())
    sig = data["upstream"]["signature"]
    sig["keys"] = ["local-key.asc", "other-key.asc"]
    sig["fingerprints"] = []
    sig["per_version"] = {"43": [gpg_key.fingerprint], "44": [other_key.fingerprint]}
    path.write_text(yaml.safe_dump(data))
    fedora(upstreams)  # every CHECKSUM signed by gpg_key, pinned for 43 only
    _, failures = run(catalogue, mirror, "fedora")
    assert [f.split(":")[0] for f in failures] == [f"fedora-44-{a}" for a in ARCHES]
    assert failures[0] == (
        f"fedora-44-amd64: {path}: upstream.signature: signed by key {gpg_key.fingerprint}, "
        "which is not pinned for version 44 (it is pinned for 43); see upstream.signature in "
        "the catalogue"
    )
    lock = read_lock(catalogue / "lock.json")
    assert sorted(lock.targets) == [f"fedora-43-{a}" for a in ARCHES]
    assert {e.signed_by for e in lock.targets.values()} == {gpg_key.fingerprint}


ARCHES = ("amd64", "arm64", "s390x")


def run_all(catalogue: Path, url: str, **env: str) -> list[str]:
    http = Http(load_settings({"KMI_MIRROR": url, "KMI_HTTP_BACKOFF": "0", **env}, catalogue))
    failures: list[str] = []
    for flavor in load_catalogue(catalogue).flavors:
        failures += discover_flavor(http, catalogue / "lock.json", flavor, lambda _: None)
    return failures


def test_a_recorded_night_replays_to_the_same_pins(
    tmp_path: Path, catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    populate_all(upstreams)
    recording = tmp_path / "recording"
    assert run_all(catalogue, mirror.url, KMI_RECORD=str(recording)) == []
    live = read_lock(catalogue / "lock.json")
    images = [p for p in recording.rglob("*") if p.suffix in {".qcow2", ".img"}]
    assert images and all(p.stat().st_blocks == 0 for p in images)  # sizes only, no bytes
    assert (recording / "repo.almalinux.org/almalinux/9/cloud/x86_64/images/index.html").is_file()

    (catalogue / "lock.json").unlink()
    replay = MirrorServer(recording).start()
    try:
        assert run_all(catalogue, replay.url) == []
        shutil.rmtree(recording / "cloud.debian.org")  # one upstream down
        (catalogue / "lock.json").unlink()
        failures = run_all(catalogue, replay.url)
    finally:
        replay.stop()
    assert {f.split(":")[0] for f in failures} == {
        f"debian-{v}-{a}" for v in ("12", "13") for a in ("amd64", "arm64")
    }
    assert all(len(f.splitlines()) == 1 and "HTTP 404" in f for f in failures)
    replayed = read_lock(catalogue / "lock.json")
    assert sorted(replayed.targets) == sorted(n for n in live.targets if "debian" not in n)
    for name, entry in replayed.targets.items():
        assert (entry.url, entry.digest, entry.size, entry.release, entry.signed_by) == (
            live.targets[name].url,
            live.targets[name].digest,
            live.targets[name].size,
            live.targets[name].release,
            live.targets[name].signed_by,
        )


def test_unsigned_upstreams_are_said_and_can_be_refused(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    debian(upstreams)
    said, failures = run(catalogue, mirror, "debian")
    assert failures == []
    assert (
        "debian-13-amd64: unsigned upstream: trust rests on HTTPS and the published checksum "
        "(Debian's cloud image publishing writes SHA512SUMS and does not sign it)"
    ) in said
    assert {e.signed_by for e in read_lock(catalogue / "lock.json").targets.values()} == {
        "unsigned"
    }
    (catalogue / "lock.json").unlink()
    flavor = load_catalogue(catalogue).flavor("debian")
    http = Http(
        load_settings(
            {"KMI_MIRROR": mirror.url, "KMI_REQUIRE_SIGNED": "1", "KMI_HTTP_BACKOFF": "0"},
            catalogue,
        )
    )
    failures = discover_flavor(http, catalogue / "lock.json", flavor, lambda _: None)
    assert failures[0] == (
        "debian-13-amd64: unsigned upstream: trust rests on HTTPS and the published checksum "
        "(Debian's cloud image publishing writes SHA512SUMS and does not sign it), and "
        "KMI_REQUIRE_SIGNED is set; leave it unset to build it, or drop debian from the catalogue"
    )
    assert len(failures) == 4
    assert not read_lock(catalogue / "lock.json").targets


def test_leap_pins_the_build_numbered_twin_else_the_fixed_name(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    images = opensuse(upstreams)
    _, failures = run(catalogue, mirror, "opensuse-leap")
    lock = read_lock(catalogue / "lock.json").targets
    assert failures == []
    assert lock["opensuse-leap-16.0-amd64"].url.endswith(
        "/Leap-16.0-Minimal-VM.x86_64-Cloud-Build16.2.qcow2"
    )
    assert lock["opensuse-leap-16.0-amd64"].release == "16.2"
    s390x = lock["opensuse-leap-16.0-s390x"]
    assert s390x.url == (
        "https://download.opensuse.org/distribution/leap/16.0/appliances/"
        "Leap-16.0-Minimal-VM.s390x-s390x-Cloud.qcow2"
    )
    assert s390x.release == images["opensuse-leap-16.0-s390x"].hexdigest()[:12]
