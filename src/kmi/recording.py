"""KMI_RECORD: keep every small upstream file discovery fetched, laid out as KMI_MIRROR
expects (`<dir>/<host>/<path>`), so that a night's upstream state can be replayed offline.

Index pages, checksum files, signatures and JSON documents are kept byte for byte; a
directory listing (a URL ending in `/`) is kept as `index.html` in its folder, which a mirror
server (nginx, or kmi.demo.server) serves for the folder. Images are never recorded: a HEAD
of one is kept as a sparse placeholder of its size, so a replay answers sizes without holding
the bytes (and a download from a replay fails its digest check, as it should).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from kmi.files import atomic_output


def recorded_path(root: Path, url: str) -> Path | None:
    """Where `url` is kept under `root`; None for a URL that cannot be laid out safely."""
    parts = urlsplit(url)
    path = PurePosixPath(unquote(parts.path))
    if not parts.netloc or ".." in path.parts or "/" in parts.netloc:
        return None
    relative = [p for p in path.parts if p != "/"]
    if parts.path.endswith("/") or not relative:
        relative.append("index.html")
    return root.joinpath(parts.netloc, *relative)


def keep(root: Path, url: str, data: bytes) -> None:
    """Record one fetched file (written whole or not at all)."""
    path = recorded_path(root, url)
    if path is None:
        return
    with atomic_output(path) as out:
        out.write(data)


def keep_size(root: Path, url: str, size: int) -> None:
    """Record a HEAD: a sparse file of `size` bytes, unless the file itself was kept."""
    path = recorded_path(root, url)
    if path is None or path.exists():
        return
    with atomic_output(path) as out:
        os.truncate(out.fileno(), size)
