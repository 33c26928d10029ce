"""The doit task graph end to end: real doit, real HTTP server, real gpg."""

from __future__ import annotations

import ast
import json
import lzma
import os
import platform
import re
import shutil
from pathlib import Path

import pytest

from kmi.demo.layouts import centos, debian
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, pin_key
from kmi.files import hold
from kmi.lock import read_lock
from kmi.stagecache import DirCache
from tests.conftest import REPO, Project

TARGET = "debian-12-amd64"


def cached_blobs(project: Project) -> list[Path]:
    return sorted(p for p in (project.work / "cache" / "downloads").rglob("*") if p.is_file())


def test_list_shows_families_and_every_target(project: Project) -> None:
    families = project.doit("list")
    assert families.code == 0
    assert [line.split()[0] for line in families.out.splitlines()] == [
        "bake",
        "build",
        "checksum",
        "ci-matrix",
        "discover",
        "docs",
        "download",
        "manifest",
        "prune",
        "publish",
        "push",
        "sbom",
        "sparsify",
        "status",
        "sysprep",
        "test",
        "verify",
    ]
    every = project.doit("list", "--all").out
    for flavor in (
        "fedora-44",
        "centos-stream-9",
        "almalinux-9",
        "rocky-9",
        "ubuntu-26.04",
        "debian-12",
        "opensuse-leap-16.0",
        "alpine-3.24",
    ):
        for arch in ("amd64", "arm64"):
            assert f"download:{flavor}-{arch} " in every
            assert f"checksum:{flavor}-{arch} " in every
    assert "download:archlinux-rolling-amd64 " in every
    assert "manifest:fedora-44 " in every and "publish:fedora-44 " in every
    assert "test:fedora-44-arm64 " in every and "docs:fedora-44 " in every
    assert "docs:release-chart " in every


def test_build_then_a_second_run_does_nothing(
    project: Project, upstreams: Upstreams, mirror: MirrorServer
) -> None:
    debian(upstreams)
    assert project.doit("discover:debian").code == 0
    first = project.doit("checksum")
    assert first.code == 2  # the other flavors have nothing in this mirror: checksum skipped
    assert "SKIPPED checksum:fedora-44-amd64: a task it needs failed" in first.out
    built = {
        f"{s}:debian-{v}-{a}"
        for s in ("download", "checksum")
        for v in ("12", "13")
        for a in ("amd64", "arm64")
    }
    assert built <= first.ran()
    second = project.doit("checksum:debian-12-amd64", "checksum:debian-13-arm64")
    assert second.code == 0
    assert second.ran() == set()
    assert second.skipped() == {
        "download:debian-12-amd64",
        "checksum:debian-12-amd64",
        "download:debian-13-arm64",
        "checksum:debian-13-arm64",
    }


def test_noop_reads_no_large_file_and_checksum_catches_rot(
    project: Project, upstreams: Upstreams
) -> None:
    images = debian(upstreams)
    assert project.doit("discover:debian").code == 0
    assert project.doit("checksum:debian-12-amd64").code == 0
    entry = read_lock(project.catalogue / "lock.json").targets["debian-12-amd64"]
    blob = project.work / "cache/downloads/sha512" / entry.hexdigest
    blob.write_bytes(b"\0" * len(images["debian-12-amd64"].data))  # rot, same size
    quiet = project.doit("checksum:debian-12-amd64")
    assert quiet.ran() == set()  # had it read the blob, it would have failed
    (project.work / "build/debian-12-amd64/checksum.json").unlink()
    caught = project.doit("checksum:debian-12-amd64")
    assert caught.code == 1
    assert (
        f"FAILED checksum:debian-12-amd64: debian-12-amd64: cached bytes of {entry.url} do "
        f"not match the lock: expected {entry.digest}, got sha512:"
    ) in caught.out
    assert not blob.exists()
    healed = project.doit("checksum:debian-12-amd64")
    assert healed.code == 0 and healed.ran() == {
        "download:debian-12-amd64",
        "checksum:debian-12-amd64",
    }


def test_wiping_build_never_downloads_again(
    project: Project, upstreams: Upstreams, mirror: MirrorServer
) -> None:
    images = debian(upstreams)
    assert project.doit("discover:debian").code == 0
    assert project.doit("checksum:debian-12-amd64", "checksum:debian-12-arm64").code == 0
    shutil.rmtree(project.work / "build")
    before = len(mirror.settled())
    again = project.doit("checksum:debian-12-amd64", "checksum:debian-12-arm64")
    assert again.code == 0
    assert "debian-12-amd64: 20241004-1894 in the cache" in again.out
    assert mirror.settled()[before:] == []  # not one request
    assert len(cached_blobs(project)) == 2
    assert cached_blobs(project)[0].stat().st_size == len(images["debian-12-amd64"].data)


def test_one_flavor_changed_reruns_only_its_tasks(project: Project, upstreams: Upstreams) -> None:
    debian(upstreams)
    centos(upstreams)
    wanted = [
        "checksum:debian-12-amd64",
        "checksum:centos-stream-9-amd64",
        "checksum:centos-stream-10-arm64",
    ]
    assert project.doit(*wanted).code == 0  # discovered as first built, then downloaded
    assert project.doit(*wanted).ran() == set()
    yaml = project.catalogue / "centos-stream.yaml"
    yaml.write_text(yaml.read_text().replace("- qemu-guest-agent", "- qemu-guest-agent\n  - vim"))
    assert project.doit(*wanted).ran() == set()  # customization does not shape downloads
    yaml.write_text(
        yaml.read_text().replace("GenericCloud-{version}-", "GenericCloud-{version}-(?:)")
    )
    rerun = project.doit(*wanted)
    assert rerun.code == 0
    assert rerun.ran() == {"download:centos-stream-9-amd64", "download:centos-stream-10-arm64"}
    assert "centos-stream-9-amd64: unchanged" in rerun.out  # re-pinned: same build, no fetch


def test_locked_lock_refuses_unpinned_targets(project: Project, upstreams: Upstreams) -> None:
    debian(upstreams)
    run = project.doit("download:debian-12-amd64", KMI_LOCKED="1")
    assert run.code == 1
    lock = project.catalogue / "lock.json"
    assert (
        f"FAILED download:debian-12-amd64: debian-12-amd64 is not pinned in {lock} and "
        "KMI_LOCKED is set; run: doit discover:debian, and commit the lock"
    ) in run.out
    assert "Traceback" not in run.out
    assert cached_blobs(project) == []


def test_upstream_bytes_that_differ_from_the_lock(
    project: Project, upstreams: Upstreams, mirror: MirrorServer
) -> None:
    images = debian(upstreams)
    assert project.doit("discover:debian").code == 0
    upstreams.put(images["debian-12-amd64"].url, b"tampered")
    run = project.doit("download:debian-12-amd64")
    entry = read_lock(project.catalogue / "lock.json").targets["debian-12-amd64"]
    assert run.code == 1
    assert (
        f"FAILED download:debian-12-amd64: debian-12-amd64: {entry.url} (via mirror "
        f"{mirror.url}/cloud.debian.org/images/cloud/bookworm/20241004-1894/"
        f"{images['debian-12-amd64'].name}): digest mismatch: expected {entry.digest}, "
        "got sha512:"
    ) in run.out
    assert "the bad bytes were deleted" in run.out
    left = [p.name for p in (project.work / "cache").rglob("*") if p.is_file()]
    kept = {"doit-state.json", "tool-versions.json"}  # doit's state, `--version` memo
    assert [n for n in left if not n.endswith(".guard") and n not in kept] == []  # no bytes


def test_image_signature_checked_before_caching(
    project: Project,
    upstreams: Upstreams,
    mirror: MirrorServer,
    gpg_key: SigningKey,
    other_key: SigningKey,
) -> None:
    upstreams.alpine("3.24", "1", "x86_64-bios")  # Alpine signs the image itself
    upstreams.alpine("3.24", "1", "aarch64-uefi")
    assert project.doit("discover:alpine").code == 0
    upstreams.alpine("3.24", "1", "x86_64-bios", signer=other_key)
    run = project.doit("download:alpine-3.24-amd64")
    assert run.code == 1
    assert "upstream.signature: signed by unknown key" in run.out
    assert cached_blobs(project) == []
    upstreams.alpine("3.24", "1", "x86_64-bios")
    ok = project.doit("download:alpine-3.24-amd64")
    assert ok.code == 0 and len(cached_blobs(project)) == 1
    receipt = json.loads((project.work / "build/alpine-3.24-amd64/download.json").read_text())
    assert receipt["signed_by"] == gpg_key.fingerprint
    shutil.rmtree(project.work / "build")
    before = len(mirror.settled())
    assert project.doit("download:alpine-3.24-amd64").code == 0
    assert mirror.settled()[before:] == []  # a cache hit fetches not even the signature


def test_a_signed_checksum_by_another_key_pins_nothing(
    project: Project, upstreams: Upstreams, other_key: SigningKey
) -> None:
    upstreams.archlinux("20241001.267073", signer=other_key)  # arch-boxes signs its .SHA256
    run = project.doit("discover:archlinux")
    assert run.code == 1
    assert "archlinux-rolling-amd64: " in run.out and "signed by unknown key" in run.out
    assert "archlinux-rolling-amd64" not in json.loads(
        (project.catalogue / "lock.json").read_text()
    ).get("targets", {})


XZ_FLAVOR = """\
name: demo-xz
description: Images shipped xz-compressed.
homepage: https://images.example.org/
license: MIT
tier: planned
versions:
  - version: "1"
upstream:
  arches: {amd64: x86_64}
  discovery:
    kind: listing
    index: https://images.example.org/{version}/
    match: 'demo-{version}-(?P<release>[0-9]+)\\.{uarch}\\.qcow2\\.xz'
  checksum: {url: "{dir}/SHA256SUMS", format: gnu, algorithm: sha256}
  signature: {kind: none, why: the test upstream publishes no signature}
  compression: xz
containerdisk: {user: demo}
"""


def test_transport_compression_is_removed(project: Project, upstreams: Upstreams) -> None:
    (project.catalogue / "demo-xz.yaml").write_text(XZ_FLAVOR)
    disk = b"QFI\xfb" + bytes(range(256)) * 400
    packed = lzma.compress(disk)
    url = "https://images.example.org/1/demo-1-20250101.x86_64.qcow2.xz"
    upstreams.put(url, packed)
    import hashlib

    upstreams.put(
        "https://images.example.org/1/SHA256SUMS",
        f"{hashlib.sha256(packed).hexdigest()}  demo-1-20250101.x86_64.qcow2.xz\n",
    )
    run = project.doit("checksum:demo-xz-1-amd64")
    assert run.code == 0, run.out
    image = project.work / "cache/images/sha256" / hashlib.sha256(packed).hexdigest()
    assert image.read_bytes() == disk
    assert project.doit("checksum:demo-xz-1-amd64").ran() == set()


def test_unknown_target_is_one_line(project: Project) -> None:
    run = project.doit("download:nosuchflavor-99-amd64")
    assert run.code == 3
    assert run.out.splitlines()[0] == (
        'ERROR: Invalid parameter: "download:nosuchflavor-99-amd64". Must be a command, task, '
        "or a target."
    )
    assert "Traceback" not in run.out


def test_dodo_is_only_imports() -> None:
    tree = ast.parse((REPO / "dodo.py").read_text())
    kinds = [type(node).__name__ for node in tree.body]
    assert set(kinds) <= {"Expr", "ImportFrom", "Assign"}
    assigned = {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assert assigned == {"DOIT_CONFIG", "__all__"}


def test_a_second_doit_on_the_same_build_folder_is_refused(
    project: Project, upstreams: Upstreams
) -> None:
    debian(upstreams)
    other = hold(project.work / "build" / ".kmi-run.lock", "held by the test")
    try:
        refused = project.doit("discover:debian")
        assert refused.code == 3, refused.out
        assert refused.out.strip().splitlines()[0] == (
            f"ERROR: {project.work / 'build'}: another doit run (pid {os.getpid()}) is using "
            "this build folder; wait for it to finish, or give this run its own KMI_BUILD_DIR"
        )
        assert "Traceback" not in refused.out
        assert project.doit("list").code == 0  # reading the task list needs no lock
        elsewhere = project.doit("discover:debian", KMI_BUILD_DIR=str(project.work / "b2"))
        assert elsewhere.code == 0, elsewhere.out
    finally:
        other.close()
    assert project.doit("checksum:debian-12-amd64").code == 0


def test_parallel_tasks_share_the_terminal_line_by_line(
    project: Project, upstreams: Upstreams
) -> None:
    debian(upstreams)
    assert project.doit("discover:debian").code == 0
    targets = [f"checksum:debian-{v}-{a}" for v in ("12", "13") for a in ("amd64", "arm64")]
    done = project.doit("-n", "4", *targets, KMI_PROGRESS="auto")
    assert done.code == 0, done.out
    assert done.ran() >= set(targets)
    for line in done.out.splitlines():  # every line is one task's: a marker or a target's own
        assert re.fullmatch(
            r"(\.  |-- )?(download|checksum):debian-\S+|debian-1[23]-\w+: .+", line
        ), line
    assert "\r" not in done.out  # no bar redrawn over another task's line


def test_the_catalogue_copy_drops_flavors_the_source_lacks(
    tmp_path: Path, gpg_key: SigningKey
) -> None:
    """The demo runs again on its old folder: a flavor an earlier run added must not stay."""
    dest = tmp_path / "distros"
    dest.mkdir()
    (dest / "fixture.yaml").write_text("name: fixture\n")
    (dest / "lock.json").write_text("{}")
    pin_key(REPO / "distros", dest, gpg_key)
    assert sorted(p.name for p in dest.glob("*.yaml")) == sorted(
        p.name for p in (REPO / "distros").glob("*.yaml")
    )
    assert (dest / "lock.json").read_text() == "{}"  # the lock is kept


def test_an_arm64_sysprep_this_host_cannot_run_is_restored_from_the_stage_cache(
    project: Project, upstreams: Upstreams
) -> None:
    """debian-12-arm64 installs packages; with KMI_CUSTOMIZE=native that needs an arm64
    host. Here (amd64) the stage looks up the key an arm64 machine's build has: absent, one
    line naming the entry; once that machine has added it, it is restored and counts as
    done, and its receipt says how it was made there."""
    if platform.machine() != "x86_64":
        pytest.skip(f"needs an amd64 host to be the foreign one; this is {platform.machine()}")
    debian(upstreams)
    cache = project.work / "shared"
    target = "debian-12-arm64"
    assert project.doit("discover:debian").code == 0
    native = {"KMI_CACHE_URL": str(cache), "KMI_CUSTOMIZE": "native"}
    missing = project.doit(f"sysprep:{target}", **native)
    assert missing.code == 1
    found = re.search(r"; the stage cache has no (\S+)\n", missing.out)
    assert found, missing.out
    assert "which libguestfs can only run on an arm64 host and this one is amd64" in missing.out
    entry = Path(found.group(1))
    assert entry.parent == cache / "sysprep"
    # what the arm64 machine added: its sysprep.qcow2 under that key
    made = project.work / "arm64-machine" / "sysprep.qcow2"
    made.parent.mkdir()
    made.write_bytes(b"QFI\xfb" + b"\0" * 4096)
    details = {"target": target, "size": 4100, "skipped_guest_steps": [], "customized": "native"}
    assert DirCache(cache).store("sysprep", entry.name, made, details, print)
    restored = project.doit(f"sysprep:{target}", **native)
    assert restored.code == 0, restored.out
    assert f"{target}: sysprep restored from the stage cache ({entry})" in restored.out
    mine = project.work / "build" / target / "sysprep.qcow2"
    assert mine.read_bytes() == made.read_bytes()
    receipt = json.loads((mine.parent / "sysprep.json").read_text())
    assert receipt["customized"] == "native"
    again = project.doit(f"sysprep:{target}", **native)
    assert again.code == 0 and again.ran() == set()  # done: the receipt holds the same key


def test_a_version_not_maintained_fails_with_one_line(project: Project) -> None:
    run = project.doit("build:fedora-40-arm64")
    assert run.code == 1
    assert (
        "FAILED build:fedora-40-arm64: fedora 40 is not maintained (maintained: 44, 43); fedora "
        "follows the newest 2 versions upstream (track in fedora.yaml); to keep more, raise "
        "track.keep, then run doit discover:fedora"
    ) in run.out
    leap = project.doit("manifest:opensuse-leap-15.6")
    assert leap.code == 1
    assert (
        "FAILED manifest:opensuse-leap-15.6: opensuse-leap 15.6 is not maintained (maintained: "
        "16.0); to add it, list it under versions: in opensuse-leap.yaml, then run doit "
        "discover:opensuse-leap"
    ) in leap.out
    arch = project.doit("test:debian-13-s390x")
    assert "FAILED test:debian-13-s390x: debian 13 is not built for s390x; its arches are " in (
        arch.out
    )
    assert "Traceback" not in run.out + leap.out + arch.out


def test_a_bare_doit_starts_nothing_heavy_and_says_what_to_run(
    project: Project, mirror: MirrorServer
) -> None:
    run = project.doit()
    assert run.code == 0, run.out
    assert run.ran() == {"status"}
    lines = run.out.splitlines()
    assert re.fullmatch(
        r"kmi: 10 flavors, \d+ images, \d+ targets: 0 pinned in .*lock\.json, 0 built, "
        r"0 boot-tested",
        lines[1],
    ), run.out
    assert (
        lines[2]
        == "next: doit discover (find and pin the newest verified upstream builds; network)"
    )
    assert mirror.settled() == []  # not one upstream request


def test_a_bad_setting_stops_doit_before_any_task(project: Project, mirror: MirrorServer) -> None:
    for args, env, said in (
        (("publish", "registry=Bad Registry!"), {}, "ERROR: registry='Bad Registry!': expected"),
        (("publish", "--registry=Bad Registry!"), {}, "publish --registry='Bad Registry!': "),
        (("build",), {"KMI_REGISTRY": "https://quay.io/x"}, "KMI_REGISTRY='https://quay.io/x':"),
        (("list",), {"SOURCE_DATE_EPOCH": "yesterday"}, "SOURCE_DATE_EPOCH='yesterday': expected"),
        (("checksum",), {"KMI_CACHE_URL": "oci://x/y"}, "KMI_CACHE_URL='oci://x/y': give a"),
    ):
        run = project.doit(*args, **env)
        assert run.code == 3, run.out
        assert run.ran() == set() and said in run.out, run.out
        assert "Traceback" not in run.out and len(run.out.strip().splitlines()) == 1, run.out
    assert mirror.settled() == []


def test_publish_documents_its_parameters(project: Project) -> None:
    run = project.doit("help", "publish")
    assert run.code == 0
    assert "--registry=ARG" in run.out and "instead of KMI_REGISTRY" in run.out


def test_clean_removes_a_stage_outputs_never_the_download_cache(
    project: Project, upstreams: Upstreams
) -> None:
    debian(upstreams)
    assert project.doit("discover:debian").code == 0
    assert project.doit(f"checksum:{TARGET}").code == 0
    build = project.work / "build" / TARGET
    assert (build / "checksum.json").exists() and (build / "download.json").exists()
    cleaned = project.doit("clean", f"checksum:{TARGET}", f"download:{TARGET}")
    assert cleaned.code == 0, cleaned.out
    assert not (build / "checksum.json").exists() and not (build / "download.json").exists()
    assert len(cached_blobs(project)) == 1  # the verified upstream bytes stay
    again = project.doit(f"checksum:{TARGET}")
    assert again.code == 0 and f"{TARGET}: 20241004-1894 in the cache" in again.out
