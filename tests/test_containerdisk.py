"""The containerdisk format, checked with tools kmi did not write: skopeo, umoci, tar,
gzip and zstd read the OCI layouts kmi writes without a daemon."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from kmi import oci

SPEC = oci.ImageSpec(
    arch="amd64",
    created="2026-01-01T00:00:00Z",
    mtime=1767225600,
    env={"INSTANCETYPE_KUBEVIRT_IO_DEFAULT_INSTANCETYPE": "u1.medium"},
    labels={"kmi.upstream.digest": "sha256:" + "ab" * 32},
    annotations={"org.opencontainers.image.title": "test 1"},
    ref="test-1-amd64",
    history="kmi test",
)


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def make_disk(path: Path, pattern: str = "0x5a", size: str = "300k") -> Path:
    """A small qcow2 with data in it; its length is not a multiple of 64 KiB blocks."""
    run("qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M")
    run("qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 {size}", str(path))
    return path


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_disk(tmp_path / "disk.qcow2")


def test_layout_reads_back_with_skopeo_and_umoci(disk: Path, tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    built = oci.write_image(disk, layout, SPEC)
    raw = json.loads(run("skopeo", "inspect", "--raw", f"oci:{layout}:test-1-amd64"))
    assert raw["mediaType"] == oci.MANIFEST
    assert [x["mediaType"] for x in raw["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ]
    assert raw["annotations"]["org.opencontainers.image.title"] == "test 1"
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layout}:test-1-amd64"))
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"]["Entrypoint"] == ["no-entrypoint"]
    assert config["config"]["Env"] == ["INSTANCETYPE_KUBEVIRT_IO_DEFAULT_INSTANCETYPE=u1.medium"]
    assert config["rootfs"]["diff_ids"] == [built.layer.diff_id]
    bundle = tmp_path / "bundle"
    rootless = [] if os.getuid() == 0 else ["--rootless"]
    run("umoci", "unpack", *rootless, "--image", f"{layout}:test-1-amd64", str(bundle))
    rootfs = bundle / "rootfs"
    assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*")) == [
        "disk",
        "disk/disk.img",
    ]
    assert (rootfs / "disk" / "disk.img").read_bytes() == disk.read_bytes()
    assert oct((rootfs / "disk").stat().st_mode & 0o7777) == "0o555"
    assert oct((rootfs / "disk" / "disk.img").stat().st_mode & 0o7777) == "0o444"
    if os.getuid() == 0:
        st = (rootfs / "disk" / "disk.img").stat()
        assert (st.st_uid, st.st_gid) == (107, 107)


def test_layer_tar_has_exactly_the_disk_entries(disk: Path, tmp_path: Path) -> None:
    built = oci.write_image(disk, tmp_path / "oci", SPEC)
    blob = oci.blob_path(tmp_path / "oci", built.layer.descriptor.digest)
    run("gzip", "-t", str(blob))  # stored deflate blocks are plain, valid gzip
    with tarfile.open(blob, "r:gz") as tar:
        entries = [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime) for m in tar.getmembers()]
    assert entries == [
        ("disk", tarfile.DIRTYPE, 0o555, 107, 107, SPEC.mtime),
        ("disk/disk.img", tarfile.REGTYPE, 0o444, 107, 107, SPEC.mtime),
    ]
    listing = run("tar", "-tvzf", str(blob), "--numeric-owner")
    assert listing.splitlines()[0].split()[-1] == "disk/"  # the trailing slash CDI looks for


def test_same_inputs_give_the_same_digests_anywhere(disk: Path, tmp_path: Path) -> None:
    first = oci.write_image(disk, tmp_path / "a" / "oci", SPEC)
    elsewhere = tmp_path / "b" / "moved.qcow2"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(disk.read_bytes())
    os.utime(elsewhere, (0, 0))  # a copy with another name and mtime
    second = oci.write_image(elsewhere, tmp_path / "b" / "oci", SPEC)
    assert first == second
    later = oci.write_image(
        disk,
        tmp_path / "c" / "oci",
        SPEC.__class__(**{**SPEC.__dict__, "created": "2026-02-01T00:00:00Z", "mtime": 1769904000}),
    )
    assert later.manifest.digest != first.manifest.digest
    assert later.layer.diff_id != first.layer.diff_id  # the tar mtimes follow `created`


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_other_compressions_hold_the_same_tar(
    disk: Path, tmp_path: Path, compression: oci.Compression
) -> None:
    stored = oci.write_image(disk, tmp_path / "stored", SPEC)
    other = oci.write_image(disk, tmp_path / compression, SPEC, compression)
    assert other.layer.diff_id == stored.layer.diff_id
    assert other.layer.descriptor.media_type == oci.LAYER_TYPES[compression]
    bundle = tmp_path / f"bundle-{compression}"
    rootless = [] if os.getuid() == 0 else ["--rootless"]
    layout = tmp_path / compression
    if compression == "zstd":  # umoci 0.4 predates zstd layers: check the stream itself
        blob = oci.blob_path(layout, other.layer.descriptor.digest)
        run("zstd", "-t", "-q", str(blob))
        return
    run("umoci", "unpack", *rootless, "--image", f"{layout}:test-1-amd64", str(bundle))
    assert (bundle / "rootfs" / "disk" / "disk.img").read_bytes() == disk.read_bytes()


def test_index_lists_every_arch_with_its_platform(disk: Path, tmp_path: Path) -> None:
    arm_disk = make_disk(tmp_path / "arm.qcow2", "0x17")
    amd = oci.write_image(disk, tmp_path / "amd64", SPEC)
    arm_spec = SPEC.__class__(**{**SPEC.__dict__, "arch": "arm64", "ref": "test-1-arm64"})
    arm = oci.write_image(arm_disk, tmp_path / "arm64", arm_spec)
    layout = tmp_path / "image"
    oci.write_index(layout, [tmp_path / "amd64", tmp_path / "arm64"], {"a": "b"}, "test-1")
    index = json.loads(run("skopeo", "inspect", "--raw", f"oci:{layout}:test-1"))
    assert index["mediaType"] == oci.INDEX
    assert [(m["digest"], m["platform"]) for m in index["manifests"]] == [
        (amd.manifest.digest, {"architecture": "amd64", "os": "linux"}),
        (arm.manifest.digest, {"architecture": "arm64", "os": "linux", "variant": "v8"}),
    ]
    copy = tmp_path / "copy"
    run("skopeo", "copy", "--quiet", "--all", f"oci:{layout}:test-1", f"oci:{copy}:x")
    assert oci.blob_path(copy, arm.layer.descriptor.digest).exists()
    arm_config = json.loads(
        run("skopeo", "inspect", "--config", "--override-arch", "arm64", f"oci:{layout}:test-1")
    )
    assert arm_config["architecture"] == "arm64"


def test_an_unsigned_upstream_is_said_in_the_image(tmp_path: Path) -> None:
    from kmi.catalogue import load_catalogue, targets_of
    from kmi.lock import LockEntry
    from kmi.stages.containerdisk import image_spec
    from tests.conftest import REPO

    debian = load_catalogue(REPO / "distros").flavor("debian")
    target = targets_of(debian)[0]
    entry = LockEntry(
        flavor="debian",
        url="https://cloud.debian.org/images/cloud/trixie/20261001-2000/d.qcow2",
        digest="sha512:" + "ab" * 64,
        size=1,
        release="20261001-2000",
        found="2026-10-02T01:02:03Z",
        checksum_url="https://cloud.debian.org/images/cloud/trixie/20261001-2000/SHA512SUMS",
        signed_by="unsigned",
    )
    spec = image_spec(target, entry, "k" * 64, None, "")
    assert spec.annotations["kmi.upstream.signed-by"] == "unsigned"
    assert spec.labels["kmi.upstream.signed-by"] == "unsigned"
