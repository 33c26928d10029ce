"""test:T — boot the final disk in QEMU and check what KubeVirt users rely on.

The disk is never written: QEMU boots a throw-away qcow2 overlay backed by it. Each run
makes a cloud-init NoCloud seed (the volume KubeVirt's `cloudInitNoCloud` attaches) with a
fresh SSH key and a marker command, and then checks, all within one deadline per arch:

- boot: the guest answers at all (agent or SSH), and the console shows no firmware or kernel
  failure (those end the test at once, with the console's last lines);
- cloud-init: it finished, and applied this run's user-data (the marker holds this run's token);
- agent: qemu-guest-agent answers `guest-ping` and `guest-get-osinfo` on its virtio-serial
  channel, and reports the flavor's OS and version;
- ssh: the flavor's default user logs in with the generated key over a forwarded loopback port.

Then, recorded for the support tiers (kmi.criteria) without failing the test: the agent adds
a second key that then logs in (agent-ssh-key), SELinux or AppArmor as the catalogue says
(security), a default route (network), and a root filesystem grown past the image's size on
the 1 GiB larger disk the test boots (root-grows).

The QEMU command line is built by a pure function (pinned by a test for every arch); the
console log, QEMU's own output and the check results go to build/<T>/logs/.
"""

from __future__ import annotations

import json
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from kmi import tools
from kmi.catalogue import Target
from kmi.errors import KmiError
from kmi.keys import stage_key
from kmi.stages.boottest.machine import MACHINES, Run, firmware_of, free_port, qemu_argv
from kmi.stages.boottest.report import (
    CHECKS,
    EXTRA_CHECKS,
    Report,
    failure_message,
    write_results,
)
from kmi.stages.boottest.seed import GENISOIMAGE, SSH_KEYGEN, Expect, make_key, make_seed, user_data
from kmi.stages.boottest.watch import SSH, Extra, Options, Watch

TEST_VERSION = "2"  # bump when the checks change: every test reruns
GROW = 1 << 30  # the boot disk is this much larger than the image: the root fs must grow
TOOLS = (tools.QEMU_IMG, GENISOIMAGE, SSH, SSH_KEYGEN)

__all__ = [
    "CHECKS",
    "EXTRA_CHECKS",
    "MACHINES",
    "Expect",
    "Options",
    "Report",
    "Run",
    "boot_test",
    "boot_test_key",
    "failure_message",
    "firmware_of",
    "qemu_argv",
    "user_data",
    "write_results",
]


def virtual_size(disk: Path, log: Path) -> int:
    """The disk's virtual size in bytes (qemu-img info)."""
    found = tools.run(tools.QEMU_IMG, ["info", "--output=json", str(disk)], log=log)
    try:
        return int(json.loads(found.stdout)["virtual-size"])
    except (ValueError, KeyError, TypeError):
        raise KmiError(f"{disk}: qemu-img info gave no virtual size; log: {log}") from None


def boot_test_key(target: Target, disk_key: str) -> str:
    """Changes when the disk or what is checked changes; not with the accelerator."""
    expect = Expect.of(target)
    config = {"version": TEST_VERSION, "arch": str(target.arch), **asdict(expect)}
    return stage_key("test", config, inputs=[disk_key])


def boot_test(
    target: Target,
    disk: Path,
    logs: Path,
    options: Options,
    say: Callable[[str], None] = lambda line: None,
) -> Report:
    """Boot `disk` (read-only, behind an overlay) and run every check. Never raises for a
    guest that fails a check: the report says which; raises KmiError for a missing tool."""
    arch = str(target.arch)
    machine = MACHINES.get(arch)
    if machine is None:
        raise KmiError(f"{target.name}: kmi cannot boot {arch} guests")
    qemu = machine.qemu.path()
    firmware = firmware_of(arch)
    for tool in TOOLS:
        tool.path()
    expect = Expect.of(target)
    logs.mkdir(parents=True, exist_ok=True)
    setup_log = logs / "test-setup.log"
    qemu_log = logs / "test-qemu.log"
    for old in (setup_log, qemu_log, logs / "test-console.log", logs / "test-firmware.log"):
        old.unlink(missing_ok=True)
    report = Report(target.name, arch, options.accel)
    # short paths: a unix socket path must fit in 108 bytes
    with tempfile.TemporaryDirectory(prefix="kmi-test-") as tmp:
        folder = Path(tmp)
        token = secrets.token_hex(8)
        key, public_key = make_key(folder, setup_log)
        added, added_public = make_key(folder, setup_log, "id_agent")  # the agent adds it
        image_size = virtual_size(disk, setup_log)
        extra = Extra(added, added_public, image_size, image_size + GROW)
        run = Run(
            overlay=folder / "overlay.qcow2",
            seed=make_seed(folder, public_key, token, setup_log),
            agent_socket=folder / "agent.sock",
            console=logs / "test-console.log",
            firmware_log=logs / "test-firmware.log",
            ssh_port=free_port(),
        )
        tools.run(
            tools.QEMU_IMG,
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(disk.resolve()),
                str(run.overlay),
                str(extra.disk_size),  # larger than the image, as a larger DataVolume is
            ],
            log=setup_log,
        )
        argv = qemu_argv(arch, options.accel, run, options.memory_mib, options.cpus, firmware, qemu)
        qemu_log.write_text(f"$ {shlex.join(argv)}\n", encoding="utf-8")
        say(
            f"{target.name}: booting under {options.accel} (up to {options.timeout:.0f} s; "
            f"console: {run.console})"
        )
        watch = Watch(run, key, token, expect, options, report, say, extra)
        with tools.spawn(machine.qemu, argv[1:], qemu_log) as guest:
            try:
                watch.watch(guest)
            finally:
                report.seconds = time.monotonic() - watch.start
    return report
