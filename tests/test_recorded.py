"""Discovery over files recorded from the live servers (tests/data/recorded/README.md): the
repository's own catalogue, served the real bytes in their real places, pins exactly the file
and digest that the real checksum files give."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from kmi.catalogue import load_catalogue
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams
from kmi.discover import discover_flavor
from kmi.discover.finders import find_versions
from kmi.lock import read_lock
from kmi.net import Http
from kmi.settings import load_settings

RECORDED = Path(__file__).parent / "data" / "recorded"


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def listed(upstreams: Upstreams, folder: str, text: bytes) -> None:
    """Every file a checksum file names, as a sparse placeholder (a listing needs the names,
    discovery a HEAD of the pinned one; no image bytes are needed)."""
    names = re.findall(r"(?m)^(?:SHA256 \((\S+)\)|[0-9a-f]{64} [ *]?(\S+))", text.decode())
    for name in {a or b for a, b in names}:
        path = upstreams.put(f"{folder}/{name}", b"")
        os.truncate(path, 1 << 20)


def discover(catalogue: Path, mirror: MirrorServer, name: str) -> list[str]:
    settings = load_settings({"KMI_MIRROR": mirror.url, "KMI_HTTP_BACKOFF": "0"}, catalogue)
    flavor = load_catalogue(catalogue).flavor(name)
    return discover_flavor(Http(settings), catalogue / "lock.json", flavor, lambda _: None)


def only(catalogue: Path, name: str, **changes: object) -> None:
    """Keep one flavor in the catalogue copy, with some keys changed."""
    for other in catalogue.glob("*.yaml"):
        if other.stem != name:
            other.unlink()
    path = catalogue / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def pinned(catalogue: Path) -> dict[str, tuple[str, str]]:
    lock = read_lock(catalogue / "lock.json")
    return {n: (e.url.rsplit("/", 1)[-1], e.digest) for n, e in lock.targets.items()}


def test_centos_stream_real_checksum_files(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    only(catalogue, "centos-stream")
    data = catalogue / "centos-stream.yaml"
    spec = yaml.safe_load(data.read_text())
    spec.pop("track")
    spec["upstream"]["arches"] = {"amd64": "x86_64", "arm64": "aarch64"}
    spec["versions"] = [
        {"version": "10", "arches": ["amd64"]},
        {"version": "9", "arches": ["arm64"]},
    ]
    data.write_text(yaml.safe_dump(spec))
    for version, uarch in (("10", "x86_64"), ("9", "aarch64")):
        text = recorded(f"centos-stream{version}-{uarch}.checksum")
        folder = f"https://cloud.centos.org/centos/{version}-stream/{uarch}/images"
        upstreams.put(f"{folder}/CHECKSUM", text)
        listed(upstreams, folder, text)
    assert discover(catalogue, mirror, "centos-stream") == []
    assert pinned(catalogue) == {
        "centos-stream-10-amd64": (
            "CentOS-Stream-GenericCloud-10-20241118.0.x86_64.qcow2",
            "sha256:3cb1310f39d92d34d0ea62c1d6f8943f47dce9df6937adb5bd26af8efa5d921d",
        ),
        "centos-stream-9-arm64": (
            "CentOS-Stream-GenericCloud-9-20240401.0.aarch64.qcow2",
            "sha256:66dd927b7aa643b18ad21a9368571c6ef57cc381b4febc8934397b137f14b995",
        ),
    }


def test_almalinux_real_checksum_files(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams, gpg_key: SigningKey
) -> None:
    only(catalogue, "almalinux")
    for version, uarch in (("9", "x86_64"), ("10", "aarch64"), ("10", "s390x")):
        text = recorded(f"almalinux{version}-{uarch}.checksum")
        folder = f"https://repo.almalinux.org/almalinux/{version}/cloud/{uarch}/images"
        upstreams.put(f"{folder}/CHECKSUM", text)
        upstreams.put(f"{folder}/CHECKSUM.asc", gpg_key.detach_sign(text))
        listed(upstreams, folder, text)
    failures = discover(catalogue, mirror, "almalinux")
    found = pinned(catalogue)
    assert found["almalinux-9-amd64"] == (
        "AlmaLinux-9-GenericCloud-9.8-20260526.x86_64.qcow2",
        "sha256:c397eed7023e92c841155831b1f47e26300e5bef0f0256c129322307c897a251",
    )
    assert found["almalinux-10-arm64"] == (
        "AlmaLinux-10-GenericCloud-10.2-20260526.0.aarch64.qcow2",
        "sha256:336c6861fe0ba9115af00f557ed1b09385a3525612dd0cb9cce7e0486f8e74a4",
    )
    assert found["almalinux-10-s390x"] == (
        "AlmaLinux-10-GenericCloud-10.2-20260526.0.s390x.qcow2",
        "sha256:db1f7e8247e150e6da902da348f6894960bfd3590001207d0bf3732992d98ac7",
    )
    assert len(found) == 3  # the targets not recorded fail with their listing's 404 only
    assert all("HTTP 404" in f for f in failures) and len(failures) == 3


def test_leap_real_fixed_name_checksums(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams, gpg_key: SigningKey
) -> None:
    only(catalogue, "opensuse-leap")
    folder = "https://download.opensuse.org/distribution/leap/16.0/appliances"
    for machine in ("x86_64", "s390x-s390x"):
        name = f"Leap-16.0-Minimal-VM.{machine}-Cloud.qcow2"
        text = recorded(f"{name}.sha256")
        upstreams.put(f"{folder}/{name}.sha256", text)
        upstreams.put(f"{folder}/{name}.sha256.asc", gpg_key.detach_sign(text))
        listed(upstreams, folder, text)
    listed(upstreams, folder, b"0" * 64 + b"  Leap-16.0-Minimal-VM.x86_64-kvm-and-xen.qcow2\n")
    failures = discover(catalogue, mirror, "opensuse-leap")
    lock = read_lock(catalogue / "lock.json").targets
    assert [f.split(":")[0] for f in failures] == ["opensuse-leap-16.0-arm64"]
    assert pinned(catalogue) == {
        "opensuse-leap-16.0-amd64": (
            "Leap-16.0-Minimal-VM.x86_64-Cloud.qcow2",
            "sha256:6c3b6b2ded57aa33d73b0eef219fc65b68f08ddd384d70b4c773dc35c8c7cb81",
        ),
        "opensuse-leap-16.0-s390x": (
            "Leap-16.0-Minimal-VM.s390x-s390x-Cloud.qcow2",
            "sha256:647bc07f1c21b02f703f2545a5808247d3faaba61bf20f59997855d1bbc390b7",
        ),
    }
    assert lock["opensuse-leap-16.0-amd64"].release == "6c3b6b2ded57"


def test_ubuntu_real_sha256sums(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams, gpg_key: SigningKey
) -> None:
    only(catalogue, "ubuntu", versions=[{"version": "22.04", "name": "jammy"}])
    text = recorded("SHA256SUM")
    rel = "server/releases/jammy/release-20230107"
    root = "https://cloud-images.ubuntu.com/releases"
    upstreams.put(f"{root}/{rel}/SHA256SUMS", text)
    upstreams.put(f"{root}/{rel}/SHA256SUMS.gpg", gpg_key.detach_sign(text))
    products = {}
    for arch in ("amd64", "arm64", "s390x"):
        item = {"ftype": "disk1.img", "path": f"{rel}/ubuntu-22.04-server-cloudimg-{arch}.img"}
        versions = {"20230107": {"items": {"disk1.img": item}}}
        products[f"com.ubuntu.cloud:server:22.04:{arch}"] = {"versions": versions}
    stream = f"{root}/streams/v1/com.ubuntu.cloud:released:download.json"
    upstreams.put(stream, json.dumps({"format": "products:1.0", "products": products}))
    listed(upstreams, f"{root}/{rel}", text)
    assert discover(catalogue, mirror, "ubuntu") == []
    assert pinned(catalogue) == {
        f"ubuntu-22.04-{arch}": (f"ubuntu-22.04-server-cloudimg-{arch}.img", f"sha256:{digest}")
        for arch, digest in (
            ("amd64", "de5e632e17b8965f2baf4ea6d2b824788e154d9a65df4fd419ec4019898e15cd"),
            ("arm64", "66224c7fed99ff5a5539eda406c87bbfefe8af6ff6b47d92df3187832b5b5d4f"),
            ("s390x", "192c18a58917622e12a3bb6aaf246fcc6a76d9562eb9f49d34df81fbc59610af"),
        )
    }
    url = read_lock(catalogue / "lock.json").targets["ubuntu-22.04-amd64"].url
    assert url == f"{root}/{rel}/ubuntu-22.04-server-cloudimg-amd64.img"


def test_fedora_real_releases_json(
    catalogue: Path, mirror: MirrorServer, upstreams: Upstreams, gpg_key: SigningKey
) -> None:
    only(catalogue, "fedora", versions=[{"version": "40"}])
    text = recorded("releases.json")
    upstreams.put("https://fedoraproject.org/releases.json", text)
    settings = load_settings({"KMI_MIRROR": mirror.url}, catalogue)
    fedora = load_catalogue(catalogue).flavor("fedora")
    assert find_versions(Http(settings), fedora) == ["40", "39"]  # not "41 Beta"
    upstreams.put("https://fedoraproject.org/releases.json", json.dumps(json.loads(text)))
    assert find_versions(Http(settings), fedora) == ["40", "39"]  # minified, the same
    path = catalogue / "fedora.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.pop("track")
    path.write_text(yaml.safe_dump(spec))
    generic = {
        e["arch"]: e
        for e in json.loads(text)
        if e["version"] == "40" and "Cloud-Base-Generic" in e["link"]
    }
    for uarch, entry in generic.items():
        name = entry["link"].rsplit("/", 1)[-1]
        line = f"SHA256 ({name}) = {entry['sha256']}\n"
        checksum = f"{entry['link'].rsplit('/', 1)[0]}/Fedora-Cloud-40-1.14-{uarch}-CHECKSUM"
        upstreams.put(checksum, gpg_key.clearsign(line))
    assert discover(catalogue, mirror, "fedora") == []
    lock = read_lock(catalogue / "lock.json").targets
    assert {n: (e.url, e.digest, e.size) for n, e in lock.items()} == {
        f"fedora-40-{arch}": (
            generic[uarch]["link"],
            f"sha256:{generic[uarch]['sha256']}",
            int(generic[uarch]["size"]),
        )
        for arch, uarch in (("amd64", "x86_64"), ("arm64", "aarch64"), ("s390x", "s390x"))
    }
