"""Benchmark: what trust costs per image. The fixture image (scripts/fixture-image.sh) built
once, then, in one run:

- `sbom:T` (one read-only guestfish session) and `verify:T` (qemu-img info and check, the
  SBOM, the annotations), each timed;
- `publish:fixture-12` four ways, each into its own repository of one docker-registry on
  loopback: unsigned (what publishing cost before); signed with the SBOM and the provenance
  attached (a new key, a new image); the same again (all there: checked, nothing sent);
  and what a user would do instead: publish unsigned, then `cosign sign --recursive` and
  `cosign attest` of the same two predicates (Debian 13's cosign 2.5, from the tests' root
  of scripts/skopeo-root.sh, through chroot: run as root), with the same key.

For each: wall time, requests to the registry (its access log), and the bytes the
signatures and attestations add to the repository (their manifests and the blobs these
name).

    .venv/bin/python bench/signing.py
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kmi.demo import fixture as fixture_image
from kmi.demo.timing import services, timed_doit
from kmi.demo.upstreams import Upstreams, environment
from kmi.progress import human

TARGET = "fixture-12-amd64"


def skopeo_raw(reference: str) -> dict[str, Any]:
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        text=True,
    )
    found: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {}
    return found


def attached_bytes(repository: str, digests: list[str]) -> int:
    """Bytes of the .sig and .att manifests of `digests` and the blobs they name."""
    total = 0
    for digest in digests:
        for suffix in ("sig", "att"):
            manifest = skopeo_raw(f"{repository}:{digest.replace(':', '-')}.{suffix}")
            if manifest:
                total += len(json.dumps(manifest).encode())  # about the stored bytes
                total += manifest["config"]["size"] + sum(m["size"] for m in manifest["layers"])
    return total


class Cosign:
    """Debian 13's cosign in the test root (scripts/skopeo-root.sh), through chroot: what a
    user would run after an unsigned publish, with a key of its own making (this cosign's
    `import-key-pair` refused the P-256 keys openssl made, PKCS#8 and SEC1 alike:
    "unsupported public key type")."""

    def __init__(self) -> None:
        self.root = fixture_image.fixture("skopeo") / "root"
        self.inside = Path("/tmp") / f"kmi-bench-{os.getpid()}"
        self.folder = self.root / self.inside.relative_to("/")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run("generate-key-pair")

    def run(self, *args: str) -> None:
        env = ["env", "HOME=/tmp", "COSIGN_PASSWORD="]
        here = ["sh", "-c", 'cd "$0" && exec "$@"', str(self.inside)]
        done = subprocess.run(
            ["chroot", str(self.root), *env, *here, "cosign", *args],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"cosign {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def put(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return f"{self.inside}/{name}"

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def cosign_after(
    cosign: Cosign, repository: str, index: str, arch: str, predicates: dict[str, bytes]
) -> float:
    """`cosign sign --recursive` (the index and its per-arch manifest), then `cosign attest`
    of each predicate on the per-arch image; the wall seconds."""
    key = f"{cosign.inside}/cosign.key"
    options = ["--key", key, "--tlog-upload=false", "--allow-http-registry", "--yes"]
    started = time.perf_counter()
    cosign.run("sign", *options, "--recursive", f"{repository}@{index}")
    for kind, data in predicates.items():
        predicate = cosign.put(f"{kind}.json", data)
        cosign.run(
            "attest", *options, "--type", kind, "--predicate", predicate, f"{repository}@{arch}"
        )
    return time.perf_counter() - started


def main() -> None:
    built = fixture_image.fixture()
    rows: list[tuple[str, float, int, int]] = []
    with services("signing") as served:
        work, key, registry = served.work, served.key, served.registry
        fixture_image.publish(Upstreams(work / "mirror", key), built)
        catalogue = work / "distros"
        catalogue.mkdir()
        (catalogue / "local-key.asc").write_bytes(key.public)
        fixture_image.add_flavor(catalogue, built, key)
        env = environment(
            catalogue,
            work,
            served.mirror.url,
            KMI_CACHE_URL="",
            KMI_PROGRESS="off",
            KMI_SOURCE_URL="https://example.invalid/kmi-catalogue",
        )
        seconds, _ = timed_doit(env, f"test:{TARGET}", f"build:{TARGET}")
        print(f"built and boot-tested {TARGET} in {seconds:.0f} s", flush=True)
        stage_seconds = {s: timed_doit(env, f"{s}:{TARGET}")[0] for s in ("sbom", "verify")}
        signing = work / "signing.key"
        make = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        subprocess.run([*make, "-out", str(signing)], check=True, capture_output=True)
        signed = {"KMI_SIGNING_KEY": str(signing)}
        _, mark = registry.requests_since(0, "")
        cosign = Cosign()
        try:
            for label, prefix, extra in (
                ("kmi: unsigned", "plain", {}),
                ("kmi: signed, SBOM and provenance attached", "signed", signed),
                ("kmi: the same again (all there: checked, nothing sent)", "signed", signed),
                ("kmi unsigned, then cosign sign and attest (twice)", "cosign", {}),
            ):
                run_env = {**env, "KMI_REGISTRY": f"{registry.host}/{prefix}", **extra}
                seconds, _ = timed_doit(run_env, "publish:fixture-12")
                results = json.loads((work / "build" / "results.json").read_text())
                digest = results["images"]["fixture-12"]["digest"]
                repository = f"{registry.host}/{prefix}/fixture"
                arches = [m["digest"] for m in skopeo_raw(f"{repository}@{digest}")["manifests"]]
                if prefix == "cosign":
                    predicates = {
                        "spdxjson": (work / "build" / TARGET / "sbom.spdx.json").read_bytes(),
                        "slsaprovenance1": provenance_of(
                            f"{registry.host}/signed/fixture", arches[0]
                        ),
                    }
                    seconds += cosign_after(cosign, repository, digest, arches[0], predicates)
                count, mark = registry.requests_since(mark, prefix)
                added = attached_bytes(repository, [*arches, digest])
                rows.append((label, seconds, count, added))
                print(f"{label}: {seconds:.1f} s, {count} requests", flush=True)
        finally:
            cosign.close()
    print(f"\nhost: {platform.machine()}, {os.cpu_count()} cores; libguestfs under TCG\n")
    print("| stage | wall s |")
    print("| --- | ---: |")
    for stage, seconds in stage_seconds.items():
        print(f"| `{stage}:{TARGET}` | {seconds:.1f} |")
    print()
    print(
        "| publish:fixture-12 | wall s | registry requests | signatures and attestations stored |"
    )
    print("| --- | ---: | ---: | ---: |")
    for label, seconds, count, added in rows:
        print(f"| {label} | {seconds:.1f} | {count} | {human(added)} |")


def provenance_of(repository: str, digest: str) -> bytes:
    """The provenance predicate kmi attached to `digest` (for cosign to attach the same)."""
    tag = f"docker://{repository}:{digest.replace(':', '-')}.att"
    with tempfile.TemporaryDirectory() as tmp:
        copy = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", tag, f"dir:{tmp}"]
        subprocess.run(copy, check=True, capture_output=True)
        manifest = json.loads((Path(tmp) / "manifest.json").read_text())
        for layer in manifest["layers"]:
            if layer["annotations"]["predicateType"] == "https://slsa.dev/provenance/v1":
                envelope = json.loads((Path(tmp) / layer["digest"].split(":")[1]).read_bytes())
                statement = json.loads(base64.b64decode(envelope["payload"]))
                return json.dumps(statement["predicate"]).encode()
    raise SystemExit(f"no provenance attached to {repository}@{digest}")


if __name__ == "__main__":
    main()
