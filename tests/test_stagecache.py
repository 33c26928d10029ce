"""The shared stage cache, in a folder and in a real registry on loopback: entries by stage
key, whole or absent, checked on restore. (Two build folders sharing one registry with the
real fixture: test_sysprep_real.py.)"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmi.demo.registry import RegistryServer
from kmi.errors import KmiError
from kmi.settings import load_settings
from kmi.stagecache import DirCache, RegistryCache, StageCache, open_cache

KEY = "ab" * 32


def parse(value: str) -> StageCache:
    """KMI_CACHE_URL as kmi reads it: parsed with the settings, opened with them."""
    settings = load_settings({"KMI_CACHE_URL": value}, Path("/x"))
    assert settings.stage_cache is not None
    return open_cache(settings.stage_cache, settings)


def _layout(folder: Path) -> Path:
    (folder / "oci" / "blobs" / "sha256").mkdir(parents=True)
    (folder / "oci" / "index.json").write_text('{"schemaVersion": 2}')
    (folder / "oci" / "blobs" / "sha256" / "00ff").write_bytes(b"layer" * 1000)
    return folder / "oci"


def test_a_folder_output_round_trips(tmp_path: Path) -> None:
    cache = DirCache(tmp_path / "cache")
    made = _layout(tmp_path / "one")
    assert cache.store("build", KEY, made, {"manifest": "sha256:1"}, print)
    assert not cache.store("build", KEY, made, {"manifest": "sha256:1"}, print)  # already there
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
    cache.store("sparsify", KEY, disk, {"final_size": 500}, print)
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
    cache.store("sparsify", KEY, disk, {}, print)
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


def test_kmi_cache_url_takes_a_folder_or_a_registry_repository(tmp_path: Path) -> None:
    assert parse(str(tmp_path)) == DirCache(tmp_path)
    assert parse(f"file://{tmp_path}") == DirCache(tmp_path)
    cache = parse("docker://localhost:5000/ci/kmi-cache")
    assert isinstance(cache, RegistryCache)
    assert cache.where("sysprep", KEY) == f"localhost:5000/ci/kmi-cache:sysprep-{KEY}"
    assert cache.client.registry.scheme == "http"  # loopback
    remote = parse("docker://ghcr.io/acme/kmi-cache")
    assert isinstance(remote, RegistryCache) and remote.client.registry.scheme == "https"
    with pytest.raises(KmiError, match=r"KMI_CACHE_URL='oci://registry/kmi-cache': give a folder"):
        parse("oci://registry/kmi-cache")
    with pytest.raises(KmiError, match=r"KMI_CACHE_URL='docker://ghcr.io': name the repository"):
        parse("docker://ghcr.io")
    with pytest.raises(KmiError, match=r"KMI_CACHE_URL='docker://ghcr.io/Acme': expected"):
        parse("docker://ghcr.io/Acme")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry").start()
    yield server
    server.stop()


def _blob_file(server: RegistryServer, digest: str) -> Path:
    hexdigest = digest.removeprefix("sha256:")
    return (
        server.folder
        / "storage/docker/registry/v2/blobs/sha256"
        / hexdigest[:2]
        / hexdigest
        / "data"
    )


def test_a_registry_entry_round_trips_and_reads_as_an_oci_artifact(
    tmp_path: Path, registry: RegistryServer
) -> None:
    cache = parse(f"docker://{registry.host}/kmi-cache")
    made = _layout(tmp_path / "one")
    said: list[str] = []
    assert cache.store("build", KEY, made, {"manifest": "sha256:1"}, said.append)
    assert not cache.store("build", KEY, made, {"manifest": "sha256:1"}, said.append)
    where = cache.where("build", KEY)
    assert said == [f"stage cache {where}: pushing 2 file(s), 4.9 KiB"]  # once: then it is there
    # what any OCI tool sees: an artifact whose layers are the files, named by title
    shown = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{cache.where('build', KEY)}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    manifest = json.loads(shown.stdout)
    assert manifest["artifactType"] == "application/vnd.kmi.stage-cache.v1"
    titles = [
        layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]
    ]
    assert titles == ["oci/blobs/sha256/00ff", "oci/index.json"]
    target = tmp_path / "two" / "oci"
    assert cache.fetch("build", KEY, target, said.append) == {"manifest": "sha256:1"}
    assert (target / "blobs" / "sha256" / "00ff").read_bytes() == b"layer" * 1000
    assert (target / "index.json").read_text() == '{"schemaVersion": 2}'
    assert [p.name for p in target.parent.iterdir()] == ["oci"]
    assert cache.fetch("build", "cd" * 32, tmp_path / "three" / "oci", said.append) is None
    assert said[1:] == [f"stage cache {where}: pulling 2 file(s), 4.9 KiB"]  # a miss says nothing


def test_a_damaged_registry_blob_is_reported_and_not_used(
    tmp_path: Path, registry: RegistryServer
) -> None:
    cache = parse(f"docker://{registry.host}/kmi-cache")
    disk = tmp_path / "a" / "disk.qcow2"
    disk.parent.mkdir()
    disk.write_bytes(b"qcow2" * 100_000)
    assert cache.store("sparsify", KEY, disk, {"final_size": 1}, print)
    digest = "sha256:" + hashlib.sha256(disk.read_bytes()).hexdigest()
    stored = _blob_file(registry, digest)
    with stored.open("r+b") as damaged:  # the registry serves what its storage holds
        damaged.seek(4096)
        damaged.write(b"Q")
    restored = tmp_path / "b" / "disk.qcow2"
    said: list[str] = []
    assert cache.fetch("sparsify", KEY, restored, said.append) is None
    assert not restored.exists()
    assert [p.name for p in restored.parent.iterdir()] == []  # no staging left behind
    where = cache.where("sparsify", KEY)
    assert said[0] == f"stage cache {where}: pulling 1 file(s), 488.3 KiB"
    damage = re.fullmatch(
        rf"stage cache entry {re.escape(where)} is damaged \(disk\.qcow2: "
        rf"sha256:([0-9a-f]{{12}})…, expected sha256:{digest[7:19]}…\); ignoring it",
        said[1],
    )
    assert damage and damage.group(1) != digest[7:19], said
    assert len(said) == 2


def test_an_entry_naming_a_path_outside_the_output_is_refused(
    tmp_path: Path, registry: RegistryServer
) -> None:
    cache = parse(f"docker://{registry.host}/kmi-cache")
    assert isinstance(cache, RegistryCache)
    disk = tmp_path / "a" / "disk.qcow2"
    disk.parent.mkdir()
    disk.write_bytes(b"qcow2")
    cache.store("sparsify", KEY, disk, {}, print)
    raw = cache.client.get_manifest("kmi-cache", f"sparsify-{KEY}")
    manifest = json.loads(raw)
    config_desc = manifest["config"]
    config = json.loads(_blob_file(registry, config_desc["digest"]).read_bytes())
    config["files"] = {"../escaped": config["files"]["disk.qcow2"]}
    manifest["layers"][0]["annotations"]["org.opencontainers.image.title"] = "../escaped"
    data = json.dumps(config).encode()
    blob = tmp_path / "config.json"
    blob.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    cache.client.upload("kmi-cache", digest, blob, lambda n: None)
    manifest["config"] = {**config_desc, "digest": digest, "size": len(data)}
    cache.client.put_manifest(
        "kmi-cache", f"sparsify-{KEY}", json.dumps(manifest).encode(), manifest["mediaType"]
    )
    said: list[str] = []
    assert cache.fetch("sparsify", KEY, tmp_path / "b" / "disk.qcow2", said.append) is None
    assert said == [
        f"stage cache entry {cache.where('sparsify', KEY)} lists other files than it holds; "
        "ignoring it"
    ]
    assert not (tmp_path / "b" / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_an_unreachable_registry_is_said_and_the_stage_runs(tmp_path: Path) -> None:
    from kmi.demo.registry import free_port

    cache = parse(f"docker://127.0.0.1:{free_port()}/kmi-cache")
    assert isinstance(cache, RegistryCache)
    cache.client.retries = 0
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"qcow2")
    said: list[str] = []
    assert cache.fetch("sparsify", KEY, tmp_path / "out" / "disk.qcow2", said.append) is None
    assert not cache.store("sparsify", KEY, disk, {}, said.append)
    where = cache.where("sparsify", KEY)
    assert said[0].startswith(f"stage cache {where} could not be read (HEAD ") or said[
        0
    ].startswith(f"stage cache {where} could not be read (GET ")
    assert said[0].endswith("; building instead")
    assert said[1].startswith(f"stage cache {where} could not be written (")
    assert said[1].endswith("; not added")


def test_scale_out_settings_are_checked_when_read() -> None:
    from kmi.settings import load_settings

    assert load_settings({}, Path("/x")).engine == "native"
    assert load_settings({"KMI_ENGINE": "buildx"}, Path("/x")).engine == "buildx"
    with pytest.raises(KmiError, match=r"KMI_ENGINE='buildkit': expected native or buildx"):
        load_settings({"KMI_ENGINE": "buildkit"}, Path("/x"))
    assert load_settings({}, Path("/x")).guestfs_timeout == 3600
    assert load_settings({"KMI_GUESTFS_TIMEOUT": "90"}, Path("/x")).guestfs_timeout == 90
    with pytest.raises(KmiError, match=r"KMI_GUESTFS_TIMEOUT"):
        load_settings({"KMI_GUESTFS_TIMEOUT": "an hour"}, Path("/x"))
