"""One boot, polled until every check has an answer or the deadline passes: the guest agent
over its socket, an SSH probe with the run's key, the console for fatal firmware or kernel
messages and for cloud-init's end."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kmi import tools
from kmi.errors import KmiError
from kmi.stages.boottest.agent import Agent
from kmi.stages.boottest.machine import AGENT_CHANNEL, Run
from kmi.stages.boottest.report import CHECKS, EXTRA_CHECKS, Report, text_of
from kmi.stages.boottest.seed import MARKER_FILE, Expect

AGENT_GRACE = 60.0  # seconds the agent may lag behind a guest that is otherwise up
SSH = tools.Tool("ssh", "openssh-client", "openssh-clients", "to log in to the booted guest")
# Firmware and kernel messages after which a guest will not come up: stop at once.
FATAL = re.compile(
    r"No bootable device|Boot failed: not a bootable disk|Kernel panic - not syncing"
    r"|No bootable option or device was found|Failed to mount /sysroot|Shell> $",
    re.MULTILINE,
)
CLOUD_INIT_DONE = re.compile(r"Cloud-init v\. \S+ finished at")


@dataclass(frozen=True)
class Options:
    accel: str
    timeout: float
    memory_mib: int = 2048
    cpus: int = 2


SSH_PROBE = (
    "id -un; cat " + MARKER_FILE + " 2>/dev/null || echo -; "
    "test -e /var/lib/cloud/instance/boot-finished && echo finished || echo running; "
    "(cloud-init status 2>/dev/null || echo 'status: unknown') | head -n 1; "
    "test -x /usr/sbin/qemu-ga -o -x /usr/bin/qemu-ga && echo agent-installed || echo agent-missing"
)
NO_AGENT = "qemu-ga is not installed in the guest"
# Read once the guest is up (kmi.criteria's boot-time criteria), each answer on its line:
# SELinux's mode, whether AppArmor is enabled, whether a default route exists (IPv4 or
# IPv6), the root filesystem's size in KiB. Only /proc, /sys, grep and df: in every image.
EXTRA_PROBE = (
    "cat /sys/fs/selinux/enforce 2>/dev/null || echo -; "
    "cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo -; "
    "{ grep -q '^[^ \t]*[ \t]00000000[ \t]' /proc/net/route 2>/dev/null "
    r"|| grep -v ' lo$' /proc/net/ipv6_route 2>/dev/null | grep -q '^0\{32\} 00 '; } "
    "&& echo default-route || echo no-route; "
    "df -P -k / | tail -n 1"
)


def fatal_in(*logs: Path) -> str | None:
    """The first fatal firmware or kernel message in the logs."""
    for log in logs:
        found = FATAL.search(text_of(log))
        if found:
            return found.group(0).strip()
    return None


@dataclass(frozen=True)
class Extra:
    """What the tiers' boot-time criteria need: a second key for the agent to add, and the
    sizes of the image and of the larger disk it boots on."""

    key: Path
    public_key: str
    image_size: int  # the final disk's virtual size
    disk_size: int  # the overlay's: larger, as a larger DataVolume would be


def security_state(selinux: str, apparmor: str) -> str:
    """selinux-enforcing, selinux-permissive, apparmor or none, from the probe's lines."""
    if selinux in ("0", "1"):
        return "selinux-enforcing" if selinux == "1" else "selinux-permissive"
    return "apparmor" if apparmor == "Y" else "none"


def judge_security(wanted: str, found: str) -> tuple[bool, str]:
    """Whether the guest's access control is what the catalogue says the distribution ships."""
    shown = {
        "selinux-enforcing": "SELinux enforcing",
        "selinux-permissive": "SELinux permissive",
        "apparmor": "AppArmor enabled",
        "none": "neither SELinux nor AppArmor",
    }[found]
    if wanted == "auto":
        ok = found in ("selinux-enforcing", "apparmor")
        return (
            ok,
            shown if ok else f"{shown} (set test.security: none if the distribution ships so)",
        )
    expected = {"selinux": "selinux-enforcing", "apparmor": "apparmor", "none": "none"}[wanted]
    ok = found == expected
    return ok, shown if ok else f"{shown}; the catalogue says {wanted} (test.security)"


@dataclass(frozen=True)
class Probe:
    """What the SSH probe (SSH_PROBE) read in the guest."""

    user: str
    marker: str  # what MARKER_FILE holds ("-" when missing)
    finished: bool  # cloud-init's boot-finished file exists
    status: str  # the first line of `cloud-init status`
    agent_installed: bool

    @classmethod
    def parse(cls, output: str) -> Probe:
        lines = [line.strip() for line in output.splitlines()] + [""] * 5
        return cls(
            lines[0], lines[1], lines[2] == "finished", lines[3], lines[4] != "agent-missing"
        )


class Watch:
    """One boot, polled until every check has an answer or the deadline passes."""

    def __init__(
        self,
        run: Run,
        key: Path,
        token: str,
        expect: Expect,
        options: Options,
        report: Report,
        say: Callable[[str], None],
        extra: Extra | None = None,
    ) -> None:
        self.run, self.token, self.expect, self.options = run, token, expect, options
        self.extra = extra
        self.report, self.checks, self.say = report, report.checks, say
        self.start = time.monotonic()
        self.deadline = self.start + options.timeout
        assert run.agent_socket is not None and run.ssh_port is not None  # a test boot has both
        self.socket = run.agent_socket
        self.agent = Agent(run.agent_socket)
        self.key = key
        self.ssh_args = [*self._ssh(key), SSH_PROBE]
        self.ssh_said = ""  # the last thing a failed SSH attempt said
        self.guest: Probe | None = None  # what the SSH probe read last
        self.settled_at: float | None = None  # when cloud-init was seen finished

    def _ssh(self, key: Path) -> list[str]:
        """ssh's options to log in as the flavor's user with `key`."""
        assert self.run.ssh_port is not None
        return [
            *("-i", str(key), "-p", str(self.run.ssh_port)),
            *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"),
            *("-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"),
            *("-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes"),
            f"{self.expect.user}@127.0.0.1",
        ]

    def elapsed(self) -> float:
        return round(time.monotonic() - self.start, 1)

    def _set(self, name: str, passed: bool, detail: str) -> None:
        check = self.checks[name]
        check.passed, check.detail, check.seconds = passed, detail, self.elapsed()

    def _alive(self) -> None:
        if self.checks["boot"].passed is None:
            self.report.boot_seconds = self.elapsed()
            answered = f"the guest answered after {self.report.boot_seconds:.0f} s"
            self._set("boot", True, answered)
            self.say(f"{self.report.target}: {answered}")

    def watch(self, qemu: tools.Spawned) -> None:
        try:
            while not self._step(qemu):
                time.sleep(2.0)
        finally:
            self.agent.close()
            self._unanswered()

    def _step(self, qemu: tools.Spawned) -> bool:
        """One round of polling; True when the boot has shown all it will."""
        code = qemu.exit_code()
        if code is not None:
            failed = next(c for c in CHECKS if not self.checks[c].passed)
            qemu_log = self.run.console.parent / "test-qemu.log"
            exited = f"QEMU exited with code {code} after {self.elapsed():.0f} s"
            self._set(failed, False, f"{exited} (see {qemu_log})")
            return True
        fatal = fatal_in(self.run.console, self.run.firmware_log)
        if fatal and self.checks["boot"].passed is None:
            self._set(
                "boot", False, f"the guest did not boot: {fatal!r} after {self.elapsed():.0f} s"
            )
            return True
        if self.checks["agent"].passed is None:
            self._ask_agent()
        if self.guest is None or not self.guest.finished:
            self._ask_ssh()
        if self.checks["cloud-init"].passed is None:
            self._judge_cloud_init()
        if self.settled_at is None:
            return time.monotonic() >= self.deadline
        if self.checks["agent"].passed is None and self.guest and not self.guest.agent_installed:
            self._set(
                "agent", False, f"no answer from qemu-guest-agent on {AGENT_CHANNEL}: {NO_AGENT}"
            )
        if all(self.checks[c].passed is not None for c in CHECKS):
            self._extras()
            return True
        now = time.monotonic()  # cloud-init is done: what has not answered gets a grace period
        return now - self.settled_at > AGENT_GRACE or now >= self.deadline

    def _extras(self) -> None:
        """The tiers' boot-time criteria, asked once the core checks have answered."""
        extra = self.extra
        if extra is None or not (self.checks["ssh"].passed and self.checks["agent"].passed):
            return  # not reached: _unanswered says why
        if self.checks["security"].passed is None:
            done = tools.ask(SSH, [*self._ssh(self.key), EXTRA_PROBE], 60)
            if done.code == 0:
                self._judge_extra(done.stdout, extra)
        if self.checks["agent-ssh-key"].passed is None:
            self._agent_ssh_key(extra)

    def _judge_extra(self, output: str, extra: Extra) -> None:
        lines = [line.strip() for line in output.splitlines()] + [""] * 4
        selinux, apparmor, route, df = lines[:4]
        found = security_state(selinux, apparmor)
        wanted = self.expect.security
        self._set("security", *judge_security(wanted, found))
        if route == "default-route":
            self._set("network", True, "the guest has a default route (DHCP on user networking)")
        else:
            self._set("network", False, "no default route in the guest")
        fields = df.split()
        size = int(fields[1]) * 1024 if len(fields) > 1 and fields[1].isdigit() else 0
        image = extra.image_size
        if size > image:
            self._set(
                "root-grows",
                True,
                f"/ is {size / 2**30:.2f} GiB on a {extra.disk_size / 2**30:.2f} GiB disk "
                f"(the image: {image / 2**30:.2f} GiB)",
            )
        else:
            self._set(
                "root-grows",
                False,
                f"/ is {size / 2**30:.2f} GiB on a {extra.disk_size / 2**30:.2f} GiB disk: "
                f"not grown past the image's {image / 2**30:.2f} GiB (growpart, resize_rootfs)",
            )

    def _agent_ssh_key(self, extra: Extra) -> None:
        """What KubeVirt's accessCredentials with qemuGuestAgent propagation does: the agent
        adds a key to the user's authorized keys, then that key logs in."""
        arguments = {"username": self.expect.user, "keys": [extra.public_key.strip()]}
        try:
            self.agent.call("guest-ssh-add-authorized-keys", arguments=arguments)
        except (KmiError, OSError) as err:
            self._set("agent-ssh-key", False, f"guest-ssh-add-authorized-keys: {err}")
            return
        done = tools.ask(SSH, [*self._ssh(extra.key), "id -un"], 60)
        if done.code == 0 and done.stdout.strip() == self.expect.user:
            self._set(
                "agent-ssh-key",
                True,
                "guest-ssh-add-authorized-keys, then SSH with the key it added",
            )
            return
        said = (done.stderr or done.stdout).strip().splitlines()
        why = said[-1] if said else "no answer"
        self._set("agent-ssh-key", False, f"the agent added the key; SSH with it failed: {why}")

    def _ask_agent(self) -> None:
        if not self.socket.exists() or not self.agent.sync(2.0):
            return
        self._alive()
        try:
            self.agent.call("guest-ping")
            osinfo = self.agent.call("guest-get-osinfo")
        except KmiError as err:
            self._set("agent", False, str(err))
            return
        mismatch = self.expect.matches(osinfo)
        name = osinfo.get("pretty-name") or osinfo.get("id")
        self._set("agent", mismatch is None, mismatch or f"guest-ping, guest-get-osinfo: {name}")

    def _ask_ssh(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 1:
            return
        done = tools.ask(SSH, self.ssh_args, min(left, 30))
        if done.code is None:
            return
        if done.code != 0:
            self.ssh_said = (done.stderr or done.stdout).strip()
            return
        self._alive()
        self.guest = Probe.parse(done.stdout)
        if self.checks["ssh"].passed is None:
            user = self.guest.user
            if user == self.expect.user:
                self._set("ssh", True, f"{user}@127.0.0.1:{self.run.ssh_port} with the run's key")
            else:
                self._set("ssh", False, f"logged in as {user!r}, expected {self.expect.user!r}")

    def _judge_cloud_init(self) -> None:
        if self.guest is None or not self.guest.finished:
            if self.settled_at is None and CLOUD_INIT_DONE.search(text_of(self.run.console)):
                # finished, says the console, but not readable over SSH (yet)
                self.settled_at = time.monotonic()
            return
        self.settled_at = self.settled_at or time.monotonic()
        marker, status = self.guest.marker, self.guest.status
        if marker != self.token:
            held = f"{MARKER_FILE} holds {marker!r}, not the run's marker"
            self._set(
                "cloud-init", False, f"finished without running this run's user-data ({held})"
            )
        elif "error" in status or "degraded" in status:
            self._set("cloud-init", False, f"finished with errors: {status}")
        else:
            self._set("cloud-init", True, f"{status}; the run's marker command ran")

    def _unanswered(self) -> None:
        """Fill in the checks that never got an answer."""
        checks, limit = self.checks, f"{self.options.timeout:.0f} s"
        said = f"; ssh said: {self.ssh_said.splitlines()[-1]}" if self.ssh_said else ""
        if checks["boot"].passed is None:
            checks["boot"].passed = False
            checks["boot"].detail = f"no answer from the guest (agent or SSH) within {limit}{said}"
            return
        if checks["boot"].passed is False:
            return
        if checks["cloud-init"].passed is None:
            checks["cloud-init"].passed = False
            checks["cloud-init"].detail = (
                f"not finished within {limit}"
                if checks["ssh"].passed
                else "not readable: no SSH login"
            )
        waited = f"{AGENT_GRACE:.0f} s after cloud-init finished" if self.settled_at else limit
        if checks["agent"].passed is None:
            checks["agent"].passed = False
            checks[
                "agent"
            ].detail = f"no answer from qemu-guest-agent on {AGENT_CHANNEL} within {waited}"
        if checks["ssh"].passed is None:
            checks["ssh"].passed = False
            checks["ssh"].detail = f"no login as {self.expect.user} within {waited}{said}"
        for name in EXTRA_CHECKS:
            if checks[name].passed is None and self.extra is not None:
                checks[name].passed = False
                checks[name].detail = "not checked: the agent and SSH must answer first"
