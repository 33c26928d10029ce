"""KVM where it works, TCG where it does not: found by booting a kernel, not by trusting
that /dev/kvm exists (on some hosts it exists and QEMU hangs or aborts on it).

The probe boots the host's own kernel under KVM with no disk and waits for its first line
on the serial console: about a second where KVM works. The verdict is cached per host
kernel and QEMU binary. KMI_ACCEL=kvm or tcg skips the probe.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from kmi.files import write_if_changed

PROBE_SECONDS = 10.0
QEMU = {
    "x86_64": ("qemu-system-x86_64", [], "ttyS0"),
    "aarch64": ("qemu-system-aarch64", ["-M", "virt", "-cpu", "host"], "ttyAMA0"),
}
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "s390x": "s390x"}


def host_arch() -> str:
    """This machine's architecture by its OCI name."""
    machine = platform.machine()
    return HOST_ARCH.get(machine, machine)


def _kernel() -> Path | None:
    own = Path(f"/boot/vmlinuz-{platform.release()}")
    if own.exists():
        return own
    others = sorted(Path("/boot").glob("vmlinuz-*"))
    return others[-1] if others else None


def probe_kvm() -> tuple[bool, str]:
    """Boot the host kernel under KVM; (works, why)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    command, machine, console = QEMU.get(platform.machine(), (None, [], ""))
    qemu = shutil.which(command) if command else None
    kernel = _kernel()
    if qemu is None or kernel is None:
        return False, f"cannot probe KVM (needs {command} and a kernel in /boot)"
    argv = [
        qemu,
        "-accel",
        "kvm",
        *machine,
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        f"console={console} panic=-1",
    ]
    from kmi import tools  # sh: only when a probe runs, not when doit loads tasks

    # the console is read as it comes (from QEMU's log), and QEMU stopped as soon as it spoke
    seen, deadline = b"", time.monotonic() + PROBE_SECONDS
    with tempfile.TemporaryDirectory(prefix="kmi-kvm-") as folder:
        log = Path(folder) / "console.log"
        tool = tools.Tool(qemu, str(command), str(command), "to probe KVM")
        with tools.spawn(tool, argv[1:], log) as running:
            while time.monotonic() < deadline and b"Linux version" not in seen:
                time.sleep(0.2)
                seen = log.read_bytes()
                if running.exit_code() is not None:
                    seen = log.read_bytes()
                    break
    if b"Linux version" in seen:
        return True, "a kernel booted under KVM"
    return False, f"QEMU with KVM did not boot a kernel within {PROBE_SECONDS:.0f} s"


def choose(setting: str, memo: Path) -> tuple[str, str]:
    """("kvm" or "tcg", why) for KMI_ACCEL=auto|kvm|tcg; auto probes once per host."""
    if setting in ("kvm", "tcg"):
        return setting, f"KMI_ACCEL={setting}"
    stamp = f"{platform.release()}:{os.path.exists('/dev/kvm')}"
    command = QEMU.get(platform.machine(), ("",))[0]
    qemu = shutil.which(command) if command else None
    if qemu:
        st = os.stat(qemu)
        stamp += f":{qemu}:{st.st_size}:{st.st_mtime_ns}"
    try:
        cached = json.loads(memo.read_text(encoding="utf-8"))
        if cached.get("stamp") == stamp:
            return cached["accel"], cached["why"] + " (cached)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass  # a damaged memo: probe again
    works, why = probe_kvm()
    accel = "kvm" if works else "tcg"
    write_if_changed(memo, json.dumps({"stamp": stamp, "accel": accel, "why": why}) + "\n")
    return accel, why


def libguestfs_env(accel: str) -> dict[str, str]:
    """Environment for libguestfs tools: the direct backend, TCG when KVM is unusable."""
    env = {"LIBGUESTFS_BACKEND": "direct"}
    if accel == "tcg":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env
