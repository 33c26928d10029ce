"""Retention: `doit prune:I` keeps the newest KMI_KEEP_RELEASES release tags and deletes
the older ones through the registry API, against docker-registry on loopback with deletion
enabled (behind the recording proxy of tests/test_publish.py). Older releases are pushed
here by hand: indexes of their own over per-arch images of their own or shared with the
published one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kmi import oci
from kmi.progress import human
from kmi.prune import release_tags
from kmi.registry import Client, client_for
from kmi.registry_ref import Registry
from kmi.settings import load_settings
from tests.test_publish import STEPS, Setup, skopeo_raw
from tests.test_publish import setup as setup  # the fixture

REPO = "kmi/fixture"


def client(setup: Setup) -> Client:
    settings = load_settings({"KMI_HTTP_RETRIES": "0"}, Path("/x"))
    return client_for(settings, Registry.parse(setup.registry.host), {})


def put_blob(c: Client, tmp: Path, data: bytes) -> oci.Descriptor:
    path = tmp / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    digest = oci.sha256_of(data)
    c.upload(REPO, digest, path, lambda n: None)
    return oci.Descriptor(oci.LAYER_TYPES["none"], digest, len(data))


def put_image(c: Client, tmp: Path, layer: bytes) -> tuple[oci.Descriptor, int]:
    """A per-arch image of one layer; its descriptor and the bytes of its blobs."""
    blob = put_blob(c, tmp, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": len(layer)}).encode()
    conf = put_blob(c, tmp, config)
    manifest = oci.canonical(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": {**conf.to_json(), "mediaType": oci.CONFIG},
            "layers": [blob.to_json()],
        }
    )
    digest = oci.sha256_of(manifest)
    c.put_manifest(REPO, digest, manifest, oci.MANIFEST)
    desc = oci.Descriptor(oci.MANIFEST, digest, len(manifest), oci.platform_of("amd64"))
    return desc, len(layer) + len(config)


def put_index(c: Client, tag: str, images: list[oci.Descriptor]) -> str:
    data = oci.index_data(images, {"org.opencontainers.image.version": tag})
    c.put_manifest(REPO, tag, data, oci.INDEX)
    return oci.sha256_of(data)


def test_prune_keeps_the_newest_releases_and_what_kept_tags_use(
    setup: Setup, tmp_path: Path
) -> None:
    project = setup.project
    assert project.doit(*STEPS).code == 0  # fixture:12 and 12-20260101 (index A over M1)
    c = client(setup)
    published = json.loads(c.get_manifest(REPO, "12") or b"{}")
    m1 = oci.Descriptor.from_json(published["manifests"][0])
    m2, size2 = put_image(c, tmp_path, b"two" * 1000)
    m3, size3 = put_image(c, tmp_path, b"three" * 1000)
    b = put_index(c, "12-20250101", [m2])
    index_c = put_index(c, "12-20250201", [m1])  # last month's index, this month's arch
    d = put_index(c, "12-20250301", [m3])
    current = c.manifest_digest(REPO, "12")
    assert current is not None
    c.put_manifest(REPO, "12-20250401", c.get_manifest(REPO, "12") or b"", oci.INDEX)
    c.put_manifest(REPO, "12-20241201", c.get_manifest(REPO, "12") or b"", oci.INDEX)
    keep = {"KMI_KEEP_RELEASES": "2"}

    setup.proxy.reset()
    dry = project.doit("prune:fixture-12", **keep)
    assert dry.code == 0, dry.out
    assert {s.method for s in setup.proxy.seen} <= {"GET", "HEAD"}
    where = f"{setup.proxy.host}/{REPO}"
    going = f"12-20250301 ({d[:19]}…), 12-20250201 ({index_c[:19]}…), 12-20250101 ({b[:19]}…)"
    assert (
        f"fixture-12: dry run: would delete {going} from {where} (5 manifest(s)), keeping the "
        f"newest 2; frees {human(size2 + size3)} of blobs no kept image uses"
    ) in dry.out
    assert "12-20241201" not in dry.out  # an old tag on the current index stays

    done = project.doit("prune:fixture-12", "delete=1", **keep)
    assert done.code == 0, done.out
    assert f"fixture-12: deleted {going} from {where}" in done.out
    assert sorted(c.tags(REPO)) == ["12", "12-20241201", "12-20250401", "12-20260101"]
    for gone in (b, index_c, d, m2.digest, m3.digest):
        assert c.manifest_digest(REPO, gone) is None
    assert c.manifest_digest(REPO, m1.digest) == m1.digest  # the current index lists it
    assert skopeo_raw(setup.ref("fixture", "12"))["manifests"] == published["manifests"]

    again = project.doit("prune", "--delete", **keep)
    assert again.code == 0, again.out
    assert "twin-12: 1 release tag(s) in " in again.out
    assert (
        f"fixture-12: 3 release tag(s) in {where}, nothing to delete (keeping the newest 2; 1 "
        "older on a manifest in use)"
    ) in again.out


def test_release_tags_of_a_version_only() -> None:
    tags = ["9", "latest", "9-20250101", "9-20250110.1", "9-stream-20250101", "10-20250101"]
    found = release_tags(tags, "9", ["9-stream", "10"], ("9", "latest"))
    assert found == ["9-20250110.1", "9-20250101"]


def test_prune_needs_a_registry_and_says_so(setup: Setup) -> None:
    done = setup.project.doit("prune:fixture-12", KMI_REGISTRY="")
    assert done.code == 1 and "Traceback" not in done.out
    assert "FAILED prune:fixture-12: fixture-12: prune works on a registry; set KMI_REGISTRY" in (
        done.out
    )
    bad = setup.project.doit("prune:fixture-12", KMI_KEEP_RELEASES="0")
    assert bad.code == 3 and "KMI_KEEP_RELEASES" in bad.out and "at least 1" in bad.out
