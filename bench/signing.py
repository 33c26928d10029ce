"""Benchmark: what trust costs per image. The fixture image (scripts/fixture-image.sh) built
once, then, in one run:

- `sbom:T` (one read-only guestfish session) and `verify:T` (qemu-img info and check, the
  SBOM, the annotations), each timed;
- `publish` three ways into repositories of one docker-registry on loopback: unsigned (what
  publishing cost before), signed with SBOM and provenance attached (a new key, a new image),
  and the same again (everything already signed: checked, nothing sent).

For each publish: wall time, requests to the registry (its access log), the manifests and
blobs the signatures and attestations add to the repository (bytes as the registry stores
them). cosign itself, which a user would otherwise run after publishing (`cosign sign` then
`cosign attest` twice), cannot be installed on this machine (no Go toolchain, no package),
so it is not in the table; kmi does what those three commands do in the same publish.

    .venv/bin/python bench/signing.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess

from kmi.demo import fixture as fixture_image
from kmi.demo.timing import services, timed_doit
from kmi.demo.upstreams import Upstreams, environment
from kmi.progress import human

TARGET = "fixture-12-amd64"


def attached_bytes(host: str, repository: str, digests: list[str]) -> int:
    """Bytes of the .sig and .att manifests of `digests` and the blobs they name."""
    total = 0
    for digest in digests:
        for suffix in ("sig", "att"):
            tag = f"{digest.replace(':', '-')}.{suffix}"
            done = subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    f"docker://{host}/{repository}:{tag}",
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                continue
            manifest = json.loads(done.stdout)
            total += len(done.stdout.encode())
            total += manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    return total


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
        subprocess.run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                str(signing),
            ],
            check=True,
            capture_output=True,
        )
        _, mark = registry.requests_since(0, "")
        for label, prefix, extra in (
            ("unsigned", "plain", {}),
            (
                "signed, SBOM and provenance attached",
                "signed",
                {"KMI_SIGNING_KEY": str(signing)},
            ),
            (
                "the same again (all there: checked, nothing sent)",
                "signed",
                {"KMI_SIGNING_KEY": str(signing)},
            ),
        ):
            run_env = {**env, "KMI_REGISTRY": f"{registry.host}/{prefix}", **extra}
            seconds, _ = timed_doit(run_env, "publish:fixture-12")
            count, mark = registry.requests_since(mark, prefix)
            results = json.loads((work / "build" / "results.json").read_text())
            digest = results["images"]["fixture-12"]["digest"]
            index = json.loads(
                subprocess.run(
                    [
                        "skopeo",
                        "inspect",
                        "--raw",
                        "--tls-verify=false",
                        f"docker://{registry.host}/{prefix}/fixture@{digest}",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            digests = [m["digest"] for m in index["manifests"]] + [digest]
            added = attached_bytes(registry.host, f"{prefix}/fixture", digests)
            rows.append((label, seconds, count, added))
            print(f"{label}: {seconds:.1f} s, {count} requests", flush=True)
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


if __name__ == "__main__":
    main()
