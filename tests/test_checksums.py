"""Every upstream checksum format, parsed for one file's digest."""

from __future__ import annotations

import base64
import json

import pytest

from kmi.checksums import find_digest
from kmi.errors import VerificationError

H1, H2 = "a" * 64, "b" * 64
H512 = "c" * 128


def test_bsd_with_comments_and_other_files() -> None:
    text = (
        f"# CentOS-Stream-GenericCloud-9-1.qcow2: 123 bytes\n"
        f"SHA256 (CentOS-Stream-GenericCloud-9-1.qcow2) = {H1}\n"
        f"SHA256 (CentOS-Stream-GenericCloud-9-2.qcow2) = {H2}\n"
    )
    assert find_digest(text, "bsd", "CentOS-Stream-GenericCloud-9-2.qcow2", "sha256", "u") == H2


def test_bsd_ignores_other_algorithms() -> None:
    text = f"SHA512 (f.qcow2) = {H512}\nSHA256 (f.qcow2) = {H1.upper()}\n"
    assert find_digest(text, "bsd", "f.qcow2", "sha256", "u") == H1
    assert find_digest(text, "bsd", "f.qcow2", "sha512", "u") == H512


@pytest.mark.parametrize("sep", ["  ", " *", " "])
def test_gnu_text_and_binary_markers(sep: str) -> None:
    text = f"{H2}{sep}other.img\n{H1}{sep}ubuntu-24.04-server-cloudimg-amd64.img\n"
    assert find_digest(text, "gnu", "ubuntu-24.04-server-cloudimg-amd64.img", "sha256", "u") == H1


def test_single_bare_and_named() -> None:
    assert find_digest(f"{H512}\n", "single", "x.qcow2", "sha512", "u") == H512
    assert find_digest(f"{H1}  x.qcow2\n", "single", "x.qcow2", "sha256", "u") == H1
    with pytest.raises(VerificationError, match=r"u: no sha256 digest for x\.qcow2"):
        find_digest(f"{H1}  y.qcow2\n", "single", "x.qcow2", "sha256", "u")


def test_json_releases_simplestreams_and_base64_manifest() -> None:
    releases = [
        {"link": "https://h/p/f.qcow2", "sha256": H1, "arch": "x86_64"},
        {"link": "https://h/p/g.qcow2", "sha256": H2},
    ]
    assert find_digest(json.dumps(releases), "json", "g.qcow2", "sha256", "u") == H2
    streams = {
        "products": {
            "p": {
                "versions": {
                    "20240101": {
                        "items": {
                            "disk1.img": {
                                "path": "server/releases/noble/release-20240101/f.img",
                                "sha256": H1,
                            }
                        }
                    }
                }
            }
        }
    }
    assert find_digest(json.dumps(streams), "json", "f.img", "sha256", "u") == H1
    raw = bytes.fromhex(H512)
    manifest = {
        "items": [
            {
                "data": {"ref": "debian-12.qcow2"},
                "metadata": {
                    "annotations": {
                        "cloud.debian.org/digest": "sha512:" + base64.b64encode(raw).decode()
                    }
                },
            }
        ]
    }
    assert find_digest(json.dumps(manifest), "json", "debian-12.qcow2", "sha512", "u") == H512


def test_missing_ambiguous_and_malformed_are_refused() -> None:
    with pytest.raises(VerificationError, match=r"^https://x/SUMS: no sha256 digest for f \(gnu"):
        find_digest(f"{H1}  g\n", "gnu", "f", "sha256", "https://x/SUMS")
    with pytest.raises(VerificationError, match="several different digests for f"):
        find_digest(f"{H1}  f\n{H2}  f\n", "gnu", "f", "sha256", "u")
    with pytest.raises(VerificationError, match="malformed sha256 digest for f"):
        find_digest("abc123  f\n", "gnu", "f", "sha256", "u")
