"""checksum:T — proof that the cached bytes still match the digest the lock pins."""

from __future__ import annotations

import hashlib

from kmi.errors import KmiError, VerificationError
from kmi.files import feed
from kmi.keys import stage_key
from kmi.lock import LockEntry
from kmi.paths import Paths

STAGE_VERSION = "1"


def checksum_key(entry: LockEntry, download_key: str) -> str:
    return stage_key(
        "checksum", {"digest": entry.digest}, {"kmi-checksum": STAGE_VERSION}, [download_key]
    )


def verify_cached(paths: Paths, target: str, entry: LockEntry, compression: str) -> int:
    """Hash the cached upstream bytes; on a mismatch delete them (and what was unpacked from
    them) and fail naming the URL and both digests. Returns the number of bytes checked."""
    blob = paths.blob(entry.digest)
    if not blob.exists():
        raise KmiError(f"{target}: {blob} is missing from the cache; run: doit download:{target}")
    hasher = hashlib.new(entry.algorithm)
    size = feed(hasher, blob)
    actual = hasher.hexdigest()
    if actual != entry.hexdigest:
        blob.unlink()
        paths.image(entry.digest, compression).unlink(missing_ok=True)
        raise VerificationError(
            f"{target}: cached bytes of {entry.url} do not match the lock: expected "
            f"{entry.digest}, got {entry.algorithm}:{actual}; deleted them, rerun the build"
        )
    if not paths.image(entry.digest, compression).exists():
        raise KmiError(f"{target}: the unpacked image is missing; run: doit download:{target}")
    return size
