"""What a boot showed: each check's answer, the report written to build/<T>/logs/, and the
one-line failure with the console's last lines."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKS = ("boot", "cloud-init", "agent", "ssh")  # a failure of any fails test:T
# what the support tiers also require (kmi.criteria): asked once the guest is up and
# recorded, but they do not fail test:T; publish holds a flavor at a tier to them
EXTRA_CHECKS = ("agent-ssh-key", "security", "network", "root-grows")
CONSOLE_TAIL = 25


@dataclass
class Check:
    name: str
    passed: bool | None = None  # None: not reached
    seconds: float | None = None
    detail: str = ""


@dataclass
class Report:
    """What one boot showed; `failed` names the first check that did not pass."""

    target: str
    arch: str
    accel: str
    checks: dict[str, Check] = field(
        default_factory=lambda: {c: Check(c) for c in (*CHECKS, *EXTRA_CHECKS)}
    )
    boot_seconds: float | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> Check | None:
        for name in CHECKS:
            if not self.checks[name].passed:
                return self.checks[name]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "arch": self.arch,
            "accel": self.accel,
            "status": "failed" if self.failed else "passed",
            "boot_seconds": self.boot_seconds,
            "seconds": round(self.seconds, 1),
            "checks": {
                c.name: {"passed": c.passed, "seconds": c.seconds, "detail": c.detail}
                for c in self.checks.values()
            },
        }


def text_of(log: Path) -> str:
    try:
        return log.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def console_tail(console: Path, lines: int = CONSOLE_TAIL) -> str:
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", text_of(console))
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept) or "    (no console output)"


def failure_message(report: Report, console: Path) -> str:
    """`check: detail` and the console's last lines, for a failed report."""
    failed = report.failed
    assert failed is not None
    shown = console
    firmware = console.with_name("test-firmware.log")
    if _empty(console) and not _empty(firmware):
        shown = firmware  # nothing reached the console: the firmware says why
    what = "console" if shown == console else "firmware log"
    return (
        f"{report.target}: boot test failed: {failed.name}: {failed.detail}\n"
        f"last lines of the {what} ({shown}):\n{console_tail(shown)}"
    )


def _empty(path: Path) -> bool:
    try:
        return not path.read_bytes().strip()
    except OSError:
        return True


def write_results(report: Report, path: Path) -> None:
    from kmi.files import write_if_changed

    write_if_changed(path, json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
