"""Checking what publish signed and attached, with code nobody here wrote: skopeo
(containers/image, as CRI-O pulls) under a policy requiring the signatures, skopeo copying
the `sha256-<hex>.att` manifest and its layers out of the registry, and securesystemslib
(DSSE from its authors) checking each envelope's signature against a public key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer._key import SSlibKey

from kmi.demo import fixture as fixture_image

DSSE = "application/vnd.dsse.envelope.v1+json"


def attached(repository: str, digest: str, into: Path) -> list[tuple[str, dict[str, Any]]]:
    """(predicate type annotation, envelope) of each layer under `repository`'s (host/path)
    attestation tag of `digest`, copied out by skopeo."""
    algorithm, _, hexdigest = digest.partition(":")
    reference = f"docker://{repository}:{algorithm}-{hexdigest}.att"
    copy = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", reference, f"dir:{into}"]
    done = subprocess.run(copy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((into / "manifest.json").read_text())
    found = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == DSSE
        blob = into / layer["digest"].partition(":")[2]
        found.append((layer["annotations"]["predicateType"], json.loads(blob.read_bytes())))
    return found


def verified(envelope: dict[str, Any], public_pem: bytes) -> dict[str, Any]:
    """The in-toto statement of `envelope` once securesystemslib accepts its signature by
    the key (raises its VerificationError otherwise)."""
    found = SSlibKey.from_crypto(load_pem_public_key(public_pem))
    key = SSlibKey("", found.keytype, found.scheme, found.keyval)  # cosign's keyid: empty
    opened = Envelope.from_dict(json.loads(json.dumps(envelope)))
    assert opened.payload_type == "application/vnd.in-toto+json"
    opened.verify([key], 1)
    statement: dict[str, Any] = json.loads(opened.payload)
    return statement


def keypair(folder: Path, name: str, passphrase: str = "") -> tuple[Path, Path]:
    """An ECDSA P-256 key as `openssl genpkey` makes it (encrypted with `passphrase`), and
    its public key."""
    folder.mkdir(parents=True, exist_ok=True)
    key, public = folder / f"{name}.key", folder / f"{name}.pub"
    make = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    if passphrase:
        make += ["-aes-256-cbc", "-pass", f"pass:{passphrase}"]
    subprocess.run([*make, "-out", str(key)], check=True, capture_output=True)
    out = ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(public)]
    subprocess.run([*out, "-passin", f"pass:{passphrase}"], check=True, capture_output=True)
    return key, public


class Trixie:
    """Debian trixie's skopeo and cosign, in their own root (scripts/skopeo-root.sh), run
    through chroot; `folder` is this test's place inside that root."""

    def __init__(self, tmp_path: Path) -> None:
        if os.getuid() != 0:
            pytest.skip("the signature checks run trixie's clients through chroot: run as root")
        self.root = fixture_image.fixture("skopeo") / "root"
        self.inside = Path("/tmp") / tmp_path.name
        self.folder = self.root / self.inside.relative_to("/")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def policy(self, name: str, host: str, public: Path) -> list[str]:
        """Options for a policy that accepts only images under `host/kmi` signed by the key
        `public` (cosign signatures, read from the registry beside the image)."""
        folder = self.folder / name
        (folder / "registries.d").mkdir(parents=True)
        shutil.copyfile(public, folder / "key.pub")
        rules = {
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {
                    f"{host}/kmi": [
                        {
                            "type": "sigstoreSigned",
                            "keyPath": str(self.inside / name / "key.pub"),
                            "signedIdentity": {"type": "matchRepository"},
                        }
                    ]
                }
            },
        }
        (folder / "policy.json").write_text(json.dumps(rules))
        (folder / "registries.d" / "kmi.yaml").write_text(
            f"docker:\n  {host}:\n    use-sigstore-attachments: true\n"
        )
        inside = self.inside / name
        return ["--policy", f"{inside}/policy.json", "--registries.d", f"{inside}/registries.d"]

    def pull(self, options: list[str], reference: str) -> subprocess.CompletedProcess[str]:
        into = self.inside / f"pulled-{uuid.uuid4().hex[:8]}"
        copy = ["copy", "--quiet", "--remove-signatures", "--src-tls-verify=false"]
        return subprocess.run(
            ["chroot", str(self.root), "skopeo", *options, *copy, reference, f"oci:{into}"],
            capture_output=True,
            text=True,
        )

    def cosign(
        self, command: str, public: Path, reference: str, *args: str
    ) -> subprocess.CompletedProcess[str]:
        """`cosign <command> --key <public> ... <reference>` against the loopback registry
        (plain HTTP; kmi's signatures are in no transparency log)."""
        key = self.folder / f"cosign-{public.name}"
        shutil.copyfile(public, key)
        options = ["--allow-http-registry", "--insecure-ignore-tlog=true"]
        options += ["--key", str(self.inside / key.name), *args]
        return subprocess.run(
            ["chroot", str(self.root), "env", "HOME=/tmp", "cosign", command, *options, reference],
            capture_output=True,
            text=True,
        )

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
