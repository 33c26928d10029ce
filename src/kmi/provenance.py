"""SLSA v1 provenance of a per-arch image: what it was made from (the upstream file, its
digest and who signed it, the catalogue entry), how (kmi's version and commit, the image
tools' versions, the host's arch, whether the guest steps ran natively or emulated) and by
what run. publish attaches it, signed, as an in-toto statement (kmi.cosign).

The facts of the build travel with the disk: the sysprep and sparsify receipts record the
host and the tools that made it (so a disk restored from the stage cache on another machine
reports the machine that made it, not the one that restored it)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

from kmi import __version__
from kmi.catalogue import Target
from kmi.lock import LockEntry

# what kmi's build is, a containerdisk from a verified upstream cloud image; README ("Signed
# images") documents its parameters. A URN: kmi has no web page of its own to name.
BUILD_TYPE = "urn:kmi:build:containerdisk:v1"


def commit() -> str:
    """The commit of kmi's checkout: GITHUB_SHA in GitHub Actions, else git's HEAD where kmi
    runs from a checkout, else empty."""
    if sha := os.environ.get("GITHUB_SHA", ""):
        return sha
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    found = done.stdout.strip()
    return found if done.returncode == 0 and len(found) == 40 else ""


def made_by(host_arch: str, tool_versions: dict[str, str]) -> dict[str, str]:
    """What a receipt records of the machine and the kmi that made a disk."""
    return {"host_arch": host_arch, "kmi": __version__, "kmi_commit": commit(), **tool_versions}


def run_details() -> dict[str, Any]:
    """Who ran the build: the GitHub Actions run when there is one."""
    env = os.environ
    server, repo, run = (
        env.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if server and repo and run:
        workflow = env.get("GITHUB_WORKFLOW_REF", "").partition("@")[0]
        builder = f"{server}/{workflow}" if workflow else f"{server}/{repo}"
        invocation = (
            f"{server}/{repo}/actions/runs/{run}/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}"
        )
        return {"builder": {"id": builder}, "metadata": {"invocationId": invocation}}
    return {"builder": {"id": "urn:kmi:local"}, "metadata": {}}


def _digest(digest: str) -> dict[str, str]:
    algorithm, _, hexdigest = digest.partition(":")
    return {algorithm: hexdigest}


def _relative(path: Path) -> str:
    """The catalogue file as the repository names it (relative to where kmi runs)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def file_digest(path: Path) -> dict[str, str]:
    """{"sha256": hex} of a file, or {} when it cannot be read."""
    try:
        return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    except OSError:
        return {}


def predicate(
    target: Target,
    entry: LockEntry,
    recipe: str,
    built: dict[str, str],
    customized: str,
    restored_from: str = "",
) -> dict[str, Any]:
    """The SLSA v1 provenance predicate of the target's per-arch image."""
    tools = {k: v for k, v in built.items() if k not in ("host_arch", "kmi", "kmi_commit")}
    internal: dict[str, Any] = {
        "customized": customized,
        "hostArch": built.get("host_arch", ""),
        "tools": tools,
        "recipe": recipe,
    }
    if restored_from:
        internal["restoredFrom"] = restored_from
    version = {"kmi": built.get("kmi", __version__)}
    if built.get("kmi_commit"):
        version["commit"] = built["kmi_commit"]
    details = run_details()
    details["builder"]["version"] = version
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "target": target.name,
                "flavor": target.flavor.name,
                "version": target.version.version,
                "arch": str(target.arch),
                "catalogue": {
                    "uri": _relative(target.flavor.source),
                    "digest": file_digest(target.flavor.source),
                },
            },
            "internalParameters": internal,
            "resolvedDependencies": [
                {
                    "uri": entry.url,
                    "digest": _digest(entry.digest),
                    "annotations": {
                        "checksumUri": entry.checksum_url,
                        "release": entry.release,
                        "pulled": entry.found,
                        "signedBy": entry.signed_by,
                    },
                }
            ],
        },
        "runDetails": details,
    }
