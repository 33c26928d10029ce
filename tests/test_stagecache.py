"""The shared stage cache in a folder: entries by stage key, whole or absent, checked on
restore. (Two build folders sharing one cache with the real fixture: test_sysprep_real.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmi.errors import KmiError
from kmi.stagecache import DirCache

KEY = "ab" * 32


def _layout(folder: Path) -> Path:
    (folder / "oci" / "blobs" / "sha256").mkdir(parents=True)
    (folder / "oci" / "index.json").write_text('{"schemaVersion": 2}')
    (folder / "oci" / "blobs" / "sha256" / "00ff").write_bytes(b"layer" * 1000)
    return folder / "oci"


def test_a_folder_output_round_trips(tmp_path: Path) -> None:
    cache = DirCache(tmp_path / "cache")
    made = _layout(tmp_path / "one")
    assert cache.store("build", KEY, made, {"manifest": "sha256:1"})
    assert not cache.store("build", KEY, made, {"manifest": "sha256:1"})  # already there
    manifest = json.loads((cache.entry("build", KEY) / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["oci/blobs/sha256/00ff", "oci/index.json"]
    target = tmp_path / "two" / "oci"
    warnings: list[str] = []
    assert cache.fetch("build", KEY, target, warnings.append) == {"manifest": "sha256:1"}
    assert (target / "blobs" / "sha256" / "00ff").read_bytes() == b"layer" * 1000
    assert (target / "index.json").read_text() == '{"schemaVersion": 2}'
    assert warnings == []
    assert [p.name for p in target.parent.iterdir()] == ["oci"]  # no staging left behind


def test_a_file_output_round_trips_and_a_miss_is_none(tmp_path: Path) -> None:
    cache = DirCache(tmp_path / "cache")
    disk = tmp_path / "a" / "disk.qcow2"
    disk.parent.mkdir()
    disk.write_bytes(b"qcow2" * 100)
    cache.store("sparsify", KEY, disk, {"final_size": 500})
    restored = tmp_path / "b" / "disk.qcow2"
    assert cache.fetch("sparsify", KEY, restored, print) == {"final_size": 500}
    assert restored.read_bytes() == disk.read_bytes()
    assert cache.fetch("sparsify", "cd" * 32, tmp_path / "c" / "disk.qcow2", print) is None
    assert cache.fetch("sysprep", KEY, tmp_path / "c" / "sysprep.qcow2", print) is None


def test_a_damaged_entry_is_reported_and_not_used(tmp_path: Path) -> None:
    cache = DirCache(tmp_path / "cache")
    disk = tmp_path / "a" / "disk.qcow2"
    disk.parent.mkdir()
    disk.write_bytes(b"qcow2" * 100)
    cache.store("sparsify", KEY, disk, {})
    (cache.entry("sparsify", KEY) / "disk.qcow2").write_bytes(b"QCOW2" * 100)
    restored = tmp_path / "b" / "disk.qcow2"
    warnings: list[str] = []
    assert cache.fetch("sparsify", KEY, restored, warnings.append) is None
    assert not restored.exists()
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"stage cache entry {cache.entry('sparsify', KEY)} is damaged (disk.qcow2: sha256:"
    )
    assert warnings[0].endswith("; ignoring it")


def test_kmi_cache_url_takes_a_folder(tmp_path: Path) -> None:
    assert DirCache.parse(str(tmp_path)).root == tmp_path
    assert DirCache.parse(f"file://{tmp_path}").root == tmp_path
    with pytest.raises(KmiError, match=r"KMI_CACHE_URL='oci://registry/kmi-cache': only a folder"):
        DirCache.parse("oci://registry/kmi-cache")
