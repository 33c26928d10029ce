"""Free space, checked before a stage starts: a libguestfs appliance whose disk write hits
a full filesystem is paused by QEMU, not failed, so a full disk would otherwise show as a
tool hanging until its deadline. A stage refuses at once, naming the folder, what it may
need and what is free."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from kmi.errors import KmiError
from kmi.progress import human

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SIZE = re.compile(r"^(\+?)([0-9]+)([KMGT]?)$")


QCOW2_MAGIC = b"QFI\xfb"


def virtual_size(image: Path) -> int:
    """What the guest sees as its disk: all a qcow2 made from `image` can grow to. Read
    from the qcow2 header (its size field, big-endian at byte 24); a raw image is its length."""
    try:
        with image.open("rb") as src:
            header = src.read(32)
        length = image.stat().st_size
    except FileNotFoundError:
        return 0  # nothing to check; the stage's first tool run names the missing input
    if header[:4] == QCOW2_MAGIC and len(header) == 32:
        return int.from_bytes(header[24:32], "big")
    return length


def grown(size: int, grow: str) -> int:
    """The virtual size after `customize.grow` ('+2G' adds, '10G' sets; '' keeps)."""
    m = SIZE.match(grow)
    if not grow or m is None:
        return size
    value = int(m[2]) * UNITS[m[3]]
    return size + value if m[1] else max(size, value)


def allocated(path: Path) -> int:
    """The bytes a file takes on disk (a sparse image takes less than its length)."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0  # nothing to check; the stage's first tool run names the missing input


def require(folder: Path, need: int, what: str) -> None:
    """Refuse `what` at once when `folder`'s filesystem has less than `need` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise KmiError(
            f"{folder}: {human(free)} free, but {what} may need {human(need)}; free space "
            "there, or set KMI_BUILD_DIR to a folder on a larger disk"
        )
