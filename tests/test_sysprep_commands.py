"""Exact command lines of the sysprep stage (a fake binary on PATH records them), the arch
rule, and tool errors; no appliance is started here."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from kmi import tools
from kmi.catalogue import Arch, Customize, FileSpec, Target, load_catalogue
from kmi.errors import KmiError
from kmi.stages import sysprep as stage
from tests.conftest import REPO

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
    real = target("fedora", "42", Arch.AMD64)
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
        "amd64",
        {"LIBGUESTFS_BACKEND": "direct"},
    )
    calls = fake_tools.read_text().replace(str(tmp_path), "<tmp>")
    assert calls == (GOLDEN / "sysprep-fedora-42-amd64.txt").read_text()
    assert out.exists()


def test_nothing_to_customize_runs_only_sysprep(tmp_path: Path, fake_tools: Path) -> None:
    fedora = target("fedora", "42", Arch.ARM64)
    bare = Customize()
    flavor = dataclasses.replace(fedora.flavor, customize=bare)
    stage.sysprep(
        Target(flavor, fedora.version, Arch.ARM64),
        Path("/u.qcow2"),
        tmp_path / "s.qcow2",
        tmp_path / "l.log",
        "amd64",
        {},
    )
    assert [line.split()[0] for line in fake_tools.read_text().splitlines()] == [
        "qemu-img",
        "virt-sysprep",
    ]


def test_foreign_arch_with_guest_steps_fails_at_once() -> None:
    fedora = target("fedora", "42", Arch.ARM64)
    with pytest.raises(KmiError) as err:
        stage.skips_guest_steps(fedora, "amd64")
    assert str(err.value) == (
        "fedora-42-arm64: sysprep runs guest programs (packages, services, selinux_relabel), "
        "which needs an arm64 host and this one is amd64; build it on an arm64 machine (with "
        "KMI_CACHE_URL set, this one restores it from there), or add arm64 to "
        f"customize.without_guest_steps in {REPO}/distros/fedora.yaml"
    )


def test_guest_steps_left_out_only_where_the_catalogue_says(tmp_path: Path) -> None:
    fedora = target("fedora", "42", Arch.ARM64)
    customize = dataclasses.replace(fedora.flavor.customize, without_guest_steps=(Arch.ARM64,))
    flavor = dataclasses.replace(fedora.flavor, customize=customize)
    arm = Target(flavor, fedora.version, Arch.ARM64)
    assert stage.skips_guest_steps(arm, "amd64") is True
    assert stage.skips_guest_steps(Target(flavor, fedora.version, Arch.AMD64), "amd64") is False
    assert stage.customize_args(arm, tmp_path / "i.qcow2", skip_guest=True) == []


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
