"""sysprep:T — the customized image: virt-customize applies the catalogue's changes, then
virt-sysprep removes what identifies the machine that built it.

The command lines are built by pure functions (pinned by a golden test); the stage works on
a temp copy and renames it into place only when every step succeeded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from kmi import tools
from kmi.catalogue import Customize, Flavor, Target
from kmi.errors import KmiError
from kmi.keys import stage_key
from kmi.stages import emulated, space

STAGE_VERSION = "1"
TOOLS = (tools.QEMU_IMG, tools.VIRT_CUSTOMIZE, tools.VIRT_SYSPREP)
# Steps that execute guest programs. SELinux relabelling is not one: libguestfs relabels
# from the host (setfiles in its appliance, or /.autorelabel for the first boot where the
# appliance has no setfiles), whatever the guest's arch.
GUEST_STEPS = ("update", "packages", "commands", "services", "post_commands")
WAYS = ("native", "emulated")
SLOWDOWN = "expect about 3.4x the time of a native sysprep (docs/benchmarks.md)"


def guest_steps(customize: Customize) -> list[str]:
    """The configured steps that execute guest programs."""
    return [step for step in GUEST_STEPS if getattr(customize, step)]


def skips_guest_steps(target: Target) -> bool:
    """Whether this target's builds leave the guest-program steps out (the catalogue's
    `without_guest_steps`): the same answer on every host."""
    c = target.flavor.customize
    return bool(guest_steps(c)) and target.arch in c.without_guest_steps


def way_to_customize(target: Target, host: str, setting: str) -> tuple[str, str]:
    """("native" or "emulated", why): libguestfs on the host when the arches match or no
    guest program runs; booting the image under emulation otherwise, or when KMI_CUSTOMIZE
    says so. A KmiError when the way needed cannot be taken here, naming what is missing."""
    steps = [] if skips_guest_steps(target) else guest_steps(target.flavor.customize)
    arch = str(target.arch)
    if not steps:
        return "native", "no step runs a guest program"
    if setting == "native" or (setting == "auto" and arch == host):
        if arch != host:
            raise KmiError(
                f"{target.name}: KMI_CUSTOMIZE=native, but sysprep runs guest programs "
                f"({', '.join(steps)}), which libguestfs can only run on an {arch} host and "
                f"this one is {host}; unset KMI_CUSTOMIZE to customize by emulation"
            )
        return "native", f"libguestfs on this {host} host"
    missing = emulated.available(arch)
    if missing is not None:
        raise KmiError(
            f"{target.name}: sysprep runs guest programs ({', '.join(steps)}), which this "
            f"{host} host can only run by booting the {arch} image under emulation, and that "
            f"cannot be done here: {missing}; or build it on an {arch} machine (with "
            f"KMI_CACHE_URL set, this one restores it from there)"
        )
    if setting == "emulated":
        return "emulated", "KMI_CUSTOMIZE=emulated"
    return "emulated", f"an {arch} guest on an {host} host: booted under emulation ({SLOWDOWN})"


def _digest_of(path: Path) -> str:
    """Content hash of a file or folder named by the catalogue (small files by nature)."""
    hasher = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        hasher.update(str(file.relative_to(path.parent)).encode() + b"\0")
        hasher.update(file.read_bytes())
    return hasher.hexdigest()


def flavor_config(flavor: Flavor) -> dict[str, Any]:
    """What shapes every customized image of the flavor: its customize and sysprep settings
    and the files they bring from the host (hashed: read once per run by the plan)."""
    base = flavor.source.parent
    c = flavor.customize
    named = [item.source for item in c.copy_in] + list(c.scripts)
    missing = [n for n in named if not (base / n).exists()]
    if missing:
        raise KmiError(f"{flavor.source}: customize: {base / missing[0]} does not exist")
    return {
        "customize": dataclasses.asdict(c),
        "operations": list(flavor.sysprep.operations),
        "host_files": {name: _digest_of(base / name) for name in named},
    }


def sysprep_key(
    target: Target,
    input_key: str,
    versions: dict[str, str],
    flavor: dict[str, Any] | None = None,
) -> str:
    """Everything that shapes the customized image: the flavor's customize and sysprep
    settings, the files they bring from the host (`flavor`: its flavor_config, when the
    caller has it), the tools' versions, the input's key. Not the host, nor the way it
    customizes: a native and an emulated build of the same inputs share a cache entry (the
    receipt says which way it was made)."""
    config = {
        **(flavor or flavor_config(target.flavor)),
        "arch": str(target.arch),
        "guest_steps_skipped": skips_guest_steps(target),
    }
    return stage_key("sysprep", config, {**versions, "kmi-sysprep": STAGE_VERSION}, [input_key])


def customize_args(target: Target, image: Path, skip_guest: bool, part: str = "all") -> list[str]:
    """virt-customize's arguments, in the catalogue's documented order; [] if nothing to do.
    `part`: "all" (a native build), or the host's share of an emulated one: "before" the
    boot (copy_in, files) or "after" it (firstboot_commands, selinux_relabel)."""
    c = target.flavor.customize
    base = target.flavor.source.parent
    guest = part == "all" and not skip_guest
    steps: list[str] = []
    if part in ("all", "before"):
        for item in c.copy_in:
            steps += ["--copy-in", f"{base / item.source}:{item.dest}"]
        for spec in c.files:
            parent = spec.path.rsplit("/", 1)[0] or "/"
            steps += [
                "--mkdir",
                parent,
                "--write",
                f"{spec.path}:{spec.content}",
                "--chmod",
                f"{spec.mode}:{spec.path}",
            ]
    if guest:
        if c.update:
            steps += ["--update"]
        if c.packages:
            steps += ["--install", ",".join(c.packages)]
        for command in c.commands:
            steps += ["--run-command", command]
        for service in c.services:
            steps += ["--run-command", f"systemctl enable {service}"]
    if part in ("all", "after"):
        for command in c.firstboot_commands:
            steps += ["--firstboot-command", command]
    if guest:
        for command in c.post_commands:
            steps += ["--run-command", command]
    relabel = c.selinux_relabel and part in ("all", "after")
    if not steps and not relabel:
        return []
    network = "--network" if c.network and guest else "--no-network"
    head = ["--format", "qcow2", "--add", str(image), network, "--smp", "2", "--memsize", "2048"]
    return head + steps + (["--selinux-relabel"] if relabel else [])


def sysprep_args(target: Target, image: Path) -> list[str]:
    # virt-sysprep's own "customize" operation runs last and writes a fresh machine-id into
    # the emptied /etc/machine-id, so that every VM from the image would share it: kmi
    # customizes with virt-customize before, and always turns that operation off.
    operations = ",".join([*target.flavor.sysprep.operations, "-customize"])
    return ["--format", "qcow2", "--add", str(image), "--operations", operations]


def sysprep(
    target: Target,
    source: Path,
    output: Path,
    log: Path,
    env: dict[str, str],
    timeout: float | None = None,
    boot: emulated.Boot | None = None,
) -> tuple[list[str], int]:
    """Make the customized image at `output` from the verified upstream image `source`;
    each libguestfs tool run is stopped past `timeout` seconds (tools.ToolTimeout). With
    `boot`, the guest steps run by booting the image under emulation, the host's steps
    before and after the boot in the catalogue's order. Returns the guest steps left out
    (the catalogue's `without_guest_steps`) and the image's size."""
    skip_guest = skips_guest_steps(target)
    c = target.flavor.customize
    work = output.with_name(f".{output.name}.tmp")
    # the customized copy can grow to the disk's (grown) virtual size, never beyond
    need = space.grown(space.virtual_size(source), c.grow)
    space.require(work.parent, need, f"sysprep of {target.name}")
    log.unlink(missing_ok=True)
    try:
        here = work.parent  # where a full disk is watched for
        convert = ["convert", "-O", "qcow2", str(source), str(work)]
        tools.run(tools.QEMU_IMG, convert, log=log, space=here)
        if c.grow:
            tools.run(tools.QEMU_IMG, ["resize", str(work), c.grow], log=log)
        guestfs = functools.partial(tools.run, env=env, log=log, timeout=timeout, space=here)
        parts = ["all"] if boot is None or skip_guest else ["before", "after"]
        for part in parts:
            if part == "after" and boot is not None:
                emulated.customize(target, work, log, env, boot)
            args = customize_args(target, work, skip_guest, part)
            if args:
                guestfs(tools.VIRT_CUSTOMIZE, args)
        for script in c.scripts:
            path = target.flavor.source.parent / script
            guestfs(tools.Tool(str(path), "-", "-", "as a catalogue script"), [str(work)])
        guestfs(tools.VIRT_SYSPREP, sysprep_args(target, work))
        os.replace(work, output)
    finally:
        work.unlink(missing_ok=True)
    skipped = guest_steps(c) if skip_guest else []
    return skipped, output.stat().st_size
