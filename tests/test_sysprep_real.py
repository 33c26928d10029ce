"""sysprep and sparsify with the real tools (libguestfs under TCG here) on the fixture: a
Debian image built from Debian's packages, served by the mirror like any upstream.

One build is shared by the module; it takes a few minutes under TCG."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmi.demo import fixture as fixture_image
from kmi.demo.layouts import debian
from kmi.demo.registry import RegistryServer
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, environment, pin_key
from tests import attestations
from tests.attestations import keypair
from tests.conftest import REPO, Project
from tests.test_kill import gone, marked

TARGET = "fixture-12-amd64"
GUESTFS = {"LIBGUESTFS_BACKEND": "direct"}


@dataclass
class Built:
    project: Project
    first: str  # output of the first build
    source: Path  # the upstream image as served
    registry: RegistryServer  # holds the shared stage cache


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, gpg_key: SigningKey) -> Iterator[Built]:
    work = tmp_path_factory.mktemp("sysprep")
    made = fixture_image.fixture()
    server = MirrorServer(work / "mirror").start()
    upstreams = Upstreams(work / "mirror", gpg_key)
    fixture_image.publish(upstreams, made)
    debian(upstreams)
    catalogue = pin_key(REPO / "distros", work / "distros", gpg_key)
    fixture_image.add_flavor(catalogue, made, gpg_key)
    registry = RegistryServer(work / "registry").start()  # the shared stage cache
    shared = f"docker://{registry.host}/kmi-cache"
    project = Project(
        work,
        catalogue,
        # a libguestfs hang under TCG is stopped and retried well before the test's own limit
        environment(
            catalogue,
            work,
            server.url,
            KMI_CACHE_URL=shared,
            KMI_GUESTFS_TIMEOUT="600",
            KMI_SOURCE_URL="https://example.invalid/kmi-catalogue",  # the metadata criterion
        ),
    )
    run = project.doit(f"build:{TARGET}", "checksum:debian-12-amd64")
    assert run.code == 0, run.out
    yield Built(project, run.out, made / "fixture.qcow2", registry)
    registry.stop()
    server.stop()


def guestfish(image: Path, script: str) -> str:
    done = subprocess.run(
        ["guestfish", "--ro", "-a", str(image), "-i"],
        input=script,
        capture_output=True,
        text=True,
        env={**_env(), **GUESTFS},
    )
    # `-cat` lines may fail (a file the fixture lacks), so the exit code is not the verdict;
    # the callers check every section they expect.
    assert "--end" in done.stdout, done.stderr
    return done.stdout


def _env() -> dict[str, str]:
    import os

    from kmi.accel import choose, libguestfs_env

    accel, _ = choose("auto", Path(os.environ.get("TMPDIR", "/tmp")) / "kmi-accel.json")
    return {**os.environ, **libguestfs_env(accel)}


INSPECT = """\
echo --release
-cat /etc/kmi-release
echo --command
-cat /var/lib/kmi-command-ran
echo --service
-is-symlink /etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service
echo --machine-id
filesize /etc/machine-id
echo --host-keys
ls /etc/ssh
echo --repo
exists /var/local/fixture-repo
echo --end
"""


def sections(output: str) -> dict[str, str]:
    parts, current = {}, ""
    for line in output.splitlines():
        if line.startswith("--"):
            current = line[2:]
            parts[current] = ""
        else:
            parts[current] += line + "\n"
    return {k: v.strip() for k, v in parts.items()}


def inspect(image: Path, tmp: Path, more: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """What INSPECT (after the guestfish lines `more`) prints, and package -> dpkg status:
    one appliance boot per image."""
    status = tmp / f"{image.name}.status"
    script = more + INSPECT + f"download /var/lib/dpkg/status {status}\n"
    found = sections(guestfish(image, script))
    packages = {}
    for stanza in status.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if "Package" in fields:
            packages[fields["Package"]] = fields.get("Status", "")
    return found, packages


def test_sysprep_applied_the_catalogue_and_removed_identity(built: Built, tmp_path: Path) -> None:
    before, packages = inspect(built.source, tmp_path)
    assert before["machine-id"] != "0" and "ssh_host_" in before["host-keys"]  # it has both
    assert "qemu-guest-agent" not in packages
    after, packages = inspect(built.project.work / "build" / TARGET / "disk.qcow2", tmp_path)
    assert packages["qemu-guest-agent"] == "install ok installed"
    assert after["release"] == "customized by kmi"
    assert after["command"] == "ran"
    assert after["service"] == "true"
    assert after["machine-id"] == "0"
    assert "ssh_host_" not in after["host-keys"] and "sshd_config" in after["host-keys"]
    assert after["repo"] == "false"  # post_commands ran last


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def test_sparsify_made_a_smaller_checked_qcow2_with_the_same_files(built: Built) -> None:
    build = built.project.work / "build" / TARGET
    disk, customized = build / "disk.qcow2", build / "sysprep.qcow2"
    info = json.loads(qemu_img("info", "--output=json", str(disk)).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert qemu_img("check", str(disk)).returncode == 0
    assert disk.stat().st_size < customized.stat().st_size
    diff = subprocess.run(
        ["virt-diff", "-a", str(customized), "-A", str(disk)],
        capture_output=True,
        text=True,
        env={**_env(), **GUESTFS},
    )
    # virt-diff now and then reports every file as changed in st_dev alone (the two disks
    # got other device numbers in its appliance): not a change of the files
    changes = [line for line in diff.stdout.splitlines() if line.startswith("# changed:")]
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert all(line == "# changed: st_dev" for line in changes), diff.stdout
    assert not [
        line for line in diff.stdout.splitlines() if line.startswith(("- ", "+ ")) and not changes
    ], diff.stdout
    receipt = json.loads((build / "sparsify.json").read_text())
    assert receipt["final_size"] == disk.stat().st_size
    assert "upstream " in built.first and " -> final " in built.first


def test_logs_hold_each_tool_run(built: Built) -> None:
    logs = built.project.work / "build" / TARGET / "logs"
    sysprep = (logs / "sysprep.log").read_text()
    assert "$ " in sysprep and "virt-customize" in sysprep and "virt-sysprep" in sysprep
    assert "[exit 0]" in (logs / "sparsify.log").read_text()


def test_the_sbom_lists_what_dpkg_installed_and_validates(built: Built, tmp_path: Path) -> None:
    """sbom:T on the final disk: every installed package, the licence of Debian's
    machine-readable copyright files where kmi can assert it; spdx-tools validates it."""
    project = built.project
    run = project.doit(f"sbom:{TARGET}")
    assert run.code == 0, run.out
    document = project.work / "build" / TARGET / "sbom.spdx.json"
    assert f"{TARGET}: SBOM of " in run.out and str(document) in run.out
    checked = subprocess.run(
        [str(Path(sys.executable).with_name("pyspdxtools")), "-i", str(document)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    doc = json.loads(document.read_text())
    packages = {p["name"]: p for p in doc["packages"][1:]}
    _, installed = inspect(project.work / "build" / TARGET / "disk.qcow2", tmp_path)
    assert set(packages) == {n for n, s in installed.items() if s.endswith(" installed")}
    agent = packages["qemu-guest-agent"]
    assert agent["externalRefs"][0]["referenceLocator"].startswith(
        "pkg:deb/debian/qemu-guest-agent@"
    )
    assert packages["bash"]["licenseDeclared"] == "GPL-3.0-or-later"  # Debian's "GPL-3+"
    made = json.loads((project.work / "build" / TARGET / "build.json").read_text())
    manifest = Path(made["layout"]) / "blobs" / "sha256" / made["manifest"].split(":")[1]
    created = json.loads(manifest.read_text())["annotations"]["org.opencontainers.image.created"]
    assert doc["creationInfo"]["created"] == created  # the image's time: the same every run
    again = project.doit(f"sbom:{TARGET}")
    assert again.code == 0 and again.ran() == set(), again.out


def test_a_second_machine_restores_every_stage_from_the_shared_cache(
    built: Built, tmp_path: Path
) -> None:
    """Another build folder and download cache, the same KMI_CACHE_URL (a registry on
    loopback): no libguestfs run, the same digests; a damaged entry is reported and
    rebuilt, never used."""
    first = built.project.work / "build" / TARGET
    for stage in ("sysprep", "sparsify", "build"):
        assert f"{TARGET}: {stage} added to the stage cache" in built.first
    env = {
        **built.project.env,
        "KMI_BUILD_DIR": str(tmp_path / "build"),
        "KMI_CACHE_DIR": str(tmp_path / "cache"),
    }
    second = Project(built.project.work, built.project.catalogue, env)
    run = second.doit(f"build:{TARGET}")
    assert run.code == 0, run.out
    for stage in ("sysprep", "sparsify", "build"):
        assert f"{TARGET}: {stage} restored from the stage cache" in run.out
    mine = tmp_path / "build" / TARGET
    assert not (mine / "logs" / "sysprep.log").exists()  # virt-customize never ran here
    assert not (mine / "logs" / "sparsify.log").exists()
    receipt = json.loads((first / "build.json").read_text())
    assert json.loads((mine / "build.json").read_text())["manifest"] == receipt["manifest"]
    assert _sha256(mine / "disk.qcow2") == _sha256(first / "disk.qcow2")
    # damage the build entry: the third machine notices, ignores it and packs the disk itself
    entry = json.loads((mine / "build.json").read_text())["restored_from"]
    assert entry.startswith(f"{built.registry.host}/kmi-cache:build-")
    shown = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{entry}"],
        capture_output=True,
        text=True,
        check=True,
    )
    layer = max(json.loads(shown.stdout)["layers"], key=lambda d: d["size"])
    blob = Path(layer["annotations"]["org.opencontainers.image.title"])
    hexdigest = layer["digest"].removeprefix("sha256:")
    storage = built.registry.folder / "storage/docker/registry/v2/blobs/sha256"
    with (storage / hexdigest[:2] / hexdigest / "data").open("r+b") as damaged:
        damaged.seek(1000)
        damaged.write(b"\xff")
    third_build = tmp_path / "build3"
    third = Project(
        built.project.work, built.project.catalogue, {**env, "KMI_BUILD_DIR": str(third_build)}
    )
    run = third.doit(f"build:{TARGET}")
    assert run.code == 0, run.out
    assert f"stage cache entry {entry} is damaged ({blob}: sha256:" in run.out
    assert f"{TARGET}: containerdisk {receipt['manifest'][:19]}" in run.out  # packed again
    assert (
        json.loads((third_build / TARGET / "build.json").read_text())["manifest"]
        == receipt["manifest"]
    )


def test_second_run_does_nothing_and_a_killed_package_change_reruns_only_its_targets(
    built: Built, tmp_path: Path
) -> None:
    """The package change's first run is killed mid-sysprep with SIGKILL to its whole
    process group, as a CI runner cancelling a job: the libguestfs tool and its appliance
    run in groups of their own, and still die with kmi; nothing counts as done, and the
    next run converges."""
    project = built.project
    again = project.doit(f"build:{TARGET}", "checksum:debian-12-amd64")
    assert again.code == 0 and again.ran() == set(), again.out
    yaml = project.catalogue / "fixture.yaml"
    yaml.write_text(
        yaml.read_text().replace(
            "packages: [qemu-guest-agent]", "packages: [qemu-guest-agent, tree]"
        )
    )
    _kill_mid(project, f"build:{TARGET}", "qemu-system")
    changed = project.doit(f"build:{TARGET}", "checksum:debian-12-amd64")
    assert changed.code == 0, changed.out
    assert changed.ran() == {f"sysprep:{TARGET}", f"sparsify:{TARGET}", f"build:{TARGET}"}
    _, packages = inspect(project.work / "build" / TARGET / "disk.qcow2", tmp_path)
    assert packages["tree"] == "install ok installed"
    assert packages["qemu-guest-agent"] == "install ok installed"


def _kill_mid(project: Project, task: str, word: str, **env: str) -> None:
    """Start `task`, SIGKILL its process group once a process of the run has `word` in its
    command line, and check that none of the run's processes is left."""
    mark = uuid.uuid4().hex
    run = project.start(task, KMI_KILL_TEST=mark, **env)
    # a libguestfs hang is stopped at KMI_GUESTFS_TIMEOUT and tried once more: wait past it
    limit = 2 * float({**project.env, **env}["KMI_GUESTFS_TIMEOUT"]) + 300
    try:
        assert _running(mark, word, limit), (project.work / "background.log").read_text()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert gone(mark, 60) == [], f"{task}: left running after the kill"


def test_publish_waits_for_the_boot_test(built: Built) -> None:
    """The fixture flavor sets test.required: publish refuses a disk not yet boot-tested
    (run alone with -s, without the test task publish depends on)."""
    assert built.project.doit("manifest:fixture-12").code == 0
    refused = built.project.doit("-s", "publish:fixture-12")
    assert refused.code == 1, refused.out
    assert (
        "FAILED publish:fixture-12: fixture-12: not published: fixture-12-amd64 has not passed "
        "its boot test, which test.required requires; run: doit test:fixture-12-amd64"
    ) in refused.out


def test_the_final_disk_boots_to_every_check(built: Built) -> None:
    """After a first boot test killed mid-boot (no QEMU left, no result counted)."""
    disk = built.project.work / "build" / TARGET / "disk.qcow2"
    before = _sha256(disk)
    _kill_mid(built.project, f"test:{TARGET}", "guest_agent")
    assert not (built.project.work / "build" / TARGET / "test.json").exists()
    run = built.project.doit(f"test:{TARGET}")
    assert run.code == 0, run.out
    assert run.ran() == {f"test:{TARGET}"}
    assert f"{TARGET}: passed boot, cloud-init, agent and ssh in " in run.out
    results = json.loads((built.project.work / "build" / "results.json").read_text())
    entry = results["tests"][TARGET]
    assert entry["status"] == "passed" and entry["accel"] in ("kvm", "tcg")
    assert {name: c["passed"] for name, c in entry["checks"].items()} == {
        "boot": True,
        "cloud-init": True,
        "agent": True,
        "ssh": True,
        # the tiers' boot-time criteria: the agent added a second key, which then logged in;
        # Debian ships AppArmor; DHCP gave a default route; cloud-init's growpart grew / onto
        # the disk the test made 1 GiB larger than the image
        "agent-ssh-key": True,
        "security": True,
        "network": True,
        "root-grows": True,
    }, entry["checks"]
    assert "Debian GNU/Linux 12 (bookworm)" in entry["checks"]["agent"]["detail"]
    assert entry["checks"]["security"]["detail"] == "AppArmor enabled"
    assert f"{TARGET}: for the support tiers: agent-ssh-key ok" in run.out
    # the table: target, arch, accel, seconds, each check
    header = next(line for line in run.out.splitlines() if line.startswith("target "))
    columns = ["target", "arch", "accel", "up after", "took", "boot", "cloud-init", "agent", "ssh"]
    assert re.split(r"\s{2,}", header.strip()) == columns
    row = next(line for line in run.out.splitlines() if line.startswith(f"{TARGET} "))
    assert row.split()[1:3] == ["amd64", entry["accel"]]
    assert row.split()[-4:] == ["ok", "ok", "ok", "ok"]
    logs = built.project.work / "build" / TARGET / "logs"
    assert "Cloud-init v." in (logs / "test-console.log").read_text(errors="replace")
    assert json.loads((logs / "test-checks.json").read_text())["status"] == "passed"
    assert _sha256(disk) == before  # booted through a throw-away overlay
    again = built.project.doit(f"test:{TARGET}")
    assert again.code == 0 and again.ran() == set(), again.out
    stale = built.project.doit("ci-matrix", "only=stale")  # CI: only what needs a job
    assert stale.code == 0, stale.out
    jobs = json.loads((built.project.work / "build" / "ci-matrix.json").read_text())["include"]
    assert TARGET not in [j["target"] for j in jobs]
    assert "debian-12-amd64" in [j["target"] for j in jobs]


def test_the_real_disk_is_published_and_reads_back_byte_for_byte(
    built: Built, tmp_path: Path
) -> None:
    from kmi.demo.registry import RegistryServer

    registry = RegistryServer(tmp_path / "registry").start()
    try:
        where = f"{registry.host}/kmi"
        key, public = keypair(tmp_path / "keys", "kmi")
        # the flavor made stable: every criterion is required, the signature too
        flavor = built.project.catalogue / "fixture.yaml"
        flavor.write_text(flavor.read_text().replace("tier: preview", "tier: stable"))
        refused = built.project.doit("publish:fixture-12", KMI_REGISTRY=where)
        assert refused.code != 0
        assert f"verify:{TARGET}" in refused.ran()
        results = json.loads((built.project.work / "build" / "results.json").read_text())
        for criterion in ("metadata", "size", "qcow2", "packages"):
            assert f"{TARGET}: {criterion}: passed: " in refused.out, refused.out
            assert results["criteria"][TARGET][criterion]["passed"] is True
        assert (
            "fixture-12: not published: its tier, stable, requires criteria "
            f"{TARGET} has not passed: signature (KMI_SIGNING_KEY is not set: publish would "
            "not sign);"
        ) in refused.out
        assert "Traceback" not in refused.out
        assert run_skopeo(["inspect", "--raw", f"docker://{where}/fixture:12"]).returncode != 0
        done = built.project.doit(
            "publish:fixture-12", KMI_REGISTRY=where, KMI_SIGNING_KEY=str(key)
        )
        assert done.code == 0, done.out
        assert "publish:fixture-12" in done.ran()
        assert "fixture-12: attached 2 signed attestation(s) (SBOM, provenance)" in done.out
        made = json.loads((built.project.work / "build" / TARGET / "build.json").read_text())
        # containers/image under a policy requiring the key's signature: accepted; under one
        # naming another key: refused
        skopeo = attestations.Trixie(tmp_path)
        _, stranger = keypair(tmp_path / "keys", "stranger")
        try:
            trusting = skopeo.policy("trusting", registry.host, public)
            accepted = skopeo.pull(trusting, f"docker://{where}/fixture:12")
            assert accepted.returncode == 0, accepted.stderr
            wary = skopeo.policy("wary", registry.host, stranger)
            refused_pull = skopeo.pull(wary, f"docker://{where}/fixture:12")
            assert refused_pull.returncode != 0
            assert "signature" in refused_pull.stderr.lower(), refused_pull.stderr
            # cosign verifies the SBOM attestation of the per-arch image with the key
            per_arch = f"{where}/fixture@{made['manifest']}"
            sbom_checked = skopeo.cosign(
                "verify-attestation", public, per_arch, "--type", "spdxjson"
            )
            assert sbom_checked.returncode == 0, sbom_checked.stdout + sbom_checked.stderr
        finally:
            skopeo.close()
        # both readable back with skopeo; each envelope's signature checked by securesystemslib
        found = {
            kind: attestations.verified(envelope, public.read_bytes())
            for kind, envelope in attestations.attached(
                f"{where}/fixture", made["manifest"], tmp_path / "att"
            )
        }
        document = built.project.work / "build" / TARGET / "sbom.spdx.json"
        assert found["https://spdx.dev/Document"]["predicate"] == json.loads(document.read_text())
        provenance = found["https://slsa.dev/provenance/v1"]["predicate"]
        internal = provenance["buildDefinition"]["internalParameters"]
        assert internal["customized"] == "native" and internal["hostArch"] == "amd64"
        assert {"virt-customize", "virt-sparsify", "qemu-img"} <= set(internal["tools"])
        reference = f"docker://{where}/fixture:12"
        pulled = tmp_path / "pulled"
        copy = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", reference]
        assert subprocess.run([*copy, f"oci:{pulled}:x"], capture_output=True).returncode == 0
        bundle = tmp_path / "bundle"
        unpack = ["umoci", "unpack", "--image", f"{pulled}:x", str(bundle)]
        if os.getuid() != 0:
            unpack.insert(2, "--rootless")
        assert subprocess.run(unpack, capture_output=True).returncode == 0
        final = built.project.work / "build" / TARGET / "disk.qcow2"
        inside = bundle / "rootfs" / "disk" / "disk.img"
        assert inside.stat().st_size == final.stat().st_size
        assert _sha256(inside) == _sha256(final)
        docs = built.project.doit("docs:fixture-12", KMI_REGISTRY=where)
        assert docs.code == 0, docs.out
        readme = (built.project.work / "docs" / "images" / "fixture-12.md").read_text()
        tags = ", ".join(f"`{t}`" for t in published_tags(built))
        assert f"| tags | {tags} |" in readme  # what publish pushed, as the README says
        assert "| boot test | passed before every publish" in readme
        assert f"image: {where}/fixture:12" in readme
    finally:
        flavor = built.project.catalogue / "fixture.yaml"
        flavor.write_text(flavor.read_text().replace("tier: stable", "tier: preview"))
        registry.stop()


def run_skopeo(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args, "--tls-verify=false"], capture_output=True, text=True)


def published_tags(built: Built) -> list[str]:
    """The tags publish:fixture-12 set, from results.json."""
    results = json.loads((built.project.work / "build" / "results.json").read_text())
    tags: list[str] = results["images"]["fixture-12"]["tags"]
    return tags


def _sha256(path: Path) -> str:
    import hashlib

    from kmi.files import feed

    hasher = hashlib.sha256()
    feed(hasher, path)
    return hasher.hexdigest()


def _running(mark: str, word: str, seconds: float) -> bool:
    """Whether a process carrying `mark` with `word` in its command line shows up in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid in marked(mark):
            with contextlib.suppress(OSError):
                if word.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
        time.sleep(0.5)
    return False


TRACES = """\
echo --hostname
cat /etc/hostname
echo --user
-grep debian: /etc/passwd
echo --cloud
-ls /var/lib/cloud
echo --results
exists /var/lib/kmi-customize
echo --network
exists /etc/network/interfaces.d/50-cloud-init
"""


def test_an_emulated_build_killed_mid_boot_leaves_nothing_then_matches_the_native_one(
    built: Built, tmp_path: Path
) -> None:
    """KMI_CUSTOMIZE=emulated on this amd64 host: the guest steps run in the fixture booted
    under QEMU. Killed mid-boot, nothing runs on and nothing counts as done; run again, it
    makes what the native build made, under the same stage key, and leaves no trace of the
    boot (no user, the image's hostname, no cloud-init state, no step results)."""
    project = built.project
    emulated = {
        "KMI_CUSTOMIZE": "emulated",
        "KMI_BUILD_DIR": str(tmp_path / "build"),
        "KMI_CACHE_URL": "",  # make it here, not restore the native build's entry
    }
    mine = tmp_path / "build" / TARGET
    _kill_mid(project, f"sysprep:{TARGET}", "kmi-customize", **emulated)
    assert not (mine / "sysprep.json").exists() and not (mine / "sysprep.qcow2").exists()
    again = project.doit(f"sysprep:{TARGET}", **emulated)
    assert again.code == 0, again.out
    assert f"{TARGET}: customizing, emulated: KMI_CUSTOMIZE=emulated (log: " in again.out
    native = json.loads((project.work / "build" / TARGET / "sysprep.json").read_text())
    made = json.loads((mine / "sysprep.json").read_text())
    assert (native["customized"], made["customized"]) == ("native", "emulated")
    assert made["key"] == native["key"]  # one cache entry, whichever way it was made
    image = mine / "sysprep.qcow2"
    after, packages = inspect(image, tmp_path, TRACES)
    assert packages["qemu-guest-agent"] == "install ok installed"
    assert after["release"] == "customized by kmi"
    assert after["command"].startswith("ran")
    assert after["service"] == "true"
    assert after["machine-id"] == "0"
    assert "ssh_host_" not in after["host-keys"]
    assert after["repo"] == "false"  # post_commands ran, in the guest, last
    assert after["hostname"] == "kmi-fixture" and after["user"] == ""  # the boot's traces
    assert after["cloud"] == "" and after["results"] == "false"
    assert after["network"] == "false"
    console = (mine / "logs" / "sysprep-console.log").read_text(errors="replace")
    assert "kmi-customize: step 1 (packages) ended with exit status 0" in console


def test_a_failing_guest_step_fails_the_emulated_build_with_one_line(
    built: Built, tmp_path: Path
) -> None:
    project = built.project
    flavor = project.catalogue / "fixture.yaml"
    original = flavor.read_text()
    broken = re.sub(r"packages: \[[^]]*\]", "packages: [no-such-package]", original)
    assert broken != original
    flavor.write_text(broken)
    build = tmp_path / "build"
    try:
        run = project.doit(
            f"sysprep:{TARGET}",
            KMI_CUSTOMIZE="emulated",
            KMI_BUILD_DIR=str(build),
            KMI_CACHE_URL="",
        )
    finally:
        flavor.write_text(original)
    assert run.code == 1, run.out
    console = build / TARGET / "logs" / "sysprep-console.log"
    assert (
        f"{TARGET}: guest step packages failed with exit status 100 (customizing by emulation); "
        f"console: {console}"
    ) in run.out
    assert "Unable to locate package no-such-package" in run.out
    assert "the console's last lines:" in run.out and "Traceback" not in run.out
    kept = sorted(p.name for p in (build / TARGET).iterdir())
    assert not [name for name in kept if "sysprep" in name], kept  # nothing half-made kept
