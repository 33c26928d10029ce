"""Customizing by emulation: the catalogue's guest steps run inside the target's own image,
booted under qemu-system-<arch>, when libguestfs cannot run them (its appliance has the
host's arch) or when KMI_CUSTOMIZE=emulated asks for it.

One boot carries the steps: a throw-away NoCloud seed (the mechanism every image kmi
publishes must honour, since the boot test relies on it) writes each step to /run and has
cloud-init run them in order, stop at the first that fails, and power the guest off. Each
step's output and exit status go to /var/lib/kmi-customize in the image; after the boot, a
guestfish session on the host (any arch can read any image) copies them out and removes
them, with what cloud-init left of that boot (as `cloud-init clean --logs` would). The
results come from the disk, not the console or SSH: the disk holds them whatever console
the image's kernel writes to, and no SSH key or server is needed or left behind. The
serial console is kept as a log, and its last lines come with a failure.

The seed keeps the boot from changing what a native build would not: no default user is
created (`users: []`, which cloud-init honours though its schema wants a non-empty list and
says so in a warning), no hostname is given (cloud-init sets the one the image has, before
it reads any user-data), the apt sources are kept, the root filesystem is not grown,
/etc/hosts is not managed. The network is QEMU's user-mode network: the guest
reaches the distribution's mirrors through the host's connections, or nothing at all
(`restrict=on`) when the catalogue says `network: false`.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kmi import tools
from kmi.catalogue import Customize, Target
from kmi.errors import KmiError
from kmi.stages.boottest.machine import MACHINES, Run, firmware_of, qemu_argv
from kmi.stages.boottest.report import console_tail
from kmi.stages.boottest.seed import write_seed
from kmi.stages.boottest.watch import fatal_in

RESULTS = "/var/lib/kmi-customize"  # in the guest: each step's output and exit status
STEPS = "/run/kmi-customize"  # in the guest: the steps and their runner (tmpfs: gone at poweroff)
MEMORY_MIB = 2048  # as virt-customize's appliance gets (--memsize 2048)
CPUS = 2
POLL_SECONDS = 1.0

# The package commands follow virt-customize's own (libguestfs-common,
# mlcustomize/guest_packages.ml), chosen by the package manager found in the guest.
APT = "export DEBIAN_FRONTEND=noninteractive; apt_opts='-q -y -o Dpkg::Options::=--force-confnew'"
INSTALL = {
    "apt-get": APT + "; apt-get $apt_opts update && apt-get $apt_opts install {packages}",
    "dnf": "dnf -y install {packages}",
    "yum": "yum -y install {packages}",
    "zypper": "zypper -n in -l {packages}",
    "apk": "apk update && apk add {packages}",
    "pacman": "pacman -S --noconfirm {packages}",
}
UPDATE = {
    "apt-get": APT + "; apt-get $apt_opts update && apt-get $apt_opts upgrade",
    "dnf": "dnf -y --best upgrade",
    "yum": "yum -y update",
    "zypper": "zypper -n dup -l",
    "apk": "apk update && apk upgrade",
    "pacman": "pacman -Su --noconfirm",
}

RUNNER = f"""\
#!/bin/sh
# kmi: the catalogue's guest steps, in order; the first that fails ends the run
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
rm -rf {RESULTS}
mkdir -p {RESULTS}
while IFS=' ' read -r n name; do
    echo "kmi-customize: step $n ($name) started"
    {{ sh {STEPS}/step-$n </dev/null 2>&1; echo $? >{RESULTS}/$n.exit; }} | tee {RESULTS}/$n.log
    code=$(cat {RESULTS}/$n.exit)
    echo "kmi-customize: step $n ($name) ended with exit status $code"
    if [ "$code" != 0 ]; then echo "failed $n" >{RESULTS}/result; sync; exit 1; fi
done <{STEPS}/steps
echo done >{RESULTS}/result
sync
"""


@dataclass(frozen=True)
class Step:
    name: str  # as the catalogue names it: "packages", "commands[0]", "services: sshd"
    script: str  # POSIX shell, run by /bin/sh in the guest


def by_package_manager(commands: dict[str, str], what: str) -> str:
    """A shell script that runs the command for the first package manager the guest has."""
    branches = [
        f"{'if' if i == 0 else 'elif'} command -v {pm} >/dev/null 2>&1; then {command}"
        for i, (pm, command) in enumerate(commands.items())
    ]
    managers = ", ".join(commands)
    return (
        "\n".join(branches)
        + f'\nelse echo "kmi: no package manager to {what} ({managers}) in the guest" >&2; '
        + "exit 127\nfi\n"
    )


def guest_steps(c: Customize) -> list[Step]:
    """The steps that run guest programs, in the catalogue's order; services are enabled
    with the same command line a native build runs."""
    steps: list[Step] = []
    if c.update:
        steps.append(Step("update", by_package_manager(UPDATE, "update")))
    if c.packages:
        packages = " ".join(shlex.quote(p) for p in c.packages)
        install = {pm: command.format(packages=packages) for pm, command in INSTALL.items()}
        steps.append(Step("packages", by_package_manager(install, "install packages")))
    steps += [Step(f"commands[{i}]", command) for i, command in enumerate(c.commands)]
    steps += [Step(f"services: {s}", f"systemctl enable {s}") for s in c.services]
    steps += [Step(f"post_commands[{i}]", command) for i, command in enumerate(c.post_commands)]
    return steps


def user_data(steps: list[Step]) -> str:
    """cloud-config that writes the steps and their runner, runs them, and powers off."""
    listing = "".join(f"{i} {step.name}\n" for i, step in enumerate(steps, 1))
    files = [{"path": f"{STEPS}/run", "permissions": "0700", "content": RUNNER}]
    files.append({"path": f"{STEPS}/steps", "permissions": "0600", "content": listing})
    files += [
        {"path": f"{STEPS}/step-{i}", "permissions": "0700", "content": step.script + "\n"}
        for i, step in enumerate(steps, 1)
    ]
    doc = {
        "users": [],  # no default user: a native build creates none
        "preserve_hostname": True,
        "manage_etc_hosts": False,
        "growpart": {"mode": "off"},
        "resize_rootfs": False,
        "apt": {"preserve_sources_list": True},
        "write_files": files,
        "runcmd": [["sh", f"{STEPS}/run"]],
        "power_state": {"mode": "poweroff", "condition": True, "timeout": 120},
    }
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


# After the boot: copy the results out, then remove them and what cloud-init kept of that
# boot, as `cloud-init clean --logs --configs network` would: /var/lib/cloud but a seed the
# image may ship (and that folder too when the boot left it empty), its logs, and the
# network configuration it rendered (the paths of its GEN_NET_CONFIG_FILES, and Debian's
# interfaces.d file without the .cfg). `instance` is a symlink, removed first: guestfish's
# glob marks it as a folder and would follow it. `-` lines may fail (nothing matched).
COLLECT = f"""\
-copy-out {RESULTS} {{out}}
rm-rf {RESULTS}
rm-f /var/lib/cloud/instance
-glob rm-rf /var/lib/cloud/[!s]*
rm-rf /var/lib/cloud/sem
rm-rf /var/lib/cloud/scripts
-rmdir /var/lib/cloud/seed
-rmdir /var/lib/cloud
rm-f /var/log/cloud-init.log
rm-f /var/log/cloud-init-output.log
rm-f /etc/netplan/50-cloud-init.yaml
rm-f /etc/NetworkManager/conf.d/99-cloud-init.conf
rm-f /etc/NetworkManager/conf.d/30-cloud-init-ip6-addr-gen-mode.conf
-glob rm-f /etc/NetworkManager/system-connections/cloud-init-*.nmconnection
-glob rm-f /etc/systemd/network/10-cloud-init-*.network
rm-f /etc/network/interfaces.d/50-cloud-init.cfg
rm-f /etc/network/interfaces.d/50-cloud-init
"""


def available(arch: str) -> str | None:
    """None when this host can boot `arch` guests for customization; else what is missing."""
    machine = MACHINES.get(arch)
    if machine is None:
        return f"kmi cannot boot {arch} guests"
    try:
        machine.qemu.path()
        firmware_of(arch)
    except KmiError as err:
        return str(err)
    return None


@dataclass(frozen=True)
class Boot:
    accel: str
    timeout: float
    console: Path  # the guest's serial console, kept as a log
    say: Callable[[str], None] = lambda line: None


def customize(target: Target, image: Path, log: Path, env: dict[str, str], boot: Boot) -> None:
    """Run the target's guest steps in `image` (written in place) by booting it; a KmiError
    naming the failing step, with its output and the console's last lines, if one fails."""
    steps = guest_steps(target.flavor.customize)
    if not steps:
        return
    arch = str(target.arch)
    machine = MACHINES[arch]
    boot.console.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="kmi-customize-") as tmp:
        folder = Path(tmp)
        instance = f"kmi-customize-{time.time_ns()}"
        seed = write_seed(folder, user_data(steps), instance, log, hostname=None)
        run = Run(
            overlay=image,
            seed=seed,
            agent_socket=None,
            console=boot.console,
            firmware_log=folder / "firmware.log",
            ssh_port=None,
            name="kmi-customize",
            outside_network=target.flavor.customize.network,
        )
        argv = qemu_argv(arch, boot.accel, run, MEMORY_MIB, CPUS, firmware_of(arch))
        with log.open("a", encoding="utf-8") as out:
            out.write(f"$ {shlex.join(argv)}\n")
        boot.say(
            f"{target.name}: booting the image under {boot.accel} to run {len(steps)} guest "
            f"step(s) (up to {boot.timeout:.0f} s; console: {boot.console})"
        )
        _boot(machine.qemu, argv[1:], log, run, boot)
        results = folder / "results"
        results.mkdir()
        tools.run(
            tools.GUESTFISH,
            ["-a", str(image), "-i"],
            stdin=COLLECT.format(out=shlex.quote(str(results))).encode(),
            env=env,
            log=log,
            timeout=boot.timeout,
        )
        _check(target, steps, results / Path(RESULTS).name, boot.console)


def _boot(qemu: tools.Tool, args: list[str], log: Path, run: Run, boot: Boot) -> None:
    """QEMU until the guest powers itself off; stopped (a ToolTimeout) past the deadline,
    or when the filesystem the image is on stays full (QEMU pauses a guest whose write
    fails for want of space: without this, a wait until the deadline)."""
    deadline = time.monotonic() + boot.timeout
    here = run.overlay.parent
    filling = tools.FillWatch(here)
    with tools.spawn(qemu, args, log) as guest:
        while (code := guest.exit_code()) is None:
            if filling.stays_full():
                raise tools.filled_up(here, f"{qemu.command} (the customization boot)", log)
            fatal = fatal_in(run.console, run.firmware_log)
            if fatal is not None:  # a firmware or kernel failure: it will not come up
                raise KmiError(
                    f"the image did not boot for its customization ({fatal}); console: "
                    f"{run.console}\n{console_tail(run.console)}"
                )
            if time.monotonic() >= deadline:
                raise tools.ToolTimeout(
                    f"the customization boot ran past its {boot.timeout:.0f} s deadline and "
                    f"was stopped; console: {run.console}\n{console_tail(run.console)}"
                )
            time.sleep(POLL_SECONDS)
    if code != 0:
        raise KmiError(
            f"QEMU ended with exit status {code} during the customization boot; log: {log}\n"
            f"{console_tail(run.console)}"
        )


def _check(target: Target, steps: list[Step], results: Path, console: Path) -> None:
    """Every step passed, or a one-line KmiError naming the first that failed."""
    outcome = _read(results / "result")
    if outcome == "done":
        return
    found = re.fullmatch(r"failed (\d+)", outcome)
    if found is None:
        raise KmiError(
            f"{target.name}: the guest powered off without running its customization steps "
            f"(cloud-init did not run them?); console: {console}\n{console_tail(console)}"
        )
    n = int(found.group(1))
    step = steps[n - 1]
    code = _read(results / f"{n}.exit") or "?"
    output = _read(results / f"{n}.log")
    tail = "\n".join("    " + line for line in output.splitlines()[-tools.LOG_TAIL_LINES :])
    raise KmiError(
        f"{target.name}: guest step {step.name} failed with exit status {code} (customizing "
        f"by emulation); console: {console}\n{tail or '    (no output)'}\n"
        f"  the console's last lines:\n{console_tail(console)}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
