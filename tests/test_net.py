"""Downloads against a real HTTP server on loopback: resume after a cut, retries, mirrors."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import Upstreams
from kmi.errors import TransferError
from kmi.net import Http
from kmi.progress import Progress
from kmi.settings import load_settings

URL = "https://cloud.centos.org/centos/9-stream/x86_64/images/big.qcow2"
PATH = "/cloud.centos.org/centos/9-stream/x86_64/images/big.qcow2"


def http(mirror: MirrorServer, retries: int = 3) -> Http:
    env = {"KMI_MIRROR": mirror.url, "KMI_HTTP_BACKOFF": "0.01", "KMI_HTTP_RETRIES": str(retries)}
    return Http(load_settings(env, Path("/nonexistent")))


def quiet(total: int | None = None) -> Progress:
    return Progress("t", total, "lines", io.StringIO())


def test_mirror_maps_host_and_path(mirror: MirrorServer) -> None:
    assert (
        http(mirror).resolve("https://a.example/x/y.qcow2?z=1")
        == f"{mirror.url}/a.example/x/y.qcow2?z=1"
    )


def test_resume_after_cut_hashes_in_one_pass(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    img = upstreams.image(URL, size=3 << 20)
    mirror.faults.cut_after[PATH] = 1 << 20
    part = tmp_path / "big.part"
    got = http(mirror).download(URL, part, "sha256", quiet(len(img.data)))
    assert got.hexdigest == hashlib.sha256(img.data).hexdigest()
    assert part.read_bytes() == img.data
    gets = mirror.requests_for(PATH)
    assert [(r.status, r.range) for r in gets] == [(200, None), (206, f"bytes={1 << 20}-")]
    assert mirror.bytes_sent(PATH) == len(img.data)  # nothing fetched twice


def test_resume_of_a_part_left_by_an_earlier_run(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    img = upstreams.image(URL, size=1 << 20)
    part = tmp_path / "big.part"
    part.write_bytes(img.data[:1000])
    got = http(mirror).download(URL, part, "sha256", quiet(), expected_size=len(img.data))
    assert got.hexdigest == img.hexdigest() and got.size == len(img.data)
    assert mirror.requests_for(PATH)[0].range == "bytes=1000-"


def test_changed_upstream_restarts_instead_of_splicing(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    old = upstreams.image(URL, size=100_000)
    part = tmp_path / "big.part"
    mirror.faults.cut_after[PATH] = 50_000
    mirror.faults.statuses[PATH] = []
    with pytest.raises(TransferError):
        http(mirror, retries=0).download(URL, part, "sha256", quiet())
    assert part.read_bytes() == old.data[:50_000]
    new = upstreams.put(URL, b"x" * 100_000)  # same size, new content and ETag
    got = http(mirror).download(URL, part, "sha256", quiet())
    assert got.hexdigest == hashlib.sha256(new.read_bytes()).hexdigest()
    assert mirror.requests_for(PATH)[-1].status == 200  # If-Range refused the stale range


def test_retries_transient_statuses(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    img = upstreams.image(URL)
    mirror.faults.statuses[PATH] = [503, 429, 502]
    mirror.faults.retry_after = "0"
    got = http(mirror).download(URL, tmp_path / "p", "sha256", quiet())
    assert got.hexdigest == img.hexdigest()
    assert [r.status for r in mirror.requests_for(PATH)] == [503, 429, 502, 200]


def test_gives_up_with_the_url_and_reason(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    upstreams.image(URL)
    mirror.faults.statuses[PATH] = [503] * 10
    with pytest.raises(TransferError) as err:
        http(mirror, retries=2).download(URL, tmp_path / "p", "sha256", quiet())
    assert str(err.value) == (
        f"{URL} (via mirror {mirror.url}{PATH}): HTTP 503 (gave up after 3 attempts)"
    )


def test_not_found_is_not_retried(mirror: MirrorServer) -> None:
    with pytest.raises(TransferError, match=r"HTTP 404$"):
        http(mirror).text(URL)
    assert len(mirror.requests_for(PATH)) == 1


def test_progress_lines_without_a_terminal() -> None:
    out = io.StringIO()
    meter = Progress("fedora-44-amd64: f.qcow2", 4 << 20, "auto", out)
    for _ in range(4):
        meter.advance(1 << 20)
    meter.finish()
    lines = out.getvalue().splitlines()
    assert lines[:3] == [f"fedora-44-amd64: f.qcow2: {p}% of 4.0 MiB" for p in (25, 50, 75)]
    assert lines[3].startswith("fedora-44-amd64: f.qcow2: 4.0 MiB in ")
