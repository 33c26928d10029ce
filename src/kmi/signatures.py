"""OpenPGP verification with gpg against pinned primary-key fingerprints.

Keys are imported into a throw-away keyring; a signature counts only when gpg reports it
valid (VALIDSIG) and its key's fingerprint is pinned in the catalogue. For clear-signed
files only the signed text is returned, never what surrounds the signature block.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from kmi import tools
from kmi.errors import VerificationError


def _status(output: str) -> list[list[str]]:
    return [line.split()[1:] for line in output.splitlines() if line.startswith("[GNUPG:] ")]


def _signer(status: list[list[str]], pinned: Sequence[str], what: str) -> str:
    """The pinned fingerprint that made a valid signature, or a VerificationError."""
    words = {row[0] for row in status if row}
    if "BADSIG" in words:
        raise VerificationError(f"{what}: BAD signature; the file was altered or corrupted")
    valid = [row for row in status if row and row[0] == "VALIDSIG"]
    for row in valid:
        candidates = {row[1], row[-1]}  # signing (sub)key and primary key
        for fingerprint in pinned:
            if fingerprint in candidates:
                return fingerprint
    if valid:
        raise VerificationError(
            f"{what}: signed by key {valid[0][-1]}, which is not pinned "
            "(upstream.signature.fingerprints in the catalogue)"
        )
    missing = [row[-1] for row in status if row and row[0] == "NO_PUBKEY"]
    if missing:
        raise VerificationError(
            f"{what}: signed by unknown key {missing[0]}, not among upstream.signature.keys"
        )
    raise VerificationError(f"{what}: no valid OpenPGP signature found")


class Keyring:
    """A temporary gpg home holding the keys one flavor trusts."""

    def __init__(self, keys: Sequence[bytes], pinned: Sequence[str], what: str) -> None:
        if not pinned:
            raise VerificationError(
                f"{what}: no key fingerprints are pinned (upstream.signature.fingerprints); "
                "pin the upstream's signing keys, or set signature.kind: none if it signs nothing"
            )
        if not keys:
            raise VerificationError(f"{what}: no public keys given (upstream.signature.keys)")
        self.pinned = [p.upper() for p in pinned]
        self.what = what
        self._dir = tempfile.TemporaryDirectory(prefix="kmi-gpg-")
        self.home = Path(self._dir.name)
        self.home.chmod(0o700)
        for i, key in enumerate(keys):
            key_file = self.home / f"key-{i}.asc"
            key_file.write_bytes(key)
            self._gpg(["--import", str(key_file)])

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._dir.cleanup()

    def _gpg(self, args: list[str], ok: Sequence[int] = (0,)) -> tools.Result:
        base = ["--batch", "--yes", "--no-tty", "--no-autostart", "--homedir", str(self.home)]
        return tools.run(tools.GPG, [*base, "--status-fd", "1", *args], ok_codes=ok)

    def clearsigned(self, signed: bytes) -> tuple[str, str]:
        """The verified text of a clear-signed file and the pinned fingerprint that signed it."""
        if b"-----BEGIN PGP SIGNED MESSAGE-----" not in signed:
            raise VerificationError(f"{self.what}: not signed (no PGP signed message)")
        src, out = self.home / "signed.asc", self.home / "signed.txt"
        src.write_bytes(signed)
        result = self._gpg(["--output", str(out), "--decrypt", str(src)], ok=(0, 1, 2))
        fingerprint = _signer(_status(result.stdout), self.pinned, self.what)
        return out.read_text(encoding="utf-8", errors="replace"), fingerprint

    def detached(self, data: Path, signature: bytes) -> str:
        """The pinned fingerprint that made `signature` over the file `data`."""
        sig = self.home / "detached.sig"
        sig.write_bytes(signature)
        result = self._gpg(["--verify", str(sig), str(data)], ok=(0, 1, 2))
        return _signer(_status(result.stdout), self.pinned, self.what)
