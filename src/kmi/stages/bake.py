"""The buildx engine (KMI_ENGINE=buildx): BuildKit packs and pushes the containerdisks.

kmi writes a bake definition, `docker-bake.json`, with one bake target per kmi target: an
inline Dockerfile (`FROM scratch`, then `ADD --chown=107:107 --chmod=0444` of the final disk
to /disk/disk.img, and the same Env and Entrypoint as the native engine's config), the
platform, and the labels and manifest annotations the native engine sets. Each target is
pushed by digest (`push-by-digest=true`), so per-arch CI jobs can each push their own arch;
`docker buildx imagetools create` then assembles the index from those digests, with the
image's tags and index annotations. Nothing here needs QEMU: a `FROM scratch` image has no
RUN step, so BuildKit builds every platform on any host.

The native engine stays the default: it needs no daemon, and its digests are the same on
every machine. BuildKit's layer bytes depend on its version, so the two engines' digests
differ; what the image holds (the disk, its owner and mode, labels, annotations) does not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmi import oci
from kmi.errors import KmiError
from kmi.keys import stage_key
from kmi.tools import LOG_TAIL_LINES

if TYPE_CHECKING:  # python-on-whales is imported when the buildx engine runs
    from python_on_whales import DockerException

DISK_NAME = "disk.img"  # the file the context holds: a hard link to the final disk


def build_key(native_key: str, repository: str) -> str:
    """The buildx build's key: the native build's (the disk and everything the image
    carries) and where the image is pushed."""
    return stage_key("build-buildx", {"repository": repository}, {"kmi-bake": "1"}, [native_key])


def platform(arch: str) -> str:
    """`linux/amd64`, `linux/arm64/v8`: the native engine's platform as a buildx string."""
    found = oci.platform_of(arch)
    parts = [found["os"], found["architecture"], found.get("variant", "")]
    return "/".join(p for p in parts if p)


def dockerfile(spec: oci.ImageSpec) -> str:
    """The inline Dockerfile of one target: the disk owned by qemu (107), read-only."""
    lines = [
        "FROM scratch",
        f"ADD --chown={oci.QEMU_UID}:{oci.QEMU_UID} --chmod=0444 {DISK_NAME} /{oci.DISK_FILE}",
        *(f"ENV {key}={json.dumps(value)}" for key, value in sorted(spec.env.items())),
        'ENTRYPOINT ["no-entrypoint"]',
    ]
    return "\n".join(lines) + "\n"


def bake_target(
    spec: oci.ImageSpec, context: Path, repository: str, insecure: bool = False
) -> dict[str, Any]:
    """One bake target: the per-arch image, pushed to `repository` by digest (over plain
    HTTP when `insecure`, as for a registry on loopback)."""
    plain = ",registry.insecure=true" if insecure else ""
    return {
        "context": str(context),
        "dockerfile-inline": dockerfile(spec),
        "platforms": [platform(spec.arch)],
        "labels": dict(sorted(spec.labels.items())),
        "annotations": [f"manifest:{k}={v}" for k, v in sorted(spec.annotations.items())],
        "output": [
            f"type=image,name={repository},push-by-digest=true,name-canonical=true,push=true"
            + plain
        ],
    }


def definition(image: str, targets: Mapping[str, dict[str, Any]]) -> str:
    """The bake file's text: a group named after the image over its per-arch targets."""
    found = {"group": {image: {"targets": list(targets)}}, "target": dict(targets)}
    return json.dumps(found, indent=2) + "\n"


def link_context(disk: Path, context: Path) -> None:
    """The build context: a folder holding only a hard link to the final disk."""
    context.mkdir(parents=True, exist_ok=True)
    linked = context / DISK_NAME
    if linked.exists() and os.path.samestat(linked.stat(), disk.stat()):
        return
    tmp = context / f".{DISK_NAME}.tmp"
    tmp.unlink(missing_ok=True)
    os.link(disk, tmp)
    os.replace(tmp, linked)


def missing_buildx() -> str | None:
    """Why `docker buildx` cannot run here, or None when it can."""
    import shutil

    from python_on_whales import DockerException, docker

    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        if docker.buildx.is_installed():
            return None
    except DockerException:
        pass
    return "the docker buildx plugin is not installed (docker buildx --help fails)"


def bake(bake_file: Path, targets: list[str], metadata: Path) -> dict[str, str]:
    """`docker buildx bake --push` of `targets`; their pushed digests by target."""
    from python_on_whales import DockerException, docker

    try:
        docker.buildx.bake(
            targets, files=[bake_file], metadata_file=metadata, progress="plain", push=True
        )
    except DockerException as err:
        raise _failed(f"{bake_file}: docker buildx bake", err) from None
    try:
        found = json.loads(metadata.read_text(encoding="utf-8"))
        return {t: str(found[t]["containerimage.digest"]) for t in targets}
    except (OSError, ValueError, KeyError, TypeError):
        raise KmiError(
            f"{metadata}: docker buildx bake wrote no digest for every target "
            f"({', '.join(targets)})"
        ) from None


def assemble(
    repository: str, digests: list[str], tags: list[str], annotations: Mapping[str, str]
) -> None:
    """`docker buildx imagetools create`: the index over per-arch digests, tagged."""
    from python_on_whales import DockerException, docker

    try:
        docker.buildx.imagetools.create(
            sources=[f"{repository}@{digest}" for digest in digests],
            tags=[f"{repository}:{tag}" for tag in tags],
            annotations={f"index:{k}": v for k, v in sorted(annotations.items())},
        )
    except DockerException as err:
        raise _failed(f"{repository}: docker buildx imagetools create", err) from None


def _failed(what: str, err: DockerException) -> KmiError:
    """The failure with the tool's own last lines (python-on-whales captures them; a
    message that only pointed "above" showed nothing)."""
    said = "\n".join(filter(None, (err.stderr, err.stdout))).strip().splitlines()
    tail = "\n".join(f"    {line}".rstrip() for line in said[-LOG_TAIL_LINES:]) or "    (no output)"
    return KmiError(f"{what} failed with exit code {err.return_code}\n{tail}")
