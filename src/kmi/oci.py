"""OCI image layouts for containerdisks: the disk layer, config, manifest and index.

Everything here is deterministic: the same disk and the same metadata give the same bytes,
hence the same digests, on any machine. The layer is a tar of `disk/` and `disk/disk.img`
with fixed owners, modes and mtimes, written in one pass that hashes the tar (the diff_id)
and the compressed stream (the digest) as it goes, so the disk is read once.

The default layer compression is gzip made of *stored* deflate blocks: every runtime pulls
gzip, and the qcow2 inside is already compressed, so deflating it again costs minutes and
saves almost nothing (docs/benchmarks.md). kmi writes those blocks itself rather than
asking zlib for level 0, whose block sizes differ between zlib versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from kmi.errors import KmiError
from kmi.files import feed

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip-stored": "application/vnd.oci.image.layer.v1.tar+gzip",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
Compression = Literal["gzip-stored", "gzip", "zstd", "none"]
REF_NAME = "org.opencontainers.image.ref.name"

QEMU_UID = 107  # the qemu user KubeVirt runs as
DISK_DIR = "disk/"  # with the slash: older CDI takes "directory" from it
DISK_FILE = "disk/disk.img"
CHUNK = 1 << 20
Buffer = bytes | bytearray | memoryview
STORED_BLOCK = 0xFFFF  # the largest stored deflate block
GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])  # no name, mtime 0, OS unknown


def canonical(value: Any) -> bytes:
    """The one JSON encoding kmi writes: sorted keys, no spaces, so digests are stable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest or index says about a blob."""

    media_type: str
    digest: str
    size: int
    platform: Mapping[str, str] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        return cls(
            data["mediaType"],
            data["digest"],
            int(data["size"]),
            data.get("platform"),
            data.get("annotations") or {},
        )


def platform_of(arch: str) -> dict[str, str]:
    """The OCI platform of an arch; arm64 carries the v8 variant as Docker and buildx do."""
    return {"architecture": arch, "os": "linux", **({"variant": "v8"} if arch == "arm64" else {})}


# --- the layer ----------------------------------------------------------------------------


def tar_header(name: str, mode: int, size: int, mtime: int, kind: bytes) -> bytes:
    """One tar header (PAX only when a value does not fit ustar, e.g. a disk over 8 GiB)."""
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.mtime, info.type = mode, size, mtime, kind
    info.uid = info.gid = QEMU_UID
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_stream(disk: Path, mtime: int) -> Iterator[Buffer]:
    """The layer's tar, in pieces: `disk/` (0555) and `disk/disk.img` (0444), owned by 107."""
    size = disk.stat().st_size
    headers = tar_header(DISK_DIR, 0o555, 0, mtime, tarfile.DIRTYPE) + tar_header(
        DISK_FILE, 0o444, size, mtime, tarfile.REGTYPE
    )
    yield headers
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    copied = 0
    with disk.open("rb") as src:
        while count := src.readinto(buffer):
            copied += count
            yield view[:count]
    if copied != size:
        raise KmiError(f"{disk}: changed while it was being packed ({size} -> {copied} bytes)")
    # pad the file to a block, end with two zero blocks, and fill the record as tar does
    tail = -size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE
    tail += -(len(headers) + size + tail) % tarfile.RECORDSIZE
    yield bytes(tail)


class _Hashing:
    """Writes to `out` and hashes what was written (the blob's digest)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def write(self, data: Buffer) -> None:
        self.out.write(data)
        self.hash.update(data)
        self.size += len(data)


class _StoredGzip:
    """A gzip member of stored deflate blocks of exactly STORED_BLOCK bytes (the last shorter)."""

    def __init__(self, sink: _Hashing) -> None:
        self.sink, self.crc, self.length = sink, 0, 0
        self.pending = bytearray()
        sink.write(GZIP_HEADER)

    def _block(self, data: Buffer) -> None:
        n = len(data)
        self.sink.write(struct.pack("<BHH", 0, n, n ^ 0xFFFF))
        self.sink.write(data)

    def write(self, data: Buffer) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        view = memoryview(data)
        if self.pending:
            take = STORED_BLOCK - len(self.pending)
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < STORED_BLOCK:
                return
            self._block(self.pending)
            self.pending = bytearray()
        whole = len(view) - len(view) % STORED_BLOCK
        for start in range(0, whole, STORED_BLOCK):
            self._block(view[start : start + STORED_BLOCK])
        self.pending += view[whole:]

    def close(self) -> None:
        if self.pending:
            self._block(self.pending)
        self.sink.write(b"\x01\x00\x00\xff\xff")  # an empty final block ends the stream
        self.sink.write(struct.pack("<II", self.crc, self.length & 0xFFFFFFFF))


class _Deflate:
    """gzip through zlib at level 1: smaller, slower, and tied to the zlib version."""

    def __init__(self, sink: _Hashing) -> None:
        self.sink, self.crc, self.length = sink, 0, 0
        self.zip = zlib.compressobj(1, zlib.DEFLATED, -15, 9)
        sink.write(GZIP_HEADER)

    def write(self, data: Buffer) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.sink.write(self.zip.compress(data))

    def close(self) -> None:
        self.sink.write(self.zip.flush())
        self.sink.write(struct.pack("<II", self.crc, self.length & 0xFFFFFFFF))


class _Plain:
    """An uncompressed tar layer."""

    def __init__(self, sink: _Hashing) -> None:
        self.write = sink.write

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str


def write_layer(
    disk: Path,
    blobs: Path,
    mtime: int,
    compression: Compression,
    advance: Callable[[int], None] = lambda n: None,
) -> Layer:
    """Write the disk layer into `blobs` (a layout's blobs/sha256) in one pass."""
    tmp = blobs / ".layer.tmp"
    diff = hashlib.sha256()
    with tmp.open("wb") as raw:
        sink = _Hashing(raw)
        if compression == "zstd":
            _zstd(disk, mtime, raw, diff, advance)
        else:
            codec: _StoredGzip | _Deflate | _Plain = (
                _StoredGzip(sink)
                if compression == "gzip-stored"
                else _Deflate(sink)
                if compression == "gzip"
                else _Plain(sink)
            )
            for piece in tar_stream(disk, mtime):
                diff.update(piece)
                codec.write(piece)
                advance(len(piece))
            codec.close()
    if compression == "zstd":  # zstd wrote the file itself: hash what it wrote
        sink.size = feed(sink.hash, tmp)
    digest = "sha256:" + sink.hash.hexdigest()
    os.replace(tmp, blobs / digest.split(":", 1)[1])
    desc = Descriptor(LAYER_TYPES[compression], digest, sink.size)
    return Layer(desc, "sha256:" + diff.hexdigest())


def _zstd(
    disk: Path, mtime: int, out: IO[bytes], diff: Any, advance: Callable[[int], None]
) -> None:
    """zstd (opt-in): the zstd program, all cores, level 3; runtimes older than containerd
    1.5 / Docker 23 cannot pull it."""
    if shutil.which("zstd") is None:
        raise KmiError("zstd layers need the zstd program (Debian/Fedora package: zstd)")
    from kmi.tools import die_with_parent

    proc = subprocess.Popen(
        ["zstd", "-q", "-3", "-T0", "-c"],
        stdin=subprocess.PIPE,
        stdout=out,
        preexec_fn=die_with_parent(),  # dies with kmi, like every tool
    )
    assert proc.stdin is not None
    try:
        for piece in tar_stream(disk, mtime):
            diff.update(piece)
            proc.stdin.write(piece)
            advance(len(piece))
    finally:
        proc.stdin.close()
        code = proc.wait()
    if code != 0:
        raise KmiError(f"zstd failed with exit code {code} while packing {disk}")


# --- configs, manifests, layouts -----------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """Everything but the disk that shapes one per-arch containerdisk."""

    arch: str
    created: str  # RFC 3339, UTC
    mtime: int  # the same instant, for the tar entries
    env: Mapping[str, str]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ref: str  # the name the layout's index.json gives the image
    history: str  # what made it, for `docker history`


def config_of(spec: ImageSpec, diff_id: str) -> dict[str, Any]:
    return {
        "architecture": spec.arch,
        "os": "linux",
        **({"variant": "v8"} if spec.arch == "arm64" else {}),
        "created": spec.created,
        "config": {
            "Entrypoint": ["no-entrypoint"],
            "Env": [f"{k}={v}" for k, v in sorted(spec.env.items())],
            "Labels": dict(spec.labels),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": spec.created, "created_by": spec.history}],
    }


def _put_blob(blobs: Path, data: bytes, media_type: str, **extra: Any) -> Descriptor:
    digest = sha256_of(data)
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return Descriptor(media_type, digest, len(data), **extra)


@contextlib.contextmanager
def new_layout(layout: Path) -> Iterator[Path]:
    """A fresh layout folder beside `layout`, put in its place when the block succeeds."""
    tmp = layout.with_name(f".{layout.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "blobs" / "sha256").mkdir(parents=True)
    (tmp / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    try:
        yield tmp
        old = layout.with_name(f".{layout.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if layout.exists():
            os.replace(layout, old)
        os.replace(tmp, layout)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_index_json(layout: Path, entry: Descriptor) -> None:
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [entry.to_json()]}
    (layout / "index.json").write_bytes(canonical(index))


@dataclass(frozen=True)
class Built:
    manifest: Descriptor
    config: Descriptor
    layer: Layer


def write_image(
    disk: Path,
    layout: Path,
    spec: ImageSpec,
    compression: Compression = "gzip-stored",
    advance: Callable[[int], None] = lambda n: None,
) -> Built:
    """Write a one-image OCI layout at `layout` (replaced whole, only on success)."""
    with new_layout(layout) as tmp:
        blobs = tmp / "blobs" / "sha256"
        layer = write_layer(disk, blobs, spec.mtime, compression, advance)
        config = _put_blob(blobs, canonical(config_of(spec, layer.diff_id)), CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config.to_json(),
            "layers": [layer.descriptor.to_json()],
            "annotations": dict(spec.annotations),
        }
        desc = _put_blob(blobs, canonical(manifest), MANIFEST, platform=platform_of(spec.arch))
        _write_index_json(tmp, Descriptor(**{**desc.__dict__, "annotations": {REF_NAME: spec.ref}}))
    return Built(desc, config, layer)


def read_json(layout: Path, digest: str) -> Any:
    return json.loads(blob_path(layout, digest).read_bytes())


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest


def top(layout: Path) -> Descriptor:
    """The one entry of a layout's index.json written by kmi."""
    try:
        data = json.loads((layout / "index.json").read_bytes())
        return Descriptor.from_json(data["manifests"][0])
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise KmiError(f"{layout}: not an OCI layout written by kmi ({err}); rebuild it") from None


def _link(source: Path, dest: Path) -> None:
    """Share a blob between layouts: a hard link, or a copy across file systems."""
    if dest.exists():
        return
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def blobs_of(layout: Path, manifest: Descriptor) -> list[Descriptor]:
    """The config and layers a manifest in `layout` refers to."""
    data = read_json(layout, manifest.digest)
    return [Descriptor.from_json(data["config"])] + [
        Descriptor.from_json(d) for d in data["layers"]
    ]


def index_data(entries: list[Descriptor], annotations: Mapping[str, str]) -> bytes:
    """An image index over per-arch manifests, canonical: the same entries and annotations
    give the same digest, wherever the index is made (a layout here, or a publish job that
    has only the manifests' descriptors)."""
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [e.to_json() for e in entries],
        "annotations": dict(annotations),
    }
    return canonical(index)


def write_index(
    layout: Path, images: list[Path], annotations: Mapping[str, str], ref: str
) -> Descriptor:
    """Write a layout holding an image index over the per-arch layouts `images` (blobs
    shared by hard links), in the order given."""
    with new_layout(layout) as tmp:
        entries = []
        for image in images:
            manifest = top(image)
            for desc in [manifest, *blobs_of(image, manifest)]:
                _link(blob_path(image, desc.digest), blob_path(tmp, desc.digest))
            entries.append(Descriptor(MANIFEST, manifest.digest, manifest.size, manifest.platform))
        desc = _put_blob(tmp / "blobs" / "sha256", index_data(entries, annotations), INDEX)
        _write_index_json(tmp, Descriptor(INDEX, desc.digest, desc.size, None, {REF_NAME: ref}))
    return desc
