"""The support tiers' criteria as checks (README, "Support tiers").

Each criterion a machine can check has a name and is checked where its evidence is:

- verify:T, on the built image without booting it: `metadata` (the per-arch image's
  annotations present and equal to the lock and the catalogue, and the commit kmi ran from
  recorded), `size` (its layer under KMI_LAYER_LIMIT), `qcow2` (the disk is a sparse,
  compressed qcow2, by qemu-img), `packages` (the catalogue's test.packages are in the SBOM);
- test:T, in the booted guest: `boot`, `cloud-init`, `agent`, `ssh` (which fail the test) and
  `agent-ssh-key`, `security`, `network`, `root-grows` (recorded only);
- publish: `signature` (KMI_SIGNING_KEY is set, so publish signs each manifest before any tag
  moves).

Which criteria a tier requires is a setting (KMI_STABLE_CRITERIA, KMI_PROPOSED_CRITERIA);
a flavor can waive one with its reason (catalogue test.waive). What no machine can check
(that the licence text is the distribution's, that its documentation describes this image)
is said in the image README, not claimed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from kmi import tools
from kmi.catalogue import Criterion, Target
from kmi.keys import stage_key
from kmi.lock import LockEntry
from kmi.stages.boottest.report import CHECKS, EXTRA_CHECKS

ALL: tuple[str, ...] = get_args(Criterion)
BOOT = (*CHECKS, *EXTRA_CHECKS)  # what test:T asks
STATIC = ("metadata", "size", "qcow2", "packages")
VERIFY_VERSION = "1"
OCI = "org.opencontainers.image"
# what no machine can check, said in each image README
UNCHECKED = (
    "that the licence named is the one the distribution's own terms give for this image",
    "that the documentation and home page describe this image",
)


@dataclass(frozen=True)
class Result:
    passed: bool | None  # None: not checked (yet)
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "detail": self.detail}


def parse_list(value: str) -> frozenset[str]:
    """A tier's criteria from its setting: `all`, `none`, names, `all,-signature`; a
    ValueError names a word that is none of these."""
    found: set[str] = set()
    for word in (w.strip() for w in value.replace(" ", ",").split(",")):
        if not word:
            continue
        if word == "all":
            found |= set(ALL)
        elif word == "none":
            continue
        elif word.startswith("-") and word[1:] in ALL:
            found.discard(word[1:])
        elif word in ALL:
            found.add(word)
        else:
            raise ValueError(
                f"{word!r} is no criterion; use all, none, or names from: "
                f"{', '.join(ALL)} (a leading - leaves one out)"
            )
    return frozenset(found)


def verify_key(target: Target, build_key: str, sbom_key: str, layer_limit: int) -> str:
    config = {"packages": list(target.flavor.test.packages), "layer_limit": layer_limit}
    return stage_key("verify", config, {"kmi-verify": VERIFY_VERSION}, [build_key, sbom_key])


def metadata(
    annotations: dict[str, str], entry: LockEntry, checked: str | None, commit: str
) -> Result:
    """The per-arch image's metadata against the lock: what the tiers ask for, and true."""
    wrong: list[str] = []

    def want(key: str, value: str | None, what: str) -> None:
        found = annotations.get(key, "")
        if not found:
            wrong.append(f"no {what} ({key})")
        elif value is not None and found != value:
            wrong.append(f"{what} {found!r} is not the lock's {value!r} ({key})")

    want(f"{OCI}.source", None, "source (set KMI_SOURCE_URL)")
    want("kmi.upstream.url", entry.url, "download source")
    want("kmi.upstream.pulled", entry.found, "date pulled from upstream")
    want("kmi.upstream.digest", entry.digest, "checksum")
    want(f"{OCI}.documentation", None, "documentation URL")
    want(f"{OCI}.licenses", None, "licence")
    if checked != entry.digest:
        wrong.append("the checksum stage did not verify the lock's digest")
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        wrong.append("no commit of kmi's repository recorded (build from a git checkout)")
    if wrong:
        return Result(False, "; ".join(wrong))
    return Result(
        True,
        f"source, download URL, pulled {entry.found}, checksum {entry.digest[:19]}… verified, "
        f"documentation, licence {annotations[f'{OCI}.licenses']}, commit {commit[:12]}",
    )


def size(layer_size: int, limit: int) -> Result:
    shown = f"{layer_size / 1e9:.2f} GB"
    if layer_size <= limit:
        return Result(True, f"layer {shown}, under the {limit / 1e9:.0f} GB limit")
    return Result(False, f"layer {shown}, over KMI_LAYER_LIMIT ({limit / 1e9:.0f} GB)")


def qcow2(disk: Path, log: Path) -> Result:
    """A qcow2, sparse and compressed, as qemu-img sees it."""
    info = json.loads(
        tools.run(tools.QEMU_IMG, ["info", "--output=json", str(disk)], log=log).stdout
    )
    if info.get("format") != "qcow2":
        return Result(False, f"the disk is {info.get('format')!r}, not qcow2")
    check = tools.run(
        tools.QEMU_IMG, ["check", "--output=json", str(disk)], log=log, ok_codes=(0, 1, 2, 3)
    )
    found = json.loads(check.stdout)
    compressed = int(found.get("compressed-clusters", 0))
    allocated = int(found.get("allocated-clusters", 0))
    total = int(found.get("total-clusters", 0))
    problems = [k for k in ("corruptions", "leaks", "check-errors") if found.get(k)]
    if problems:
        return Result(False, f"qemu-img check found {', '.join(problems)}")
    if not compressed:
        return Result(False, "no compressed cluster (sparsify with compression)")
    if total and allocated >= total:
        return Result(False, "every cluster is allocated: not sparse")
    return Result(
        True,
        f"qcow2, {allocated} of {total} clusters allocated, {compressed} compressed",
    )


def packages(wanted: tuple[str, ...], sbom: Path) -> Result:
    """The catalogue's test.packages, each in the SBOM."""
    try:
        doc = json.loads(sbom.read_text(encoding="utf-8"))
        names = {p.get("name") for p in doc.get("packages", [])[1:] if isinstance(p, dict)}
    except (OSError, ValueError, AttributeError):
        return Result(False, f"{sbom} cannot be read (run: doit sbom:…)")
    missing = [p for p in wanted if p not in names]
    if missing:
        return Result(False, f"not installed: {', '.join(missing)}")
    return Result(True, f"installed: {', '.join(wanted)}" if wanted else "none asked for")


def required(tier: str, stable: frozenset[str], proposed: frozenset[str]) -> frozenset[str]:
    """The criteria the tier requires (before the flavor's waivers)."""
    return {"stable": stable, "proposed": proposed}.get(tier, frozenset())


def unmet(
    results: dict[str, Result], needed: frozenset[str], waived: dict[str, str]
) -> list[tuple[str, str]]:
    """Required, not waived, and not passed: (name, why) in ALL's order; why is "not
    checked" where there is no result."""
    out = []
    for name in ALL:
        if name not in needed or name in waived:
            continue
        found = results.get(name)
        if found is None or found.passed is None:
            out.append((name, "not checked"))
        elif not found.passed:
            out.append((name, found.detail))
    return out


def stage_of(name: str) -> str:
    """The task that checks criterion `name`."""
    return "verify" if name in STATIC else "test" if name in BOOT else "publish"
