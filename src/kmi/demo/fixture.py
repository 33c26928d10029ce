"""The fixture image: a real, bootable Debian disk built offline from Debian's packages by
scripts/fixture-image.sh, cached on the machine by the hash of that script and served by
the local mirror like any upstream image (tests, demo, benchmarks).

The fixture flavor's catalogue entry is written beside the copied catalogue: it installs
qemu-guest-agent from a local apt repository copied into the guest, so that a package
install is real without any network.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from kmi.accel import choose, libguestfs_env
from kmi.demo.upstreams import Image, SigningKey, Upstreams
from kmi.errors import KmiError
from kmi.files import exclusive

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "fixture-image.sh"
# arm64: built with qemu-user-static, booted by UEFI; on an amd64 host its sysprep installs
# the guest agent by booting it under qemu-system-aarch64
SCRIPTS = {
    "amd64": SCRIPT,
    "arm64": REPO / "scripts" / "fixture-image-arm64.sh",
    # not an image: a Debian trixie root with a skopeo that checks cosign signatures
    "skopeo": REPO / "scripts" / "skopeo-root.sh",
}
MADE = {"amd64": "fixture.qcow2", "arm64": "fixture.qcow2", "skopeo": "root/usr/bin/skopeo"}
HOST = "https://fixture.kmi.invalid/images"  # .invalid: never a real upstream
RELEASE = "20260101"

FLAVOR = """\
# The offline stand-in upstream: Debian bookworm built by scripts/fixture-image.sh.
name: fixture
description: A small Debian bookworm cloud image built offline, standing in for an upstream.
homepage: https://www.debian.org/
license: Free software under the licences of its packages (DFSG)
tier: preview
versions:
  - version: "12"
    name: bookworm
upstream:
  arches: {{{arches}}}
  discovery:
    kind: listing
    index: {host}/{{version}}/
    match: 'kmi-fixture-{{version}}-(?P<release>[0-9]{{8}})-{{uarch}}\\.qcow2'
  checksum: {{url: "{{dir}}/SHA256SUMS", format: gnu, algorithm: sha256}}
  signature:
    kind: detached
    url: "{{checksum_url}}.asc"
    keys: [local-key.asc]
    fingerprints: [{fingerprint}]
customize:
  copy_in:
    - {{source: fixture-repo, dest: /var/local}}
  files:
    - path: /etc/apt/sources.list
      content: "deb [trusted=yes] file:/var/local/fixture-repo ./\\n"
    - {{path: /etc/kmi-release, content: "customized by kmi\\n", mode: "0640"}}
  packages: [qemu-guest-agent]
  commands: ["echo ran > /var/lib/kmi-command-ran"]
  services: [serial-getty@ttyS0.service]
  post_commands: ["rm -rf /var/local/fixture-repo /etc/apt/sources.list"]
sysprep:
  operations: [defaults, -ssh-userdir]
containerdisk:
  user: debian
  preference: debian
test:
  os_id: debian
  required: true  # preview may publish untested; the demo and tests exercise the gate
"""


def cache_dir() -> Path:
    """Where built fixtures are kept: KMI_FIXTURE_CACHE, or ~/.cache/kmi-fixtures."""
    return Path(os.environ.get("KMI_FIXTURE_CACHE", "~/.cache/kmi-fixtures")).expanduser()


def _built(arch: str) -> Path:
    script = SCRIPTS[arch]
    return cache_dir() / hashlib.sha256(script.read_bytes()).hexdigest()[:16]


def cached(arch: str = "amd64") -> Path | None:
    """The fixture of `arch` if it was built on this machine already, else None."""
    built = _built(arch)
    return built if (built / MADE[arch]).exists() else None


def fixture(arch: str = "amd64") -> Path:
    """The folder holding fixture.qcow2 (and, for amd64, repo/; for skopeo, root/), built
    once per version of its script (libguestfs on KVM or TCG as the probe decides: KVM can
    hang where it is broken)."""
    script, built = SCRIPTS[arch], _built(arch)
    with exclusive(built.with_name(f"{built.name}.guard")):
        if not (built / MADE[arch]).exists():
            print(f"building the {arch} fixture into {built} (minutes, once)", flush=True)
            chosen, _ = choose(os.environ.get("KMI_ACCEL", "auto"), cache_dir() / "accel.json")
            env = {**os.environ, **libguestfs_env(chosen)}
            done = subprocess.run(["bash", str(script), str(built)], env=env)
            if done.returncode != 0:
                raise KmiError(f"{script} failed with exit code {done.returncode}")
    return built


@contextlib.contextmanager
def served(work: Path, arm64: bool = False) -> Iterator[dict[str, str]]:
    """A kmi project in `work` whose catalogue (a copy of the repository's) has the fixture
    flavor (for arm64 too, with `arm64`), served as an upstream by a local mirror: yields
    the environment of its doit runs."""
    from kmi.demo.server import MirrorServer
    from kmi.demo.upstreams import environment, pin_key

    made = fixture()
    other = fixture("arm64") if arm64 else None
    key = SigningKey(work / "gnupg", "kmi fixture <fixture@kmi.invalid>")
    server = MirrorServer(work / "mirror").start()
    try:
        upstreams = Upstreams(work / "mirror", key)
        publish(upstreams, made)
        if other is not None:
            publish(upstreams, other, "arm64")
        catalogue = pin_key(REPO / "distros", work / "distros", key)
        add_flavor(catalogue, made, key, other)
        yield environment(catalogue, work, server.url)
    finally:
        server.stop()
        key.close()


def publish(upstreams: Upstreams, built: Path, arch: str = "amd64") -> Image:
    """Serve the fixture of `arch` in the mirror tree as an upstream build, checksummed and
    signed (the checksum file lists every arch published so far)."""
    url = f"{HOST}/12/kmi-fixture-12-{RELEASE}-{arch}.qcow2"
    image = Image(url, (built / "fixture.qcow2").read_bytes())
    upstreams.put(url, image.data)
    sums_url = f"{image.dir}/SHA256SUMS"
    listed = upstreams.root / sums_url.split("://", 1)[1]
    sums = listed.read_bytes() if listed.exists() else b""
    sums += f"{image.hexdigest()}  {image.name}\n".encode()
    upstreams.put(sums_url, sums)
    upstreams.put(f"{image.dir}/SHA256SUMS.asc", upstreams.key.detach_sign(sums))
    return image


def add_flavor(catalogue: Path, built: Path, key: SigningKey, arm64: Path | None = None) -> Path:
    """Write the fixture flavor (and its local apt repository) into a copied catalogue; with
    `arm64` (that fixture's folder), for arm64 too, the repository holding both arches'
    packages (apt takes the guest's own)."""
    repo = catalogue / "fixture-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(built / "repo", repo)
    arches = "amd64: amd64"
    if arm64 is not None:
        for deb in (arm64 / "repo").glob("*.deb"):
            shutil.copy2(deb, repo / deb.name)
        packages = (built / "repo" / "Packages").read_text()
        packages += "\n" + (arm64 / "repo" / "Packages").read_text()
        (repo / "Packages").write_text(packages.replace("\n\n\n", "\n\n"))
        arches += ", arm64: arm64"
    path = catalogue / "fixture.yaml"
    path.write_text(FLAVOR.format(host=HOST, fingerprint=key.fingerprint, arches=arches))
    return path


def main(arches: list[str]) -> int:
    """Build the fixtures of `arches` one after the other, in the order given (cached ones
    cost nothing): the tests need the amd64 one first, and side by side the two builds
    would share the same cores."""
    unknown = [arch for arch in arches if arch not in SCRIPTS]
    if unknown:
        print(f"fixture: no fixture for {', '.join(unknown)} (there are: {', '.join(SCRIPTS)})")
        return 2
    failed = 0
    for arch in arches:
        try:
            print(f"fixture: {arch}: {fixture(arch)}", flush=True)
        except KmiError as err:
            print(f"fixture: {arch}: {err}", flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:] or ["amd64"]))
