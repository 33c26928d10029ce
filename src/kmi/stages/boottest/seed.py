"""What one boot brings and expects: the cloud-init NoCloud seed (the volume KubeVirt's
`cloudInitNoCloud` attaches) with a throw-away SSH key and a marker command, and what the
flavor's guest must show (its default user, the OS its agent reports)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmi import tools
from kmi.catalogue import Target

MARKER_FILE = "/run/kmi-boot-test"
GENISOIMAGE = tools.Tool(
    "genisoimage", "genisoimage", "genisoimage", "to write the cloud-init NoCloud seed"
)
SSH_KEYGEN = tools.Tool(
    "ssh-keygen", "openssh-client", "openssh", "to make the boot test's throw-away key"
)


@dataclass(frozen=True)
class Expect:
    """What the guest must show: its default user and the OS the agent reports."""

    user: str
    os_id: str
    version: str
    security: str = "auto"  # the catalogue's test.security

    @classmethod
    def of(cls, target: Target) -> Expect:
        flavor = target.flavor
        return cls(
            flavor.containerdisk.user,
            flavor.test.os_id or flavor.name,
            target.version.version,
            flavor.test.security,
        )

    def matches(self, osinfo: dict[str, Any]) -> str | None:
        """None when the agent's guest-get-osinfo fits, else what differs."""
        found_id = str(osinfo.get("id", ""))
        found_version = str(osinfo.get("version-id", ""))
        ok_version = (
            not found_version
            or self.version in ("latest", "rolling")
            or (found_version == self.version or found_version.startswith(self.version + "."))
        )
        if found_id == self.os_id and ok_version:
            return None
        return (
            f"the guest agent reports {found_id or '?'} {found_version or '?'}, "
            f"expected {self.os_id} {self.version}"
        )


def user_data(public_key: str, token: str) -> str:
    """cloud-config for the flavor's default user: the run's key and a marker command."""
    doc = {
        "ssh_authorized_keys": [public_key.strip()],
        "runcmd": [["sh", "-c", f"echo {token} > {MARKER_FILE} && echo kmi-marker {token}"]],
    }
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


def make_seed(folder: Path, public_key: str, token: str, log: Path) -> Path:
    """The boot test's seed: the run's key and marker command."""
    return write_seed(folder, user_data(public_key, token), f"kmi-test-{token}", log)


def write_seed(
    folder: Path,
    user_data_text: str,
    instance_id: str,
    log: Path,
    hostname: str | None = "kmi-test",
) -> Path:
    """A NoCloud seed: an ISO 9660 volume labelled `cidata` with user-data and meta-data
    (with no `hostname`, cloud-init keeps the guest's own)."""
    content = folder / "cidata"
    content.mkdir()
    (content / "user-data").write_text(user_data_text, encoding="utf-8")
    meta = f"instance-id: {instance_id}\n"
    if hostname is not None:
        meta += f"local-hostname: {hostname}\n"
    (content / "meta-data").write_text(meta, encoding="utf-8")
    seed = folder / "seed.iso"
    tools.run(
        GENISOIMAGE,
        ["-quiet", "-output", str(seed), "-volid", "cidata", "-joliet", "-rock", str(content)],
        log=log,
    )
    return seed


def make_key(folder: Path, log: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    key = folder / name
    tools.run(
        SSH_KEYGEN, ["-q", "-t", "ed25519", "-N", "", "-C", "kmi-test", "-f", str(key)], log=log
    )
    return key, (folder / f"{name}.pub").read_text(encoding="utf-8")
