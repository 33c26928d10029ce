"""docs:I and the release chart: written from the catalogue and the lock, parseable
manifests with the right reference, arch and user, and the committed copies never stale."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from kmi import docs
from kmi.catalogue import load_catalogue, targets_of
from kmi.demo.upstreams import environment
from kmi.lock import LockEntry
from tests.conftest import REPO, Project


def _blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.DOTALL)


def _entry(arch: str) -> LockEntry:
    return LockEntry(
        flavor="fedora",
        url=f"https://mirror.kmi.invalid/fedora/44/Fedora-Cloud-44-1.1.{arch}.qcow2",
        digest=f"sha256:{arch[:1] * 64}",
        size=1,
        release="44-1.1",
        found="2026-11-20T01:02:03Z",
        checksum_url="https://mirror.kmi.invalid/CHECKSUM",
        signed_by="B" * 40,
    )


@pytest.fixture
def fedora_doc() -> docs.ImageDoc:
    catalogue = load_catalogue(REPO / "distros")
    flavor = catalogue.flavor("fedora")
    version = next(v for v in flavor.versions if v.version == "44")
    targets = tuple(targets_of(flavor, (version,)))
    entries = {t.name: _entry(str(t.arch)) for t in targets if str(t.arch) != "s390x"}
    return docs.ImageDoc(
        image="fedora-44",
        flavor=flavor,
        targets=targets,
        entries=entries,
        repository="localhost:5000/kmi/fedora",
        tags=("44", "latest"),
        immutable="44-1.1",
        gated=False,
    )


def test_the_readme_manifests_parse_and_name_the_image_arch_and_user(
    fedora_doc: docs.ImageDoc,
) -> None:
    readme = docs.image_readme(fedora_doc)
    manifests = [yaml.safe_load(block) for block in _blocks(readme, "yaml")]
    kinds = [m["kind"] for m in manifests]
    assert kinds == ["VirtualMachine", "DataVolume", "DataVolume", "DataVolume"]
    vm = manifests[0]
    assert vm["apiVersion"] == "kubevirt.io/v1" and vm["metadata"]["name"] == "fedora-44"
    assert vm["spec"]["instancetype"] == {"name": "u1.medium"}
    assert vm["spec"]["preference"] == {"name": "fedora"}
    template = vm["spec"]["template"]["spec"]
    assert template["architecture"] == "amd64"
    volumes = {v["name"]: v for v in template["volumes"]}
    assert volumes["containerdisk"]["containerDisk"]["image"] == "localhost:5000/kmi/fedora:44"
    assert "# the default user is fedora" in volumes["cloudinit"]["cloudInitNoCloud"]["userData"]
    # the key comes from a Secret through the guest agent, as KubeVirt's accessCredentials do
    assert template["accessCredentials"] == [
        {
            "sshPublicKey": {
                "source": {"secret": {"secretName": docs.SECRET}},
                "propagationMethod": {"qemuGuestAgent": {"users": ["fedora"]}},
            }
        }
    ]
    for dv, arch in zip(manifests[1:], ("amd64", "arm64", "s390x"), strict=True):
        assert dv["apiVersion"] == "cdi.kubevirt.io/v1beta1"
        assert dv["metadata"]["name"] == f"fedora-44-{arch}"
        registry = dv["spec"]["source"]["registry"]
        assert registry == {
            "url": "docker://localhost:5000/kmi/fedora:44",
            "platform": {"architecture": arch},
        }
    secret, virtctl, verify = _blocks(readme, "sh")
    assert secret.startswith(f"kubectl create secret generic {docs.SECRET} --from-file=")
    assert "cosign verify --insecure-ignore-tlog --key kmi.pub localhost:5000/kmi/fedora:44" in (
        verify
    )
    assert "--type slsaprovenance1 localhost:5000/kmi/fedora@$digest" in verify
    assert 'select(.platform.architecture == "amd64")' in verify
    assert "--volume-containerdisk src:localhost:5000/kmi/fedora:44" in virtctl
    assert "--user fedora" in virtctl and "--preference fedora" in virtctl
    assert "| tags | `44`, `latest`, `44-1.1` |" in readme
    assert "| default user | `fedora` (cloud-init) |" in readme
    assert f"| boot test | {docs.UNTESTED} |" in readme
    assert f"| amd64 | <{_entry('amd64').url}> | `sha256:{'a' * 64}` | 44-1.1 | 2026-11-20 |" in (
        readme
    )
    assert "| s390x | not pinned yet (`doit discover:fedora`) | | | | |" in readme


def test_the_readme_says_what_the_tier_requires(fedora_doc: docs.ImageDoc) -> None:
    stable = dataclasses.replace(
        fedora_doc,
        flavor=dataclasses.replace(
            fedora_doc.flavor,
            tier="stable",
            test=dataclasses.replace(fedora_doc.flavor.test, waive={"root-grows": "fixed root"}),
        ),
        required=frozenset({"signature", "metadata", "ssh"}),
    )
    readme = docs.image_readme(stable)
    assert "| signature | required: passed by every published build" in readme
    assert "| root-grows | waived: fixed root |" in readme
    assert "| network | checked and recorded, not required by this tier |" in readme
    assert "Not checked by any machine: that the licence named" in readme
    assert "Every build is signed (its tier requires it)" in readme
    assert "Where the publisher signs" in docs.image_readme(fedora_doc)


def test_an_arch_preference_is_used_for_that_arch(fedora_doc: docs.ImageDoc) -> None:
    arm64 = next(t for t in fedora_doc.targets if str(t.arch) == "arm64")
    vm = yaml.safe_load(docs.virtual_machine(fedora_doc, arm64))
    assert vm["spec"]["preference"] == {"name": "fedora.arm64"}
    assert vm["spec"]["template"]["spec"]["architecture"] == "arm64"


def test_the_release_chart_matches_the_catalogue() -> None:
    catalogue = load_catalogue(REPO / "distros")
    targets = [t for f in catalogue.flavors for t in targets_of(f)]
    chart = docs.release_chart(catalogue, targets)
    rows = [line for line in chart.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["flavor", "tier", "amd64", "arm64", "s390x"]
    seen = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        seen[cells[0]] = cells
    assert set(seen) == {f.name for f in catalogue.flavors}
    for flavor in catalogue.flavors:
        cells = seen[flavor.name]
        assert cells[1] == flavor.tier
        for arch, cell in zip(header[2:], cells[2:], strict=True):
            versions = [v.version for v in flavor.versions if arch in flavor.arches_of(v)]
            assert re.findall(r"\[([^]]+)\]", cell) == versions, (flavor.name, arch)
            if not versions:
                assert cell == "—"
    tiers = [seen[name][1] for name in seen]
    assert tiers == sorted(tiers, key=docs.TIER_ORDER.index)  # stable first, planned last


def test_the_committed_docs_are_what_doit_docs_writes(tmp_path: Path) -> None:
    """docs/images/ is generated: regenerate it from the repository's catalogue and lock."""
    offline = "http://127.0.0.1:9"  # docs never touch the network
    env = environment(REPO / "distros", tmp_path, offline, KMI_DOCS_DIR=str(tmp_path / "d"))
    run = Project(tmp_path, REPO / "distros", env).doit("docs")
    assert run.code == 0, run.out
    made = {p.name: p.read_text() for p in (tmp_path / "d").iterdir()}
    committed = {p.name: p.read_text() for p in (REPO / "docs" / "images").iterdir()}
    assert sorted(made) == sorted(committed), "run: doit docs, and commit docs/images"
    stale = [name for name in made if made[name] != committed[name]]
    assert stale == [], f"stale: {stale}; run: doit docs, and commit docs/images"
    images = {
        f"{t.image}.md" for f in load_catalogue(REPO / "distros").flavors for t in targets_of(f)
    }
    assert set(made) == images | {"release-chart.md"}


def test_docs_rerun_only_when_their_text_changes(project: Project) -> None:
    first = project.doit("docs:debian-12", "docs:release-chart")
    assert first.code == 0 and first.ran() == {"docs:debian-12", "docs:release-chart"}
    again = project.doit("docs:debian-12", "docs:release-chart")
    assert again.code == 0 and again.ran() == set(), again.out
    readme = project.work / "docs" / "images" / "debian-12.md"
    assert "`<registry>/debian`" in readme.read_text()
    moved = project.doit("docs:debian-12", KMI_REGISTRY="registry.kmi.invalid:5000/vms")
    assert moved.ran() == {"docs:debian-12"}
    assert "image: registry.kmi.invalid:5000/vms/debian:12" in readme.read_text()


def test_the_readme_says_how_upstream_bytes_were_verified(tmp_path: Path) -> None:
    catalogue = load_catalogue(REPO / "distros")
    said = {}
    for name in ("debian", "fedora", "alpine"):
        flavor = catalogue.flavor(name)
        targets = tuple(targets_of(flavor, flavor.versions[:1]))
        doc = docs.ImageDoc(name, flavor, targets, {}, "r/x", ("1",), "", False)
        said[name] = docs.image_readme(doc)
    assert (
        "**Unsigned upstream** (Debian's cloud image publishing writes SHA512SUMS and "
        in (said["debian"])
    )
    assert "trust rests on HTTPS and that checksum" in said["debian"]
    assert (
        "and the checksum file against its OpenPGP signature by the pinned key" in (said["fedora"])
    )
    assert "and the image itself against its OpenPGP signature" in said["alpine"]
    assert "Unsigned" not in said["fedora"] + said["alpine"]
