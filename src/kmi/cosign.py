"""Signatures the way cosign makes and stores them, so that cosign, containers/image (CRI-O,
podman, skopeo) and sigstore's policy controller can check what kmi publishes.

A signature is a small JSON payload ("simple signing": the repository and the manifest
digest it vouches for) signed with the publisher's private key; it is stored in the image's
own repository as one layer of an OCI manifest tagged `sha256-<hex>.sig`, the base64 signature
in the layer's `dev.cosignproject.cosign/signature` annotation. Several signatures of one
digest (another key, a key rotation) are several layers of that manifest.

An attestation (`cosign attest`) is an in-toto statement about the digest (its subject)
carrying a predicate (an SPDX document, SLSA provenance), wrapped in a DSSE envelope signed
with the same key; the envelope is one layer of a manifest tagged `sha256-<hex>.att`, the
layer annotated with its `predicateType` (and an empty signature annotation: the signature
is inside the envelope).

The key is a PEM private key (ECDSA P-256, what `cosign generate-key-pair` makes, or RSA),
optionally encrypted with a passphrase; openssl signs (SHA-256; DER ECDSA or PKCS#1 v1.5
RSA, as sigstore verifies them). The passphrase reaches openssl on its standard input, never
on a command line or in a log.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmi import oci, tools
from kmi.errors import KmiError

if TYPE_CHECKING:
    from kmi.registry import Client

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
OPENSSL = tools.Tool("openssl", "openssl", "openssl", "to sign what publish pushes")
MAX_PAYLOAD = 1 << 20  # a simple-signing payload is a few hundred bytes
DSSE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "predicateType"  # the layer annotation cosign writes beside an attestation
SPDX = "https://spdx.dev/Document"  # cosign's predicate type for an SPDX JSON document
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
MAX_ATTESTATION = 64 << 20  # an SBOM of thousands of packages is a few MB


def payload(identity: str, digest: str) -> bytes:
    """The simple-signing payload for `digest` in repository `identity` (host/path, no tag:
    kmi signs digests and moves tags, as `cosign sign` does)."""
    return oci.canonical(
        {
            "critical": {
                "identity": {"docker-reference": identity},
                "image": {"docker-manifest-digest": digest},
                "type": SIGNATURE_TYPE,
            },
            "optional": None,
        }
    )


def signature_tag(digest: str) -> str:
    """Where cosign keeps the signatures of `digest`: `sha256-<hex>.sig`."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.sig"


def attestation_tag(digest: str) -> str:
    """Where cosign keeps the attestations of `digest`: `sha256-<hex>.att`."""
    return signature_tag(digest).removesuffix(".sig") + ".att"


def statement(identity: str, digest: str, predicate_type: str, predicate: Any) -> bytes:
    """The in-toto statement that `predicate` is about manifest `digest` of `identity`."""
    algorithm, _, hexdigest = digest.partition(":")
    return oci.canonical(
        {
            "_type": STATEMENT,
            "subject": [{"name": identity, "digest": {algorithm: hexdigest}}],
            "predicateType": predicate_type,
            "predicate": predicate,
        }
    )


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signatures sign."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def envelope(body: bytes, signer: Signer) -> bytes:
    """`body` (an in-toto statement) in a DSSE envelope signed by `signer`."""
    signature = signer.sign(pae(IN_TOTO, body))
    return oci.canonical(
        {
            "payload": base64.b64encode(body).decode(),
            "payloadType": IN_TOTO,
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
    )


def opened(data: bytes, public_pem: bytes) -> dict[str, Any] | None:
    """The statement a DSSE envelope holds when one of its signatures verifies with the key
    `public_pem`; None for anything else (another key, a torn or foreign envelope)."""
    try:
        found = json.loads(data)
        if found["payloadType"] != IN_TOTO:
            return None
        body = base64.b64decode(found["payload"], validate=True)
        marks = [base64.b64decode(s["sig"], validate=True) for s in found["signatures"]]
        signed = pae(IN_TOTO, body)
        if not any(verifies(public_pem, signed, mark) for mark in marks):
            return None
        made = json.loads(body)
        return made if isinstance(made, dict) else None
    except (ValueError, TypeError, KeyError):
        return None


def _about(made: dict[str, Any], digest: str) -> bool:
    """Whether a statement's subjects include `digest`."""
    algorithm, _, hexdigest = digest.partition(":")
    subjects = made.get("subject")
    return isinstance(subjects, list) and any(
        isinstance(s, dict)
        and isinstance(s.get("digest"), dict)
        and s["digest"].get(algorithm) == hexdigest
        for s in subjects
    )


@dataclass(frozen=True)
class Signer:
    """The publisher's key (KMI_SIGNING_KEY, KMI_SIGNING_PASSWORD)."""

    key: Path
    password: str = field(default="", repr=False)

    def _openssl(self, args: list[str], what: str) -> tools.Result:
        stdin = (self.password + "\n").encode()
        OPENSSL.path()  # a missing openssl is its own one-line error
        try:
            return tools.run(OPENSSL, [args[0], "-passin", "stdin", *args[1:]], stdin=stdin)
        except KmiError as err:
            said = str(err).splitlines()
            detail = next((line.strip() for line in said[1:] if line.strip()), said[0])
            raise KmiError(
                f"KMI_SIGNING_KEY={self.key}: openssl could not {what} ({detail}); give "
                "a PEM private key (ECDSA P-256 or RSA) and, if it is encrypted, its passphrase "
                "in KMI_SIGNING_PASSWORD"
            ) from None

    def public_pem(self) -> bytes:
        """The public key, PEM: what verifiers are given (`cosign verify --key`)."""
        if not self.key.is_file():
            raise KmiError(
                f"KMI_SIGNING_KEY={self.key}: no such file; give the PEM private key publish "
                'signs with (see README, "Signed images"), or unset it to publish unsigned'
            )
        found = self._openssl(["pkey", "-in", str(self.key), "-pubout"], "read it")
        text = found.stdout
        kind = tools.run(OPENSSL, ["pkey", "-pubin", "-noout", "-text"], stdin=text.encode())
        head = kind.stdout.lower()
        if not ("public-key: (" in head and ("modulus" in head or "prime256v1" in head)):
            first = kind.stdout.splitlines()[0] if kind.stdout else ""
            named = first.split("Public-Key")[0].strip() or "another kind of"
            raise KmiError(
                f"KMI_SIGNING_KEY={self.key}: an {named} key; kmi signs with ECDSA P-256 "
                "(`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`) or RSA keys"
            )
        return text.encode()

    def sign(self, data: bytes) -> bytes:
        """A DER signature of SHA-256(data)."""
        with tempfile.TemporaryDirectory(prefix="kmi-sign-") as tmp:
            message, signature = Path(tmp) / "payload", Path(tmp) / "signature"
            message.write_bytes(data)
            args = ["dgst", "-sha256", "-sign", str(self.key), "-out", str(signature)]
            self._openssl([*args, str(message)], "sign with it")
            return signature.read_bytes()


def verifies(public_pem: bytes, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is a signature of `data` by the key `public_pem` (openssl)."""
    with tempfile.TemporaryDirectory(prefix="kmi-verify-") as tmp:
        key, message, sig = Path(tmp) / "key.pem", Path(tmp) / "payload", Path(tmp) / "sig"
        key.write_bytes(public_pem)
        message.write_bytes(data)
        sig.write_bytes(signature)
        args = ["dgst", "-sha256", "-verify", str(key), "-signature", str(sig), str(message)]
        return tools.run(OPENSSL, args, ok_codes=(0, 1)).exit_code == 0


def _fetch(
    client: Client, repository: str, desc: oci.Descriptor, limit: int = MAX_PAYLOAD
) -> bytes | None:
    """A small blob's bytes when the registry has them as described; else None."""
    if desc.size > limit:
        return None
    out = io.BytesIO()
    size, hexdigest = client.get_blob(repository, desc.digest, out, lambda n: None)
    if size != desc.size or f"sha256:{hexdigest}" != desc.digest:
        return None
    return out.getvalue()


def _layers(data: bytes | None) -> list[oci.Descriptor]:
    """The layers of a signature manifest ([] for none, or for one kmi cannot read)."""
    if data is None:
        return []
    try:
        found = json.loads(data)
        return [oci.Descriptor.from_json(layer) for layer in found.get("layers") or []]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


def sign_digest(
    client: Client,
    repository: str,
    identity: str,
    digest: str,
    signer: Signer,
    public_pem: bytes,
) -> bool:
    """Make sure `digest` in `repository` carries a signature by the signer's key: nothing is
    sent when one is there (checked against the key, not trusted from its tag); else a new
    signature is added to what the tag holds (others' signatures are kept). True when it
    signed now."""
    tag = signature_tag(digest)
    message = payload(identity, digest)
    layers = _layers(client.get_manifest(repository, tag))
    for layer in layers:
        mark = layer.annotations.get(SIGNATURE_ANNOTATION, "")
        if layer.media_type != SIMPLE_SIGNING or not mark:
            continue
        body = _fetch(client, repository, layer)
        if body is None or _vouches_for(body) != digest:
            continue
        try:
            theirs = base64.b64decode(mark, validate=True)
        except ValueError:
            continue
        if verifies(public_pem, body, theirs):
            return False
    mine = oci.Descriptor(
        SIMPLE_SIGNING,
        oci.sha256_of(message),
        len(message),
        annotations={SIGNATURE_ANNOTATION: base64.b64encode(signer.sign(message)).decode()},
    )
    # another key's signature of the same payload is a layer with the same blob: kept
    _add_layer(client, repository, tag, layers, mine, message)
    return True


def attest_digest(
    client: Client,
    repository: str,
    identity: str,
    digest: str,
    predicate_type: str,
    predicate: Any,
    signer: Signer,
    public_pem: bytes,
) -> bool:
    """Make sure `digest` carries an attestation of `predicate_type` signed by the signer's
    key, as `cosign attest` attaches one: nothing is sent when one is there (its envelope
    checked against the key and its subject against the digest); else this one is added
    beside what the tag holds. True when it attested now."""
    tag = attestation_tag(digest)
    layers = _layers(client.get_manifest(repository, tag))
    for layer in layers:
        if layer.media_type != DSSE or layer.annotations.get(PREDICATE_TYPE) != predicate_type:
            continue
        body = _fetch(client, repository, layer, MAX_ATTESTATION)
        made = None if body is None else opened(body, public_pem)
        if (
            made is not None
            and made.get("predicateType") == predicate_type
            and _about(made, digest)
        ):
            return False
    data = envelope(statement(identity, digest, predicate_type, predicate), signer)
    mine = oci.Descriptor(
        DSSE,
        oci.sha256_of(data),
        len(data),
        annotations={SIGNATURE_ANNOTATION: "", PREDICATE_TYPE: predicate_type},
    )
    _add_layer(client, repository, tag, layers, mine, data)
    return True


def _add_layer(
    client: Client,
    repository: str,
    tag: str,
    layers: list[oci.Descriptor],
    mine: oci.Descriptor,
    data: bytes,
) -> None:
    """Put `mine` (bytes `data`) after `layers` in the manifest tagged `tag`."""
    layers = [*layers, mine]
    config = oci.canonical(_config([layer.digest for layer in layers]))
    config_desc = oci.Descriptor(oci.CONFIG, oci.sha256_of(config), len(config))
    for blob, content in ((mine, data), (config_desc, config)):
        _put_small_blob(client, repository, blob.digest, content)
    manifest = oci.canonical(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
    )
    client.put_manifest(repository, tag, manifest, oci.MANIFEST)


def _vouches_for(body: bytes) -> str | None:
    """The manifest digest a simple-signing payload names, if it is one."""
    try:
        found = json.loads(body)
        critical = found["critical"]
        if critical["type"] != SIGNATURE_TYPE:
            return None
        return str(critical["image"]["docker-manifest-digest"])
    except (ValueError, TypeError, KeyError):
        return None


def _config(diff_ids: list[str]) -> dict[str, Any]:
    """The image config of a signature manifest, as cosign writes it (no OS, no arch)."""
    return {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


def _put_small_blob(client: Client, repository: str, digest: str, data: bytes) -> None:
    if client.has_blob(repository, digest):
        return
    with tempfile.TemporaryDirectory(prefix="kmi-blob-") as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(data)
        client.upload(repository, digest, path, lambda n: None)
