"""The download stage on its own: shared files, concurrency, the content-addressed cache."""

from __future__ import annotations

import threading
from pathlib import Path

from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import Upstreams
from kmi.lock import LockEntry
from kmi.net import Http
from kmi.paths import Paths
from kmi.settings import load_settings
from kmi.stages.download import download

URL = "https://images.example.org/1/shared.qcow2"


def entry_for(url: str, hexdigest: str, size: int) -> LockEntry:
    return LockEntry(
        flavor="demo",
        url=url,
        digest=f"sha256:{hexdigest}",
        size=size,
        release="1",
        found="2026-01-01T00:00:00Z",
        checksum_url=url + ".sha256",
        signed_by="unsigned",
    )


def test_two_targets_sharing_a_file_fetch_it_once(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    img = upstreams.image(URL, size=2 << 20)
    entry = entry_for(URL, img.hexdigest(), len(img.data))
    paths = Paths(tmp_path / "build", tmp_path / "cache")
    http = Http(load_settings({"KMI_MIRROR": mirror.url}, tmp_path))
    results = []

    def build(target: str) -> None:
        results.append(download(http, paths, target, entry, "none", "off"))

    threads = [threading.Thread(target=build, args=(f"demo-{v}-amd64",)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.transferred for r in results) == [0, len(img.data)]
    assert {r.image for r in results} == {paths.blob(entry.digest)}
    assert paths.blob(entry.digest).read_bytes() == img.data
    assert len(mirror.requests_for("/images.example.org/1/shared.qcow2")) == 1
