"""download:T — the upstream file, verified while it streams, in the content-addressed cache."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kmi.errors import VerificationError
from kmi.files import atomic_output, exclusive
from kmi.keys import stage_key
from kmi.lock import LockEntry
from kmi.paths import Paths
from kmi.progress import Progress

if TYPE_CHECKING:  # requests is slow to import; tasks load this module for its key only
    from kmi.net import Http

DECOMPRESSORS: dict[str, Callable[[Path], io.BufferedIOBase]] = {
    "xz": lzma.LZMAFile,
    "gz": gzip.GzipFile,
    "bz2": bz2.BZ2File,
}

ImageCheck = Callable[[Path], str]
STAGE_VERSION = "1"  # bump when this stage's output changes for the same inputs


def download_key(entry: LockEntry, compression: str) -> str:
    """Same digest and unpacking, same image: the URL it came from does not matter."""
    config = {"digest": entry.digest, "compression": compression}
    return stage_key("download", config, {"kmi-download": STAGE_VERSION})


@dataclass(frozen=True)
class Fetched:
    image: Path  # the disk image, transport compression removed
    transferred: int  # bytes received from the network (0 on a cache hit)
    image_signed_by: str | None = None  # fingerprint, when the image's own signature was checked


def fetch_blob(
    http: Http,
    paths: Paths,
    target: str,
    entry: LockEntry,
    progress: str,
    check_image_signature: ImageCheck | None,
) -> tuple[int, str | None]:
    """Ensure the verified upstream bytes are in the cache: (bytes transferred, fingerprint
    of the image signature checked before they entered it)."""
    blob, part = paths.blob(entry.digest), paths.partial(entry.digest)
    # two targets may share one file: the second waits, then finds it in the cache
    with exclusive(part.with_name(part.name + ".guard")):
        if blob.exists():
            return 0, None
        meter = Progress(f"{target}: {entry.url.rsplit('/', 1)[-1]}", entry.size, progress)
        got = http.download(entry.url, part, entry.algorithm, meter, expected_size=entry.size)
        if got.hexdigest != entry.hexdigest:
            part.unlink(missing_ok=True)
            raise VerificationError(
                f"{target}: {http.describe(entry.url)}: digest mismatch: expected "
                f"{entry.digest}, got {entry.algorithm}:{got.hexdigest}; the bad bytes were deleted"
            )
        signer = None
        if check_image_signature is not None:
            try:
                signer = check_image_signature(part)
            except VerificationError:
                part.unlink(missing_ok=True)
                raise
        blob.parent.mkdir(parents=True, exist_ok=True)
        part.replace(blob)
        return got.size, signer


def unpack(paths: Paths, entry: LockEntry, compression: str) -> Path:
    """The disk image: the blob itself, or the blob decompressed once into the cache."""
    image = paths.image(entry.digest, compression)
    if compression == "none" or image.exists():
        return image
    with DECOMPRESSORS[compression](paths.blob(entry.digest)) as src, atomic_output(image) as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return image


def download(
    http: Http,
    paths: Paths,
    target: str,
    entry: LockEntry,
    compression: str,
    progress: str,
    check_image_signature: ImageCheck | None = None,
) -> Fetched:
    """Fetch (or find in the cache) and unpack one target's upstream image."""
    transferred, signer = fetch_blob(http, paths, target, entry, progress, check_image_signature)
    return Fetched(unpack(paths, entry, compression), transferred, signer)
