"""The real upstream keys kept in distros/keys/: every pinned fingerprint is computed from a
key file the catalogue lists, and every file is the one its provenance row describes."""

from __future__ import annotations

import hashlib
import re

import pytest

from kmi.catalogue import Flavor, load_catalogue
from kmi.signatures import Keyring
from tests.conftest import REPO

CATALOGUE = load_catalogue(REPO / "distros")
SIGNED = [f for f in CATALOGUE.flavors if f.upstream.signature.kind != "none"]
UNPINNED = {"alpine"}  # its key file could not be found offline: see distros/keys/README.md


def primaries(flavor: Flavor) -> set[str]:
    keys = [(flavor.source.parent / k).read_bytes() for k in flavor.upstream.signature.keys]
    with Keyring(keys, flavor.name) as ring:
        listing = ring._gpg(["--with-colons", "--list-keys"]).stdout.splitlines()
    found, primary = set(), False
    for line in listing:
        if line.startswith(("pub:", "sub:")):
            primary = line.startswith("pub:")
        elif line.startswith("fpr:") and primary:
            found.add(line.split(":")[9])
    return found


@pytest.mark.parametrize("flavor", SIGNED, ids=[f.name for f in SIGNED])
def test_every_pinned_fingerprint_is_a_primary_key_in_its_files(flavor: Flavor) -> None:
    sig = flavor.upstream.signature
    pinned = set(sig.fingerprints) | {f for fps in sig.per_version.values() for f in fps}
    if flavor.name in UNPINNED:
        assert pinned == set() and sig.keys == ()
        return
    assert pinned, f"{flavor.name}: nothing pinned"
    missing = pinned - primaries(flavor)
    assert missing == set(), f"{flavor.name}: pinned but in no key file: {sorted(missing)}"


@pytest.mark.parametrize("flavor", SIGNED, ids=[f.name for f in SIGNED])
def test_every_maintained_version_has_a_pinned_key(flavor: Flavor) -> None:
    if flavor.name in UNPINNED:
        return
    for version in flavor.versions:
        assert flavor.upstream.signature.pins(version.version, flavor.name).fingerprints


def test_fedora_pins_one_key_per_release() -> None:
    sig = CATALOGUE.flavor("fedora").upstream.signature
    assert sig.fingerprints == ()
    assert sorted(sig.per_version) == ["43", "44", "45"]
    assert len({fps for fps in sig.per_version.values()}) == 3


def test_arch_signs_with_a_subkey_of_the_pinned_key() -> None:
    flavor = CATALOGUE.flavor("archlinux")
    keys = [(flavor.source.parent / k).read_bytes() for k in flavor.upstream.signature.keys]
    with Keyring(keys, "archlinux") as ring:
        every = ring.fingerprints()
    assert "656E4C5AC1CC3B86E539D97E343635A6859A9174" in every  # the signing subkey
    assert "656E4C5AC1CC3B86E539D97E343635A6859A9174" not in primaries(flavor)


def test_each_key_file_is_the_one_its_provenance_row_names() -> None:
    readme = (REPO / "distros" / "keys" / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", readme, re.MULTILINE)
    files = sorted(p.name for p in (REPO / "distros" / "keys").iterdir() if p.name != "README.md")
    assert sorted(name for name, _ in rows) == files
    for name, digest in rows:
        data = (REPO / "distros" / "keys" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
    listed = {k for f in SIGNED for k in f.upstream.signature.keys}
    assert listed == {f"keys/{name}" for name in files}
