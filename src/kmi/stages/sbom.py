"""sbom:T — the final disk's installed packages as an SPDX 2.3 JSON document
(`build/<T>/sbom.spdx.json`; kmi.sbom reads the package databases), from one read-only
guestfish session, so it needs no host of the image's arch. The same disk gives the same
document: its times are the image's `created`, its namespace comes from its stage key."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kmi import __version__, sbom, tools
from kmi.catalogue import Target
from kmi.errors import KmiError
from kmi.keys import stage_key

STAGE_VERSION = "1"  # bump when the document changes for the same disk
TOOLS = (tools.GUESTFISH,)


def sbom_key(target: Target, disk_key: str, versions: dict[str, str]) -> str:
    return stage_key(
        "sbom",
        {"distribution": distribution(target)},
        {**versions, "kmi-sbom": STAGE_VERSION},
        [disk_key],
    )


def distribution(target: Target) -> str:
    """The purl namespace of the image's packages: its os-release ID."""
    return target.flavor.test.os_id or target.flavor.name


@dataclass(frozen=True)
class Made:
    packages: int
    licensed: int  # packages whose licence is asserted as an SPDX expression


def make_sbom(
    target: Target,
    disk: Path,
    output: Path,
    key: str,
    created: str,
    log: Path,
    env: dict[str, str],
    timeout: float | None = None,
) -> Made:
    """Read `disk`'s package databases and write the document to `output` (renamed into
    place when whole)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="kmi-sbom-") as tmp:
        script = sbom.COPY_OUT.format(out=shlex.quote(tmp))
        tools.run(
            tools.GUESTFISH,
            ["--ro", "-a", str(disk), "-i"],
            stdin=script.encode(),
            env=env,
            log=log,
            timeout=timeout,
        )
        packages = sbom.packages_in(Path(tmp))
    if not packages:
        raise KmiError(
            f"{target.name}: no package database in {disk} that kmi reads (dpkg, rpm's "
            f"SQLite database, apk, pacman); log: {log}"
        )
    document = sbom.document(
        name=target.name,
        namespace=f"https://spdx.org/spdxdocs/kmi-{target.name}-{key[:16]}",
        created=created,
        distribution=distribution(target),
        packages=packages,
        tool=f"kmi-{__version__}",
    )
    work = output.with_name(f".{output.name}.tmp")
    work.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(work, output)
    licensed = sum(1 for p in packages if p.license != sbom.NO_ASSERTION)
    return Made(len(packages), licensed)
