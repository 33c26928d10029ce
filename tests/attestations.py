"""Reading back what publish attached, with code nobody here wrote: skopeo copies the
`sha256-<hex>.att` manifest and its layers out of the registry, and securesystemslib (DSSE
from its authors) checks each envelope's signature against a public key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer._key import SSlibKey

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
