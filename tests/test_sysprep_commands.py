"""Exact command lines of the sysprep stage (a fake binary on PATH records them), the arch
rule, and tool errors; no appliance is started here."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest

from kmi import tools
from kmi.catalogue import Arch, Customize, FileSpec, Target, load_catalogue
from kmi.errors import KmiError
from kmi.stages import sysprep as stage
from tests.conftest import REPO
from tests.test_kill import gone

GOLDEN = Path(__file__).parent / "golden"


def target(name: str, version: str, arch: Arch) -> Target:
    flavor = load_catalogue(REPO / "distros").flavor(name)
    return Target(flavor, next(v for v in flavor.versions if v.version == version), arch)


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("qemu-img", "virt-customize", "virt-sysprep", "virt-sparsify"):
        (bin_dir / name).symlink_to(Path(__file__).parent / "fake-tool")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("KMI_FAKE_LOG", str(log))
    return log


def fedora_like() -> Target:
    """Fedora's real entry, with every kind of step a Fedora build might add."""
    real = target("fedora", "44", Arch.AMD64)
    customize = dataclasses.replace(
        real.flavor.customize,
        grow="+2G",
        update=True,
        files=(FileSpec("/etc/dnf/dnf.conf.d/kmi.conf", "install_weak_deps=False\n"),),
        commands=("dnf -y remove firewalld",),
        firstboot_commands=("growpart /dev/vda 1",),
        post_commands=("dnf clean all",),
    )
    return Target(dataclasses.replace(real.flavor, customize=customize), real.version, real.arch)


def test_fedora_command_lines_are_pinned(tmp_path: Path, fake_tools: Path) -> None:
    fedora = fedora_like()
    out = tmp_path / "build" / "sysprep.qcow2"
    stage.sysprep(
        fedora,
        Path("/cache/upstream.qcow2"),
        out,
        tmp_path / "sysprep.log",
        {"LIBGUESTFS_BACKEND": "direct"},
    )
    calls = fake_tools.read_text().replace(str(tmp_path), "<tmp>")
    assert calls == (GOLDEN / "sysprep-fedora-44-amd64.txt").read_text()
    assert out.exists()


def test_nothing_to_customize_runs_only_sysprep(tmp_path: Path, fake_tools: Path) -> None:
    fedora = target("fedora", "44", Arch.ARM64)
    bare = Customize()
    flavor = dataclasses.replace(fedora.flavor, customize=bare)
    stage.sysprep(
        Target(flavor, fedora.version, Arch.ARM64),
        Path("/u.qcow2"),
        tmp_path / "s.qcow2",
        tmp_path / "l.log",
        {},
    )
    assert [line.split()[0] for line in fake_tools.read_text().splitlines()] == [
        "qemu-img",
        "virt-sysprep",
    ]


def test_the_way_to_customize_follows_the_arches_and_the_setting() -> None:
    arm, amd = target("fedora", "44", Arch.ARM64), target("fedora", "44", Arch.AMD64)
    assert stage.way_to_customize(amd, "amd64", "auto") == (
        "native",
        "libguestfs on this amd64 host",
    )
    assert stage.way_to_customize(arm, "amd64", "auto")[0] == "emulated"
    assert stage.way_to_customize(amd, "amd64", "emulated") == (
        "emulated",
        "KMI_CUSTOMIZE=emulated",
    )
    bare = dataclasses.replace(arm.flavor, customize=Customize(selinux_relabel=True))
    assert stage.way_to_customize(Target(bare, arm.version, Arch.ARM64), "amd64", "auto") == (
        "native",
        "no step runs a guest program",
    )
    with pytest.raises(KmiError) as err:
        stage.way_to_customize(arm, "amd64", "native")
    assert str(err.value) == (
        "fedora-44-arm64: KMI_CUSTOMIZE=native, but sysprep runs guest programs (packages, "
        "services), which libguestfs can only run on an arm64 host and this one is amd64; "
        "unset KMI_CUSTOMIZE to customize by emulation"
    )


def test_a_foreign_arch_that_cannot_be_emulated_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kmi.stages.boottest import machine

    arm = target("fedora", "44", Arch.ARM64)
    monkeypatch.setitem(machine.MACHINES, "arm64", dataclasses.replace(
        machine.MACHINES["arm64"], firmware=("/nonexistent/QEMU_EFI.fd",)
    ))  # fmt: skip
    with pytest.raises(KmiError) as err:
        stage.way_to_customize(arm, "amd64", "auto")
    assert str(err.value) == (
        "fedora-44-arm64: sysprep runs guest programs (packages, services), which this amd64 "
        "host can only run by booting the arm64 image under emulation, and that cannot be done "
        "here: no UEFI firmware for arm64 guests (looked for /nonexistent/QEMU_EFI.fd); install "
        "qemu-efi-aarch64 (Debian/Ubuntu) or edk2-aarch64 (Fedora); or build it on an arm64 "
        "machine (with KMI_CACHE_URL set, this one restores it from there)"
    )


def test_guest_steps_left_out_only_where_the_catalogue_says(tmp_path: Path) -> None:
    fedora = target("fedora", "44", Arch.ARM64)
    customize = dataclasses.replace(fedora.flavor.customize, without_guest_steps=(Arch.ARM64,))
    flavor = dataclasses.replace(fedora.flavor, customize=customize)
    arm = Target(flavor, fedora.version, Arch.ARM64)
    assert stage.skips_guest_steps(arm) is True
    assert stage.skips_guest_steps(Target(flavor, fedora.version, Arch.AMD64)) is False
    assert stage.way_to_customize(arm, "amd64", "native")[0] == "native"
    image = tmp_path / "i.qcow2"
    head = ["--format", "qcow2", "--add", str(image), "--no-network", "--smp", "2"]
    # SELinux relabelling is the host's (libguestfs), so it stays
    assert stage.customize_args(arm, image, skip_guest=True) == [
        *head,
        *("--memsize", "2048", "--selinux-relabel"),
    ]


def test_an_emulated_build_splits_the_host_steps_around_the_boot(tmp_path: Path) -> None:
    fedora, image = fedora_like(), tmp_path / "i.qcow2"
    head = ["--format", "qcow2", "--add", str(image), "--no-network", "--smp", "2"]
    head += ["--memsize", "2048"]
    assert stage.customize_args(fedora, image, False, "before") == [
        *head,
        *("--mkdir", "/etc/dnf/dnf.conf.d"),
        *("--write", "/etc/dnf/dnf.conf.d/kmi.conf:install_weak_deps=False\n"),
        *("--chmod", "0644:/etc/dnf/dnf.conf.d/kmi.conf"),
    ]
    assert stage.customize_args(fedora, image, False, "after") == [
        *head,
        *("--firstboot-command", "growpart /dev/vda 1", "--selinux-relabel"),
    ]


def test_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KmiError) as err:
        tools.run(tools.VIRT_CUSTOMIZE, ["--version"])
    assert str(err.value) == (
        "virt-customize not found: kmi needs it to customize guest images; install the "
        "'libguestfs-tools' package (Debian/Ubuntu) or 'guestfs-tools' (Fedora)"
    )


def test_failure_shows_command_exit_code_and_log_tail(tmp_path: Path) -> None:
    script = tmp_path / "broken"
    script.write_text("#!/bin/sh\necho working on it\necho 'disk full' >&2\nexit 3\n")
    script.chmod(0o755)
    log = tmp_path / "logs" / "sysprep.log"
    with pytest.raises(KmiError) as err:
        tools.run(tools.Tool(str(script), "-", "-", "for a test"), ["a b"], log=log)
    assert str(err.value).splitlines() == [
        f"{script} 'a b' failed with exit code 3; log: {log}",
        "    disk full",
        "    working on it",
    ]
    assert log.read_text() == f"$ {script} 'a b'\nworking on it\ndisk full\n[exit 3]\n"


HANGS_FIRST = "if [ -e {mark} ]; then echo second try; else touch {mark}; sleep 300 & sleep 301; fi"


def test_a_tool_past_its_deadline_is_stopped_with_every_process_it_started(
    tmp_path: Path,
) -> None:
    """A real shell standing in for virt-customize and its appliance: a child that would
    outlive the tool is killed with it, the log says so, and the error names the deadline."""
    shell = tools.Tool("sh", "dash", "dash", "to run a test script")
    log = tmp_path / "sysprep.log"
    mark = tmp_path / "ran-once"
    tag = uuid.uuid4().hex  # in the environment of every process the tool starts
    env = {**os.environ, "KMI_KILL_TEST": tag}
    with pytest.raises(tools.ToolTimeout) as stopped:
        tools.run(shell, ["-c", HANGS_FIRST.format(mark=mark)], env=env, log=log, timeout=1)
    assert (
        str(stopped.value)
        .splitlines()[0]
        .endswith(
            f"ran past its 1 s deadline and was stopped with every process it started; log: {log}"
        )
    )
    assert log.read_text().splitlines()[-1] == "[stopped after 1 s]"
    assert gone(tag) == []  # neither the tool nor its child is left running
    # the stage is tried once more from its input; the first try's log is kept
    said: list[str] = []

    def attempt() -> str:
        return tools.run(shell, ["-c", HANGS_FIRST.format(mark=mark)], log=log, timeout=5).stdout

    import kmi.tasks.targets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kmi.tasks.targets, "say", said.append)
        assert kmi.tasks.targets.once_more_on_timeout("t", log, attempt) == "second try\n"
    assert said == []  # it did not time out this time: the mark exists
    mark.unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kmi.tasks.targets, "say", said.append)
        quick = tools.run  # a 1 s deadline for the first try, 5 s for the second
        deadlines = iter([1.0, 5.0])

        def run_with(*args: object, **kwargs: object) -> tools.Result:
            return quick(*args, **{**kwargs, "timeout": next(deadlines)})  # type: ignore[arg-type]

        assert (
            kmi.tasks.targets.once_more_on_timeout(
                "t",
                log,
                lambda: run_with(shell, ["-c", HANGS_FIRST.format(mark=mark)], log=log).stdout,
            )
            == "second try\n"
        )
    kept = tmp_path / "sysprep.timed-out.log"
    assert said == [
        f"t: {shell.path()} -c '{HANGS_FIRST.format(mark=mark)}' ran past its 1 s deadline and "
        f"was stopped with every process it started; log: {log}; trying once more (the "
        f"first try's log: {kept})"
    ]
    assert kept.read_text().splitlines()[-1] == "[stopped after 1 s]"
    assert log.read_text().splitlines()[-2:] == ["second try", "[exit 0]"]
