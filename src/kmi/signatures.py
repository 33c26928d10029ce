"""OpenPGP verification with gpg against pinned primary-key fingerprints.

Keys are imported into a throw-away keyring; a signature counts only when gpg reports it
valid (VALIDSIG), its primary key's fingerprint is pinned for the version being verified,
neither key is revoked, and it was made before its key expired. gpg still prints VALIDSIG
for a revoked or expired key, so those status lines are read too. For clear-signed files
only the signed text is returned, never what surrounds the signature block.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kmi import tools
from kmi.errors import VerificationError


@dataclass(frozen=True)
class Pins:
    """The fingerprints trusted for one version, and the other versions' pins (to say why a
    key pinned elsewhere is refused here)."""

    version: str
    fingerprints: tuple[str, ...]
    elsewhere: tuple[tuple[str, str], ...] = ()  # (fingerprint, version) pinned for others

    def pinned_for(self, fingerprint: str) -> list[str]:
        return [v for f, v in self.elsewhere if f == fingerprint]


def _status(output: str) -> list[list[str]]:
    return [line.split()[1:] for line in output.splitlines() if line.startswith("[GNUPG:] ")]


def _day(timestamp: str) -> str:
    when = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return when.strftime("%Y-%m-%d")


def _lifecycle(status: list[list[str]], signed_at: str, key: str, what: str) -> None:
    """Refuse a signature by a revoked key, or one made after its key expired."""
    words = {row[0] for row in status if row}
    if words & {"REVKEYSIG", "KEYREVOKED"}:
        raise VerificationError(f"{what}: signed by key {key}, which is revoked; refusing it")
    if "EXPSIG" in words:
        raise VerificationError(f"{what}: the signature by key {key} has expired; refusing it")
    expiries = [row[1] for row in status if row[0] == "KEYEXPIRED" and row[1:2]]
    if "EXPKEYSIG" in words or expiries:
        expired = min((e for e in expiries if e.isdigit()), key=int, default="0")
        if not signed_at.isdigit() or int(signed_at) >= int(expired):
            raise VerificationError(
                f"{what}: signed by key {key} on {_day(signed_at) if signed_at.isdigit() else '?'}"
                f", after it expired on {_day(expired)}; refusing it"
            )


def _signer(status: list[list[str]], pins: Pins, what: str) -> str:
    """The pinned fingerprint that made a valid signature, or a VerificationError."""
    words = {row[0] for row in status if row}
    if "BADSIG" in words:
        raise VerificationError(f"{what}: BAD signature; the file was altered or corrupted")
    valid = [row for row in status if row and row[0] == "VALIDSIG" and len(row) >= 4]
    for row in valid:
        primary = row[-1]
        if primary in pins.fingerprints or row[1] in pins.fingerprints:
            _lifecycle(status, row[3], primary, what)
            return primary if primary in pins.fingerprints else row[1]
    if valid:
        key = valid[0][-1]
        others = pins.pinned_for(key)
        where = f" (it is pinned for {', '.join(others)})" if others else ""
        raise VerificationError(
            f"{what}: signed by key {key}, which is not pinned for version {pins.version}"
            f"{where}; see upstream.signature in the catalogue"
        )
    missing = [row[-1] for row in status if row and row[0] == "NO_PUBKEY"]
    if missing:
        raise VerificationError(
            f"{what}: signed by unknown key {missing[0]}, not among upstream.signature.keys"
        )
    raise VerificationError(f"{what}: no valid OpenPGP signature found")


class Keyring:
    """A temporary gpg home holding the keys one flavor trusts."""

    def __init__(self, keys: Sequence[bytes], what: str) -> None:
        if not keys:
            raise VerificationError(f"{what}: no public keys given (upstream.signature.keys)")
        self.what = what
        self._dir = tempfile.TemporaryDirectory(prefix="kmi-gpg-")
        self.home = Path(self._dir.name)
        self.home.chmod(0o700)
        for i, key in enumerate(keys):
            key_file = self.home / f"key-{i}.asc"
            key_file.write_bytes(key)
            self._gpg(["--import", str(key_file)], ok=(0, 1, 2))

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._dir.cleanup()

    def _gpg(self, args: list[str], ok: Sequence[int] = (0,)) -> tools.Result:
        base = ["--batch", "--yes", "--no-tty", "--no-autostart", "--homedir", str(self.home)]
        return tools.run(tools.GPG, [*base, "--status-fd", "1", *args], ok_codes=ok)

    def fingerprints(self) -> set[str]:
        """Every primary and subkey fingerprint in the keyring."""
        listing = self._gpg(["--with-colons", "--with-subkey-fingerprints", "--list-keys"])
        return {
            line.split(":")[9] for line in listing.stdout.splitlines() if line.startswith("fpr:")
        }

    def clearsigned(self, signed: bytes, pins: Pins) -> tuple[str, str]:
        """The verified text of a clear-signed file and the pinned fingerprint that signed it."""
        if b"-----BEGIN PGP SIGNED MESSAGE-----" not in signed:
            raise VerificationError(f"{self.what}: not signed (no PGP signed message)")
        src, out = self.home / "signed.asc", self.home / "signed.txt"
        out.unlink(missing_ok=True)
        src.write_bytes(signed)
        result = self._gpg(["--output", str(out), "--decrypt", str(src)], ok=(0, 1, 2))
        fingerprint = _signer(_status(result.stdout), pins, self.what)
        return out.read_text(encoding="utf-8", errors="replace"), fingerprint

    def detached(self, data: Path, signature: bytes, pins: Pins) -> str:
        """The pinned fingerprint that made `signature` over the file `data`."""
        sig = self.home / "detached.sig"
        sig.write_bytes(signature)
        result = self._gpg(["--verify", str(sig), str(data)], ok=(0, 1, 2))
        return _signer(_status(result.stdout), pins, self.what)
