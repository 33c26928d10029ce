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

The QEMU command line is built by a pure function (pinned by a test for every arch); the
console log, QEMU's own output and the check results go to build/<T>/logs/.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kmi import tools
from kmi.catalogue import Target
from kmi.errors import KmiError
from kmi.keys import stage_key

TEST_VERSION = "1"  # bump when the checks change: every test reruns
CHECKS = ("boot", "cloud-init", "agent", "ssh")
AGENT_CHANNEL = "org.qemu.guest_agent.0"
AGENT_GRACE = 60.0  # seconds the agent may lag behind a guest that is otherwise up
CONSOLE_TAIL = 25
MARKER_FILE = "/run/kmi-boot-test"

GENISOIMAGE = tools.Tool(
    "genisoimage", "genisoimage", "genisoimage", "to write the cloud-init NoCloud seed"
)
SSH = tools.Tool("ssh", "openssh-client", "openssh-clients", "to log in to the booted guest")
SSH_KEYGEN = tools.Tool(
    "ssh-keygen", "openssh-client", "openssh", "to make the boot test's throw-away key"
)
TOOLS = (tools.QEMU_IMG, GENISOIMAGE, SSH, SSH_KEYGEN)

# Firmware and kernel messages after which a guest will not come up: stop at once.
FATAL = re.compile(
    r"No bootable device|Boot failed: not a bootable disk|Kernel panic - not syncing"
    r"|No bootable option or device was found|Failed to mount /sysroot|Shell> $",
    re.MULTILINE,
)
CLOUD_INIT_DONE = re.compile(r"Cloud-init v\. \S+ finished at")


@dataclass(frozen=True)
class Machine:
    """How QEMU runs guests of one arch."""

    qemu: tools.Tool
    machine: str
    bus: str  # virtio transport suffix: "pci" or "ccw"
    firmware: tuple[str, ...] = ()  # UEFI images, the first that exists is used
    debugcon: bool = False  # SeaBIOS writes its messages to I/O port 0x402


MACHINES = {
    "amd64": Machine(
        tools.Tool(
            "qemu-system-x86_64", "qemu-system-x86", "qemu-system-x86-core", "to boot amd64 guests"
        ),
        "q35",
        "pci",
        debugcon=True,
    ),
    "arm64": Machine(
        tools.Tool(
            "qemu-system-aarch64",
            "qemu-system-arm",
            "qemu-system-aarch64-core",
            "to boot arm64 guests",
        ),
        "virt",
        "pci",
        firmware=(
            "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",  # Debian/Ubuntu: qemu-efi-aarch64
            "/usr/share/edk2/aarch64/QEMU_EFI.fd",  # Fedora: edk2-aarch64
            "/usr/share/AAVMF/AAVMF_CODE.fd",
        ),
    ),
    "s390x": Machine(
        tools.Tool(
            "qemu-system-s390x",
            "qemu-system-misc",
            "qemu-system-s390x-core",
            "to boot s390x guests",
        ),
        "s390-ccw-virtio",
        "ccw",
    ),
}
FIRMWARE_PACKAGE = {"arm64": "qemu-efi-aarch64 (Debian/Ubuntu) or edk2-aarch64 (Fedora)"}


def firmware_of(arch: str) -> str | None:
    """The UEFI image for `arch` (None: QEMU's built-in firmware); a one-line error if the
    arch needs one and none is installed."""
    wanted = MACHINES[arch].firmware
    if not wanted:
        return None
    for path in wanted:
        if Path(path).exists():
            return path
    raise KmiError(
        f"no UEFI firmware for {arch} guests (looked for {', '.join(wanted)}); "
        f"install {FIRMWARE_PACKAGE[arch]}"
    )


@dataclass(frozen=True)
class Run:
    """The files and port of one boot."""

    overlay: Path
    seed: Path
    agent_socket: Path
    console: Path
    firmware_log: Path
    ssh_port: int


def qemu_argv(
    arch: str,
    accel: str,
    run: Run,
    memory_mib: int,
    cpus: int,
    firmware: str | None,
    qemu: str | None = None,
) -> list[str]:
    """The QEMU command line that boots `run.overlay` the way KubeVirt would: virtio disk,
    the NoCloud seed as a second virtio disk, virtio-net with user networking, the guest
    agent's virtio-serial channel, a virtio RNG, the first serial port to a file."""
    m = MACHINES[arch]
    bus = m.bus
    argv = [
        qemu or m.qemu.command,
        "-name",
        "kmi-boot-test",
        "-machine",
        m.machine,
        "-accel",
        accel,
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-boot",
        "strict=on",
    ]
    if firmware:
        argv += ["-bios", firmware]
    argv += [
        "-chardev",
        f"file,id=console,path={run.console}",
        "-serial",
        "chardev:console",
    ]
    if m.debugcon:
        argv += [
            "-chardev",
            f"file,id=firmware,path={run.firmware_log}",
            "-device",
            "isa-debugcon,iobase=0x402,chardev=firmware",
        ]
    argv += [
        "-drive",
        f"file={run.overlay},format=qcow2,if=none,id=root,discard=unmap",
        "-device",
        f"virtio-blk-{bus},drive=root,bootindex=1",
        "-drive",
        f"file={run.seed},format=raw,if=none,id=cidata,readonly=on",
        "-device",
        f"virtio-blk-{bus},drive=cidata",
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{run.ssh_port}-:22",
        "-device",
        f"virtio-net-{bus},netdev=net0",
        "-chardev",
        f"socket,id=agent,path={run.agent_socket},server=on,wait=off",
        "-device",
        f"virtio-serial-{bus},id=serial0",
        "-device",
        f"virtserialport,bus=serial0.0,chardev=agent,name={AGENT_CHANNEL}",
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        f"virtio-rng-{bus},rng=rng0",
    ]
    return argv


# --- what is expected of a flavor ---------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What the guest must show: its default user and the OS the agent reports."""

    user: str
    os_id: str
    version: str

    @classmethod
    def of(cls, target: Target) -> Expect:
        flavor = target.flavor
        return cls(
            flavor.containerdisk.user, flavor.test.os_id or flavor.name, target.version.version
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


def boot_test_key(target: Target, disk_key: str) -> str:
    """Changes when the disk or what is checked changes; not with the accelerator."""
    expect = Expect.of(target)
    config = {"version": TEST_VERSION, "arch": str(target.arch), **asdict(expect)}
    return stage_key("test", config, inputs=[disk_key])


# --- the NoCloud seed ---------------------------------------------------------------------


def user_data(public_key: str, token: str) -> str:
    """cloud-config for the flavor's default user: the run's key and a marker command."""
    doc = {
        "ssh_authorized_keys": [public_key.strip()],
        "runcmd": [["sh", "-c", f"echo {token} > {MARKER_FILE} && echo kmi-marker {token}"]],
    }
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


def make_seed(folder: Path, public_key: str, token: str, log: Path) -> Path:
    """The NoCloud seed: an ISO 9660 volume labelled `cidata` with user-data and meta-data."""
    content = folder / "cidata"
    content.mkdir()
    (content / "user-data").write_text(user_data(public_key, token), encoding="utf-8")
    meta = f"instance-id: kmi-test-{token}\nlocal-hostname: kmi-test\n"
    (content / "meta-data").write_text(meta, encoding="utf-8")
    seed = folder / "seed.iso"
    tools.run(
        GENISOIMAGE,
        ["-quiet", "-output", str(seed), "-volid", "cidata", "-joliet", "-rock", str(content)],
        log=log,
    )
    return seed


def make_key(folder: Path, log: Path) -> tuple[Path, str]:
    key = folder / "id_ed25519"
    tools.run(
        SSH_KEYGEN, ["-q", "-t", "ed25519", "-N", "", "-C", "kmi-test", "-f", str(key)], log=log
    )
    return key, (folder / "id_ed25519.pub").read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the guest agent ----------------------------------------------------------------------


class Agent:
    """A client of qemu-guest-agent on QEMU's unix socket (QGA's JSON protocol)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.path))
            self.sock = sock
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _reply(self, wait: float, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        sock = self._connect()
        end = time.monotonic() + wait
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                try:
                    message = json.loads(line.strip(b"\xff \r\t"))
                except ValueError:
                    continue
                if isinstance(message, dict) and want(message):
                    return message
            left = end - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                self.close()
                return None
            self.buffer += chunk

    def sync(self, wait: float) -> bool:
        """guest-sync-delimited with a fresh id: True once the agent echoes it."""
        ident = secrets.randbelow(1 << 30)
        request = {"execute": "guest-sync-delimited", "arguments": {"id": ident}}
        try:
            # 0xFF first: the agent drops any half-read request and resynchronises
            self._connect().sendall(b"\xff" + json.dumps(request).encode() + b"\n")
            return self._reply(wait, lambda m: m.get("return") == ident) is not None
        except OSError:
            self.close()
            return False

    def call(self, command: str, wait: float = 30.0) -> Any:
        """Run one command; its `return` value, or a KmiError with the agent's error."""
        self._connect().sendall(json.dumps({"execute": command}).encode() + b"\n")
        reply = self._reply(wait, lambda m: "return" in m or "error" in m)
        if reply is None:
            raise KmiError(f"{command}: no answer within {wait:.0f} s")
        if "error" in reply:
            raise KmiError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply["return"]


# --- one boot -----------------------------------------------------------------------------


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
    checks: dict[str, Check] = field(default_factory=lambda: {c: Check(c) for c in CHECKS})
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


SSH_PROBE = (
    "id -un; cat " + MARKER_FILE + " 2>/dev/null || echo -; "
    "test -e /var/lib/cloud/instance/boot-finished && echo finished || echo running; "
    "(cloud-init status 2>/dev/null || echo 'status: unknown') | head -n 1; "
    "test -x /usr/sbin/qemu-ga -o -x /usr/bin/qemu-ga && echo agent-installed || echo agent-missing"
)
NO_AGENT = "qemu-ga is not installed in the guest"


@dataclass(frozen=True)
class Options:
    accel: str
    timeout: float
    memory_mib: int = 2048
    cpus: int = 2


def _text(log: Path) -> str:
    try:
        return log.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def console_tail(console: Path, lines: int = CONSOLE_TAIL) -> str:
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", _text(console))
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept) or "    (no console output)"


def _fatal(*logs: Path) -> str | None:
    for log in logs:
        found = FATAL.search(_text(log))
        if found:
            return found.group(0).strip()
    return None


@contextlib.contextmanager
def _running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """QEMU, started in its own process group and always stopped (and waited for) on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=tools.die_with_parent(),
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
            ],
            log=setup_log,
        )
        argv = qemu_argv(arch, options.accel, run, options.memory_mib, options.cpus, firmware, qemu)
        qemu_log.write_text(f"$ {shlex.join(argv)}\n", encoding="utf-8")
        say(
            f"{target.name}: booting under {options.accel} (up to {options.timeout:.0f} s; "
            f"console: {run.console})"
        )
        watch = _Watch(run, key, token, expect, options, report, say)
        with _running(argv, qemu_log) as proc:
            try:
                watch.watch(proc)
            finally:
                report.seconds = time.monotonic() - watch.start
    return report


class _Watch:
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
    ) -> None:
        self.run, self.token, self.expect, self.options = run, token, expect, options
        self.report, self.checks, self.say = report, report.checks, say
        self.start = time.monotonic()
        self.deadline = self.start + options.timeout
        self.agent = Agent(run.agent_socket)
        self.ssh_argv = [
            SSH.path(),
            *("-i", str(key), "-p", str(run.ssh_port)),
            *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"),
            *("-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"),
            *("-o", "ConnectTimeout=10"),
            f"{expect.user}@127.0.0.1",
            SSH_PROBE,
        ]
        self.ssh_said = ""  # the last thing a failed SSH attempt said
        self.guest: list[str] | None = None  # the SSH probe's lines
        self.settled_at: float | None = None  # when cloud-init was seen finished

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

    def watch(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            while not self._step(proc):
                time.sleep(2.0)
        finally:
            self.agent.close()
            self._unanswered()

    def _step(self, proc: subprocess.Popen[bytes]) -> bool:
        """One round of polling; True when the boot has shown all it will."""
        if proc.poll() is not None:
            failed = next(c for c in CHECKS if not self.checks[c].passed)
            qemu_log = self.run.console.parent / "test-qemu.log"
            exited = f"QEMU exited with code {proc.returncode} after {self.elapsed():.0f} s"
            self._set(failed, False, f"{exited} (see {qemu_log})")
            return True
        fatal = _fatal(self.run.console, self.run.firmware_log)
        if fatal and self.checks["boot"].passed is None:
            self._set(
                "boot", False, f"the guest did not boot: {fatal!r} after {self.elapsed():.0f} s"
            )
            return True
        if self.checks["agent"].passed is None:
            self._ask_agent()
        if self.guest is None or self.guest[2] != "finished":
            self._ask_ssh()
        if self.checks["cloud-init"].passed is None:
            self._judge_cloud_init()
        if self.settled_at is None:
            return time.monotonic() >= self.deadline
        if self.checks["agent"].passed is None and self.guest and self.guest[4] == "agent-missing":
            self._set(
                "agent", False, f"no answer from qemu-guest-agent on {AGENT_CHANNEL}: {NO_AGENT}"
            )
        if all(self.checks[c].passed is not None for c in CHECKS):
            return True
        now = time.monotonic()  # cloud-init is done: what has not answered gets a grace period
        return now - self.settled_at > AGENT_GRACE or now >= self.deadline

    def _ask_agent(self) -> None:
        if not self.run.agent_socket.exists() or not self.agent.sync(2.0):
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
        try:
            done = subprocess.run(
                self.ssh_argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=min(left, 30),
                preexec_fn=tools.die_with_parent(),
            )
        except subprocess.TimeoutExpired:
            return
        if done.returncode != 0:
            self.ssh_said = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
            return
        self._alive()
        lines = done.stdout.decode("utf-8", "replace").splitlines() + [""] * 5
        self.guest = [line.strip() for line in lines[:5]]
        if self.checks["ssh"].passed is None:
            user = self.guest[0]
            if user == self.expect.user:
                self._set("ssh", True, f"{user}@127.0.0.1:{self.run.ssh_port} with the run's key")
            else:
                self._set("ssh", False, f"logged in as {user!r}, expected {self.expect.user!r}")

    def _judge_cloud_init(self) -> None:
        if self.guest is None or self.guest[2] != "finished":
            if self.settled_at is None and CLOUD_INIT_DONE.search(_text(self.run.console)):
                # finished, says the console, but not readable over SSH (yet)
                self.settled_at = time.monotonic()
            return
        self.settled_at = self.settled_at or time.monotonic()
        marker, status = self.guest[1], self.guest[3]
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
