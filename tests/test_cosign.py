"""publish signs what it pushes as cosign does; skopeo (containers/image, the library CRI-O
pulls with) checks the signatures against a policy.json requiring them, as a cluster's nodes
would. The images are test_publish's small synthetic ones, pushed to docker-registry on
loopback behind the recording proxy."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from securesystemslib.exceptions import VerificationError

from kmi import cosign
from tests import attestations
from tests.attestations import Trixie, keypair
from tests.test_publish import Setup, setup  # noqa: F401 (the fixture)

PASSPHRASE = "correct horse battery staple"


def test_published_images_are_signed_and_skopeo_checks_them(setup: Setup, tmp_path: Path) -> None:  # noqa: F811
    key, public = keypair(tmp_path / "keys", "kmi", PASSPHRASE)
    _, stranger = keypair(tmp_path / "keys", "stranger")
    project = setup.project
    unsigned = project.doit("publish:twin-12")  # no key: published, not signed
    assert unsigned.code == 0, unsigned.out
    signing = {"KMI_SIGNING_KEY": str(key), "KMI_SIGNING_PASSWORD": PASSPHRASE}
    run = project.doit("publish:fixture-12", **signing)
    assert run.code == 0, run.out
    assert "fixture-12: signed 2 manifest(s) as cosign does" in run.out
    assert PASSPHRASE not in run.out
    assert setup.results()["fixture-12"]["signed"] == 2
    host = setup.proxy.host
    index = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", setup.ref("fixture", "12")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    arch_digest = index["manifests"][0]["digest"]
    # the per-arch image's provenance: attached as cosign attaches an attestation, its
    # envelope signed by the key (securesystemslib checks it); no SBOM for a synthetic disk
    assert "fixture-12-amd64: no SBOM of this disk; none attached" in run.out
    assert "fixture-12: attached 1 signed attestation(s)" in run.out
    assert setup.results()["fixture-12"]["attested"] == 1
    ((kind, envelope),) = attestations.attached(
        f"{host}/kmi/fixture", arch_digest, tmp_path / "att"
    )
    assert kind == "https://slsa.dev/provenance/v1"
    statement = attestations.verified(envelope, public.read_bytes())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [
        {"name": f"{host}/kmi/fixture", "digest": {"sha256": arch_digest.split(":")[1]}}
    ]
    assert statement["predicateType"] == kind
    made = statement["predicate"]
    lock = json.loads((project.catalogue / "lock.json").read_text())
    pinned = next(e for e in lock["targets"].values() if e["flavor"] == "fixture")
    (upstream,) = made["buildDefinition"]["resolvedDependencies"]
    assert upstream["uri"] == pinned["url"]
    assert upstream["digest"] == dict([pinned["digest"].split(":")])
    assert upstream["annotations"]["signedBy"] == pinned["signed_by"]
    external = made["buildDefinition"]["externalParameters"]
    assert external["target"] == "fixture-12-amd64" and external["arch"] == "amd64"
    assert (
        external["catalogue"]["digest"]["sha256"]
        == hashlib.sha256((project.catalogue / "fixture.yaml").read_bytes()).hexdigest()
    )
    assert made["runDetails"]["builder"]["version"]["kmi"]
    with pytest.raises(VerificationError):
        attestations.verified(envelope, stranger.read_bytes())
    skopeo = Trixie(tmp_path)
    trusting = skopeo.policy("trusting", host, public)
    # by tag (the index's signature) and by the per-arch digest (its own signature)
    for reference in (setup.ref("fixture", "12"), f"docker://{host}/kmi/fixture@{arch_digest}"):
        pulled = skopeo.pull(trusting, reference)
        assert pulled.returncode == 0, pulled.stderr
    refused = skopeo.pull(skopeo.policy("wary", host, stranger), setup.ref("fixture", "12"))
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr
    bare = skopeo.pull(trusting, setup.ref("twin", "12"))
    assert bare.returncode != 0 and "signature" in bare.stderr.lower(), bare.stderr
    # cosign itself (Debian 13's): the signatures of the index and of the per-arch image,
    # and the provenance attestation, verify with the key and not with another
    per_arch = f"{host}/kmi/fixture@{arch_digest}"
    for reference in (f"{host}/kmi/fixture:12", per_arch):
        verified = skopeo.cosign("verify", public, reference)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    provenance = skopeo.cosign("verify-attestation", public, per_arch, "--type", "slsaprovenance1")
    assert provenance.returncode == 0, provenance.stdout + provenance.stderr
    (line,) = provenance.stdout.splitlines()
    told = json.loads(base64.b64decode(json.loads(line)["payload"]))
    assert told == statement
    wrong = skopeo.cosign("verify", stranger, f"{host}/kmi/fixture:12")
    assert wrong.returncode != 0, wrong.stdout
    bare_cosign = skopeo.cosign("verify", public, f"{host}/kmi/twin:12")
    assert bare_cosign.returncode != 0, bare_cosign.stdout
    assert "no signatures found" in bare_cosign.stderr, bare_cosign.stderr
    # again: a signature by this key is there (checked, not trusted from its tag): nothing
    # is written to the registry
    setup.proxy.reset()
    again = project.doit("publish:fixture-12", **signing)
    assert again.code == 0, again.out
    assert "fixture-12: its 2 manifest(s) are already signed by this key" in again.out
    assert "signed attestation" not in again.out  # the provenance by this key is there too
    assert {s.method for s in setup.proxy.seen} <= {"HEAD", "GET"}
    assert setup.results()["fixture-12"]["signed"] == 0
    # another key signs too (a rotation): both signatures are kept, each policy accepts it
    other, other_public = keypair(tmp_path / "keys", "next")
    rotated = project.doit("publish:fixture-12", KMI_SIGNING_KEY=str(other))
    assert rotated.code == 0, rotated.out
    for n, trusted in enumerate((public, other_public)):
        accepted = skopeo.pull(
            skopeo.policy(f"after{n}", host, trusted), setup.ref("fixture", "12")
        )
        assert accepted.returncode == 0, accepted.stderr
    skopeo.close()


def test_a_wrong_passphrase_stops_publish_before_anything_is_pushed(
    setup: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    key, _ = keypair(tmp_path / "keys", "kmi", PASSPHRASE)
    run = setup.project.doit(
        "publish:fixture-12", KMI_SIGNING_KEY=str(key), KMI_SIGNING_PASSWORD="not it"
    )
    assert run.code == 1, run.out
    assert f"KMI_SIGNING_KEY={key}: openssl could not read it (" in run.out
    assert "not it" not in run.out and "Traceback" not in run.out
    assert not [s for s in setup.proxy.seen if s.method in ("PUT", "POST", "PATCH")]


@pytest.mark.parametrize(
    ("digest", "tag"),
    [("sha256:" + "ab" * 32, "sha256-" + "ab" * 32 + ".sig")],
)
def test_the_payload_and_tag_are_cosigns(digest: str, tag: str) -> None:
    assert cosign.signature_tag(digest) == tag
    assert json.loads(cosign.payload("example.invalid/kmi/fixture", digest)) == {
        "critical": {
            "identity": {"docker-reference": "example.invalid/kmi/fixture"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }


def test_a_stable_flavor_is_refused_until_its_criteria_pass(setup: Setup, tmp_path: Path) -> None:  # noqa: F811
    """The tier's criteria gate publish (here only the signature: a synthetic disk has no
    package database for the SBOM the static criteria read, and does not boot; the real
    fixture meets every criterion in test_sysprep_real); a waiver with its reason lifts one;
    a bad list is one line."""
    key, _ = keypair(tmp_path / "keys", "kmi")
    flavor = setup.project.catalogue / "fixture.yaml"
    flavor.write_text(flavor.read_text().replace("tier: preview", "tier: stable"))
    only = {"KMI_STABLE_CRITERIA": "signature"}
    refused = setup.project.doit("publish:fixture-12", **only)
    assert refused.code != 0
    assert "verify:fixture-12-amd64" not in refused.ran()  # no criterion of verify's asked
    assert (
        "fixture-12: not published: its tier, stable, requires criteria fixture-12-amd64 has "
        "not passed: signature (KMI_SIGNING_KEY is not set: publish would not sign); see "
        'README, "Support tiers" (waive one in '
    ) in refused.out, refused.out
    assert setup.proxy.blob_bytes() == 0 and "Traceback" not in refused.out
    waived = flavor.read_text().replace("test:\n", 'test:\n  waive:\n    signature: "a test"\n')
    flavor.write_text(waived)
    lifted = setup.project.doit("publish:fixture-12", **only)
    assert lifted.code == 0, lifted.out
    flavor.write_text(waived.replace('  waive:\n    signature: "a test"\n', ""))
    signed = setup.project.doit("publish:fixture-12", **only, KMI_SIGNING_KEY=str(key))
    assert signed.code == 0, signed.out
    bad = setup.project.doit("publish:fixture-12", KMI_STABLE_CRITERIA="all,-signatures")
    assert bad.code != 0
    assert (
        bad.out.strip()
        .splitlines()[-1]
        .startswith(
            "ERROR: KMI_STABLE_CRITERIA='all,-signatures': '-signatures' is no criterion; use all"
        )
    ), bad.out
