"""build, manifest and publish through doit, against Debian's docker-registry on loopback
behind a recording proxy; images are read back with skopeo and umoci.

The final disks here are small qcow2 files restored into the build folder with their
receipts, as a build folder restored from a CI cache would be, so that doit finds sysprep
and sparsify done; the libguestfs stages have their own tests (test_sysprep_real.py,
which also publishes the real fixture)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kmi.demo import fixture as fixture_image
from kmi.demo.registry import RegistryServer
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, environment, pin_key
from kmi.errors import KmiError
from tests.conftest import REPO, Project
from tests.registry_proxy import RegistryProxy
from tests.test_containerdisk import make_disk, run

TARGETS = ("fixture-12-amd64", "twin-12-amd64")
STEPS = ["publish:fixture-12", "publish:twin-12"]


# writes the receipts a restored build folder carries: the keys computed by kmi itself
RESTORE = """
import sys
from kmi import receipts
from kmi.tasks.common import CTX
for name in sys.argv[1:]:
    target = CTX.targets[name]
    keys = CTX.plan.keys(target)
    receipts.write(
        CTX.paths.receipt(name, "sysprep"),
        receipts.Sysprep(key=keys.sysprep, target=name, size=0),
    )
    receipts.write(
        CTX.paths.receipt(name, "sparsify"),
        receipts.Sparsify(key=keys.sparsify, target=name, sysprep_size=0, final_size=0),
    )
"""


def restore(env: dict[str, str], disk: Path) -> None:
    """Put `disk` in place as its target's final disk, with current receipts."""
    shutil.copyfile(disk, disk.with_name("sysprep.qcow2"))
    target = disk.parent.name
    done = subprocess.run(
        [sys.executable, "-c", RESTORE, target], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@dataclass
class Setup:
    project: Project
    proxy: RegistryProxy
    registry: RegistryServer

    @property
    def build(self) -> Path:
        return self.project.work / "build"

    def results(self) -> dict[str, dict[str, object]]:
        images: dict[str, dict[str, object]] = json.loads(
            (self.build / "results.json").read_text()
        )["images"]
        return images

    def ref(self, image: str, tag: str) -> str:
        return f"docker://{self.proxy.host}/kmi/{image}:{tag}"


@pytest.fixture
def setup(
    tmp_path: Path, gpg_key: SigningKey, mirror: MirrorServer, upstreams: Upstreams
) -> Iterator[Setup]:
    made = tmp_path / "made"
    (made / "repo").mkdir(parents=True)
    make_disk(made / "fixture.qcow2", "0x11")
    fixture_image.publish(upstreams, made)
    catalogue = pin_key(REPO / "distros", tmp_path / "distros", gpg_key)
    flavor = fixture_image.add_flavor(catalogue, made, gpg_key)
    # the disks below are synthetic (they do not boot): publish them untested
    flavor.write_text(flavor.read_text().replace("required: true", "required: false"))
    twin = flavor.read_text().replace("name: fixture", "name: twin")
    (catalogue / "twin.yaml").write_text(
        twin.replace('version: "12"', 'version: "12"\n    latest: true')
    )
    env = environment(
        catalogue,
        tmp_path,
        mirror.url,
        KMI_SOURCE_URL="https://example.invalid/kmi-catalogue",
        KMI_HTTP_RETRIES="1",
    )
    project = Project(tmp_path, catalogue, env)
    pinned = project.doit(*[f"checksum:{t}" for t in TARGETS])
    assert pinned.code == 0, pinned.out
    for n, target in enumerate(TARGETS):  # what sysprep and sparsify would have left
        disk = make_disk(tmp_path / "build" / target / "disk.qcow2", f"0x{0x21 + n:x}")
        restore(env, disk)
    # the servers last, each stopped whatever happens after it started
    registry = RegistryServer(tmp_path / "registry").start()
    try:
        proxy = RegistryProxy(registry.host).start()
        try:
            env["KMI_REGISTRY"] = f"{proxy.host}/kmi"
            yield Setup(project, proxy, registry)
        finally:
            proxy.stop()
    finally:
        registry.stop()


def skopeo_raw(reference: str) -> dict[str, object]:
    out = run("skopeo", "inspect", "--raw", "--tls-verify=false", reference)
    data: dict[str, object] = json.loads(out)
    return data


def test_publish_pushes_a_whole_image_and_the_second_run_sends_nothing(
    setup: Setup, tmp_path: Path
) -> None:
    first = setup.project.doit(*STEPS)
    assert first.code == 0, first.out
    results = setup.results()
    assert {r["status"] for r in results.values()} == {"pushed"}
    assert results["twin-12"]["tags"] == ["12", "latest", "12-20260101"]
    assert results["fixture-12"]["tags"] == ["12", "12-20260101"]
    index = skopeo_raw(setup.ref("fixture", "12"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    manifests = index["manifests"]
    assert isinstance(manifests, list)
    assert [m["platform"] for m in manifests] == [{"architecture": "amd64", "os": "linux"}]
    assert index["annotations"]["org.opencontainers.image.source"] == (  # type: ignore[index]
        "https://example.invalid/kmi-catalogue"
    )
    tags = json.loads(
        run("skopeo", "list-tags", "--tls-verify=false", f"docker://{setup.proxy.host}/kmi/fixture")
    )
    assert sorted(tags["Tags"]) == ["12", "12-20260101"]
    # pull it back and look inside
    pulled = tmp_path / "pulled"
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        setup.ref("fixture", "12"),
        f"oci:{pulled}:x",
    )
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{pulled}:x"))
    env = config["config"]["Env"]
    assert "INSTANCETYPE_KUBEVIRT_IO_DEFAULT_INSTANCETYPE=u1.medium" in env
    assert "INSTANCETYPE_KUBEVIRT_IO_DEFAULT_PREFERENCE=debian" in env
    labels = config["config"]["Labels"]
    assert labels["kmi.upstream.digest"].startswith("sha256:")
    manifest = skopeo_raw(f"oci:{pulled}:x")
    notes = manifest["annotations"]
    assert isinstance(notes, dict)
    for key in ("created", "version", "licenses", "url", "documentation", "title", "source"):
        assert notes[f"org.opencontainers.image.{key}"], key
    assert notes["kmi.upstream.url"].endswith("kmi-fixture-12-20260101-amd64.qcow2")
    assert notes["org.opencontainers.image.created"] == config["created"]
    bundle = tmp_path / "bundle"
    rootless = [] if os.getuid() == 0 else ["--rootless"]
    run("umoci", "unpack", *rootless, "--image", f"{pulled}:x", str(bundle))
    final = setup.build / "fixture-12-amd64" / "disk.qcow2"
    assert (bundle / "rootfs" / "disk" / "disk.img").read_bytes() == final.read_bytes()
    # publish again: the tags already point at these digests, so no blob is sent
    setup.proxy.reset()
    again = setup.project.doit("publish:fixture-12", "publish:twin-12")
    assert again.code == 0, again.out
    assert again.ran() == {"publish:fixture-12", "publish:twin-12"}
    assert {r["status"] for r in setup.results().values()} == {"unchanged"}
    assert setup.proxy.blob_bytes() == 0 and setup.proxy.uploads() == 0
    assert {s.method for s in setup.proxy.seen} == {"HEAD"}


def test_a_new_build_of_the_same_release_gets_a_suffixed_tag_which_the_docs_name(
    setup: Setup,
) -> None:
    """The recipe changed, upstream did not: `12-20260101` is never moved; the new build is
    tagged with 12 hex of its digest, and the README names the tag that was pushed."""
    first = setup.project.doit("publish:fixture-12", "docs:fixture-12")
    assert first.code == 0, first.out
    readme = setup.project.work / "docs" / "images" / "fixture-12.md"
    assert "| tags | `12`, `12-20260101` |" in readme.read_text()
    flavor = setup.project.catalogue / "fixture.yaml"
    flavor.write_text(flavor.read_text().replace("preference: debian", "preference: debian.12"))
    again = setup.project.doit("publish:fixture-12", "docs:fixture-12")
    assert again.code == 0, again.out
    tags = setup.results()["fixture-12"]["tags"]
    assert isinstance(tags, list) and tags[0] == "12"
    assert re.fullmatch(r"12-20260101-[0-9a-f]{12}", tags[1]), tags
    assert f"| tags | `12`, `{tags[1]}` |" in readme.read_text()
    listed = json.loads(
        run("skopeo", "list-tags", "--tls-verify=false", f"docker://{setup.proxy.host}/kmi/fixture")
    )
    assert sorted(listed["Tags"]) == sorted(["12", "12-20260101", tags[1]])


def test_one_failing_image_does_not_stop_the_other(setup: Setup) -> None:
    setup.proxy.rules.fail = re.compile(r" /v2/kmi/twin/")
    done = setup.project.doit(*STEPS)
    assert done.code != 0
    results = setup.results()
    assert results["fixture-12"]["status"] == "pushed"
    assert results["twin-12"]["status"] == "failed"
    assert "HTTP 500" in str(results["twin-12"]["error"])
    assert re.search(r"^FAILED publish:twin-12: .*HTTP 500", done.out, re.M), done.out
    assert re.search(r"^fixture-12 +pushed +sha256:", done.out, re.M), done.out  # the table
    skopeo_raw(setup.ref("fixture", "12"))


def test_a_gated_tier_publishes_nothing_whose_boot_test_failed(setup: Setup) -> None:
    """With every tier gated, fixture-12 (preview, test.required unset) needs its boot test;
    the synthetic disk does not boot, so nothing of it reaches the registry."""
    flavor = setup.project.catalogue / "fixture.yaml"
    flavor.write_text(re.sub(r"\n  required: .*", "", flavor.read_text()))
    done = setup.project.doit("publish:fixture-12", KMI_UNTESTED_TIERS="")
    assert done.code != 0
    assert re.search(
        r"^FAILED test:fixture-12-amd64: fixture-12-amd64: boot test failed: boot: the guest did "
        r"not boot: 'Boot failed: not a bootable disk'",
        done.out,
        re.M,
    ), done.out
    assert "SKIPPED publish:fixture-12: a task it needs failed" in done.out
    assert re.search(r"^fixture-12-amd64 +amd64 +\w+ +- +\d+ s +FAILED +- +- +-$", done.out, re.M)
    assert setup.proxy.blob_bytes() == 0
    untested = setup.project.doit("publish:fixture-12")  # preview may publish untested
    assert untested.code == 0, untested.out
    assert "test:fixture-12-amd64" not in untested.ran()


def test_a_killed_publish_leaves_no_tag_and_the_rerun_completes(setup: Setup) -> None:
    built = setup.project.doit("manifest:fixture-12", "manifest:twin-12")
    assert built.code == 0, built.out
    setup.proxy.rules.hold = re.compile(r"^PUT /v2/kmi/fixture/manifests/sha256:")
    cmd = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "-d", str(setup.project.work)]
    proc = subprocess.Popen(
        [*cmd, "publish:fixture-12"],
        env=setup.project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert setup.proxy.rules.held.wait(120), "the publish never reached its manifests"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sent_before = setup.proxy.blob_bytes()
    assert sent_before > 0  # the blobs went up before the cut
    head = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", setup.ref("fixture", "12")],
        capture_output=True,
        text=True,
    )
    assert head.returncode != 0 and "manifest unknown" in head.stderr, head.stderr
    setup.proxy.reset()
    rerun = setup.project.doit("publish:fixture-12")
    assert rerun.code == 0, rerun.out
    assert setup.proxy.blob_bytes() == 0  # the blobs were there; only manifests went up
    index = skopeo_raw(setup.ref("fixture", "12"))
    receipt = json.loads((setup.build / "images" / "fixture-12" / "manifest.json").read_text())
    assert (
        run(
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            setup.ref("fixture", "12"),
        ).strip()
        == receipt["digest"]
    )
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_rebuilding_into_an_empty_build_folder_gives_identical_digests(setup: Setup) -> None:
    first = setup.project.doit("manifest:fixture-12", "manifest:twin-12")
    assert first.code == 0, first.out
    receipt = setup.build / "images" / "fixture-12" / "manifest.json"
    digest = json.loads(receipt.read_text())["digest"]
    disk = setup.build / "fixture-12-amd64" / "disk.qcow2"
    kept = setup.project.work / "kept.qcow2"
    shutil.copyfile(disk, kept)
    shutil.rmtree(setup.build)
    disk.parent.mkdir(parents=True)
    shutil.copyfile(kept, disk)
    restore(setup.project.env, disk)
    again = setup.project.doit("manifest:fixture-12")
    assert again.code == 0, again.out
    assert json.loads(receipt.read_text())["digest"] == digest


def test_without_a_registry_publish_is_a_dry_run(setup: Setup) -> None:
    env = dict(setup.project.env)
    del env["KMI_REGISTRY"]
    setup.project = Project(setup.project.work, setup.project.catalogue, env)
    done = setup.project.doit("publish:fixture-12")
    assert done.code == 0, done.out
    assert "fixture-12: dry run (no registry given" in done.out
    assert setup.proxy.seen == []
    assert setup.results()["fixture-12"]["status"] == "dry-run"


def test_the_publish_job_needs_no_upstream_file_nor_intermediate_image(
    setup: Setup, mirror: MirrorServer, tmp_path: Path
) -> None:
    """What the workflow's publish job has: each target's build folder without
    sysprep.qcow2, and no download cache. The final disks are current, so nothing upstream
    is fetched and no libguestfs runs; the index is built and pushed."""
    for target in TARGETS:
        (setup.build / target / "sysprep.qcow2").unlink()
    before = len(mirror.settled())
    done = setup.project.doit(*STEPS, KMI_CACHE_DIR=str(tmp_path / "empty-cache"))
    assert done.code == 0, done.out
    assert mirror.settled()[before:] == []  # not one upstream request
    assert not (tmp_path / "empty-cache" / "downloads").exists()
    for target in TARGETS:
        for stage in ("download", "checksum", "sysprep", "sparsify"):
            assert f"{stage}:{target}" in done.skipped()
        assert f"build:{target}" in done.ran()
    assert {r["status"] for r in setup.results().values()} == {"pushed"}
    # a changed customization makes the final disk stale: then the inputs are needed again
    flavor = setup.project.catalogue / "fixture.yaml"
    flavor.write_text(flavor.read_text().replace("customized by kmi", "customized again"))
    stale = setup.project.doit(
        "sysprep:fixture-12-amd64", KMI_CACHE_DIR=str(tmp_path / "empty-cache")
    )
    assert "download:fixture-12-amd64" in stale.ran(), stale.out


def _native_image(setup: Setup, target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The native engine's per-arch config and manifest of `target`, from its layout."""
    layout = setup.build / target / "oci"
    manifest = json.loads(run("skopeo", "inspect", "--raw", f"oci:{layout}"))
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layout}"))
    return config, manifest


def test_the_bake_definition_carries_what_the_native_engine_sets(setup: Setup) -> None:
    done = setup.project.doit("build:fixture-12-amd64", "bake:fixture-12")
    assert done.code == 0, done.out
    bake_file = setup.build / "images" / "fixture-12" / "docker-bake.json"
    assert f"fixture-12: bake definition over amd64 in {bake_file}" in done.out
    bake = json.loads(bake_file.read_text())
    assert bake["group"] == {"fixture-12": {"targets": ["fixture-12-amd64"]}}
    target = bake["target"]["fixture-12-amd64"]
    config, manifest = _native_image(setup, "fixture-12-amd64")
    env = "\n".join(
        f'ENV {k}="{v}"' for k, v in (line.split("=", 1) for line in config["config"]["Env"])
    )
    assert target["dockerfile-inline"] == (
        "FROM scratch\n"
        "ADD --chown=107:107 --chmod=0444 disk.img /disk/disk.img\n"
        f"{env}\n"
        'ENTRYPOINT ["no-entrypoint"]\n'
    )
    assert target["platforms"] == ["linux/amd64"]
    assert target["labels"] == config["config"]["Labels"]
    assert target["annotations"] == [
        f"manifest:{k}={v}" for k, v in sorted(manifest["annotations"].items())
    ]
    assert target["output"] == [
        f"type=image,name={setup.proxy.host}/kmi/fixture,push-by-digest=true,"
        "name-canonical=true,push=true,registry.insecure=true"  # plain HTTP on loopback
    ]
    context = Path(target["context"])
    assert context == setup.build / "fixture-12-amd64" / "bake"
    assert [p.name for p in context.iterdir()] == ["disk.img"]  # only the disk is sent
    disk = setup.build / "fixture-12-amd64" / "disk.qcow2"
    assert os.path.samestat((context / "disk.img").stat(), disk.stat())  # a hard link
    again = setup.project.doit("bake:fixture-12")
    assert again.ran() == set()


FAKE_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[:2] == ["buildx", "--help"]:
    print("Usage:  docker buildx [OPTIONS] COMMAND")
elif args[:2] == ["buildx", "bake"] and "--print" in args:
    print("{{}}")
elif args[:2] == ["buildx", "bake"]:
    metadata = args[args.index("--metadata-file") + 1]
    digest = {{"containerimage.digest": "sha256:" + "a" * 64}}
    with open(metadata, "w") as out:
        json.dump({{args[-1]: digest}}, out)
"""


def test_the_buildx_engine_bakes_each_arch_then_imagetools_indexes_them(
    setup: Setup, tmp_path: Path
) -> None:
    """A fake docker on PATH pins the command lines python-on-whales runs: build:T bakes
    the target and pushes it by digest, publish:I indexes the digests the build receipts
    hold (as the workflow's publish job does with other jobs' receipts). The fake pushes
    nothing, so kmi finds no index in the registry afterwards and says so."""
    native = setup.project.doit("manifest:fixture-12")  # for its index annotations
    assert native.code == 0, native.out
    notes = json.loads((setup.build / "images" / "fixture-12" / "manifest.json").read_text())
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "docker.log"
    env = {"KMI_ENGINE": "buildx", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = setup.project.doit("publish:fixture-12", FAKE_DOCKER_LOG=str(log), **env)
    assert done.code == 1, done.out
    assert done.ran() >= {"build:fixture-12-amd64", "publish:fixture-12"}
    assert "manifest:fixture-12" not in done.ran()  # BuildKit packs, imagetools indexes
    folder = setup.build / "fixture-12-amd64"
    bake_file = folder / "docker-bake.json"
    bake = ["buildx", "bake", "--push", "--progress", "plain", "--file", str(bake_file)]
    metadata = ["--metadata-file", str(folder / "bake-metadata.json")]
    ref = f"{setup.proxy.host}/kmi/fixture"
    index = [f"--annotation index:{k}={v}" for k, v in sorted(notes["annotations"].items())]
    assert log.read_text().splitlines() == [
        "buildx --help",
        " ".join([*bake, *metadata, "fixture-12-amd64"]),
        " ".join([*bake, *metadata, "--print", "fixture-12-amd64"]),
        "buildx --help",
        " ".join(
            [
                "buildx imagetools create",
                f"--tag {ref}:12 --tag {ref}:12-20260101",
                *index,
                f"{ref}@sha256:{'a' * 64}",
            ]
        ),
    ]
    assert f"fixture-12-amd64: pushed {ref}@sha256:{'a' * 64} with buildx" in done.out
    assert (
        f"FAILED publish:fixture-12: fixture-12: docker buildx imagetools create finished, "
        f"but {ref}:12 is not in the registry"
    ) in done.out
    # the target's own bake file holds the same target as the image's (doit bake:I)
    assert setup.project.doit("bake:fixture-12", **env).code == 0
    image_file = setup.build / "images" / "fixture-12" / "docker-bake.json"
    mine = json.loads(bake_file.read_text())["target"]["fixture-12-amd64"]
    assert mine == json.loads(image_file.read_text())["target"]["fixture-12-amd64"]
    # the build is current (its receipt names the digest): the next publish bakes nothing
    log.unlink()
    again = setup.project.doit("publish:fixture-12", FAKE_DOCKER_LOG=str(log), **env)
    assert "build:fixture-12-amd64" not in again.ran()
    assert [line.split()[:2] for line in log.read_text().splitlines()] == [
        ["buildx", "--help"],
        ["buildx", "imagetools"],
    ]
    # the native index has no place in this engine: one line says what to run instead
    native_index = setup.project.doit("manifest:fixture-12", FAKE_DOCKER_LOG=str(log), **env)
    assert native_index.code == 1
    assert (
        "FAILED manifest:fixture-12: fixture-12: with KMI_ENGINE=buildx the index is made in "
        "the registry by `docker buildx imagetools create`; run: doit publish:fixture-12"
    ) in native_index.out


def test_the_buildx_engine_without_buildx_is_one_line(setup: Setup) -> None:
    """python-on-whales asks the real docker CLI here, which has no buildx plugin."""
    from kmi.stages.bake import missing_buildx

    missing = missing_buildx()
    if missing is None:
        pytest.skip("docker buildx is installed here; the real engine test covers it")
    done = setup.project.doit("publish:fixture-12", KMI_ENGINE="buildx")
    assert done.code == 2  # the build failed, so publish was skipped
    assert "SKIPPED publish:fixture-12: a task it needs failed" in done.out
    assert (
        f"FAILED build:fixture-12-amd64: fixture-12-amd64: KMI_ENGINE=buildx, but {missing}; "
        "install docker buildx, or unset KMI_ENGINE to use the native engine"
    ) in done.out
    assert "Traceback" not in done.out


def test_the_buildx_engine_publishes_with_real_buildx(setup: Setup) -> None:
    from kmi.stages.bake import missing_buildx

    missing = missing_buildx()
    if missing is not None:
        print(f"SKIPPED the real buildx engine: {missing}")
        pytest.skip(f"needs docker buildx: {missing}")
    done = setup.project.doit("publish:fixture-12", KMI_ENGINE="buildx")
    assert done.code == 0, done.out
    index = skopeo_raw(setup.ref("fixture", "12"))
    manifests = index["manifests"]
    assert isinstance(manifests, list)
    assert [m["platform"]["architecture"] for m in manifests][:1] == ["amd64"]


def test_a_failed_imagetools_create_shows_the_tools_own_words() -> None:
    """The real docker CLI (here without buildx; elsewhere with a registry that is not
    there): the failure carries what docker said, not a pointer to output nobody saw."""
    from kmi.stages import bake

    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here")
    with pytest.raises(KmiError) as err:
        bake.assemble("127.0.0.1:9/kmi/x", ["sha256:" + "a" * 64], ["1"], {"k": "v"})
    lines = str(err.value).splitlines()
    assert lines[0].startswith(
        "127.0.0.1:9/kmi/x: docker buildx imagetools create failed with exit code "
    )
    assert len(lines) > 1 and lines[1].strip() and "(no output)" not in lines[1]
    assert "above" not in str(err.value)
