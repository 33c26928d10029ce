"""How QEMU boots a guest of each arch the way KubeVirt would: the machine table, the UEFI
firmware, and the command line (a pure function, pinned by a test for every arch)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from kmi import tools
from kmi.errors import KmiError

AGENT_CHANNEL = "org.qemu.guest_agent.0"


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
    """The files and port of one boot. A customization boot (kmi.stages.emulated) has no
    agent channel and no SSH port, and may keep the guest off the outside network."""

    overlay: Path
    seed: Path
    agent_socket: Path | None
    console: Path
    firmware_log: Path
    ssh_port: int | None
    name: str = "kmi-boot-test"
    outside_network: bool = True  # False: user networking with restrict=on (no way out)


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
        run.name,
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
        _netdev(run),
        "-device",
        f"virtio-net-{bus},netdev=net0",
    ]
    if run.agent_socket is not None:
        argv += [
            "-chardev",
            f"socket,id=agent,path={run.agent_socket},server=on,wait=off",
            "-device",
            f"virtio-serial-{bus},id=serial0",
            "-device",
            f"virtserialport,bus=serial0.0,chardev=agent,name={AGENT_CHANNEL}",
        ]
    argv += [
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        f"virtio-rng-{bus},rng=rng0",
    ]
    return argv


def _netdev(run: Run) -> str:
    """QEMU's user-mode network (slirp): the guest reaches out through the host's own
    connections, as a pod's network would let it; DNS at 10.0.2.3 forwards to the host's."""
    netdev = "user,id=net0"
    if run.ssh_port is not None:
        netdev += f",hostfwd=tcp:127.0.0.1:{run.ssh_port}-:22"
    if not run.outside_network:
        netdev += ",restrict=on"
    return netdev


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
