"""Customizing by emulation, without a boot: the steps a catalogue entry gives the guest,
the seed that carries them, and the runner script itself, run here by a real /bin/sh with
its guest paths moved into a temporary folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kmi.catalogue import Arch, Customize, Target, load_catalogue
from kmi.errors import KmiError
from kmi.stages import emulated
from tests.conftest import REPO


def fedora() -> Target:
    flavor = load_catalogue(REPO / "distros").flavor("fedora")
    return Target(flavor, flavor.versions[0], Arch.ARM64)


def test_guest_steps_follow_the_catalogue_order() -> None:
    c = Customize(
        update=True,
        packages=("qemu-guest-agent", "cloud-init"),
        commands=("echo one", "echo two"),
        services=("qemu-guest-agent",),
        firstboot_commands=("echo at first boot",),  # the host's: not a guest step
        post_commands=("dnf clean all",),
    )
    steps = emulated.guest_steps(c)
    assert [s.name for s in steps] == [
        "update",
        "packages",
        "commands[0]",
        "commands[1]",
        "services: qemu-guest-agent",
        "post_commands[0]",
    ]
    install = steps[1].script
    assert install.startswith("if command -v apt-get >/dev/null 2>&1; then export DEBIAN_FRONT")
    assert (
        "elif command -v dnf >/dev/null 2>&1; then dnf -y install qemu-guest-agent cloud-init\n"
        in (install)
    )
    assert steps[4].script == "systemctl enable qemu-guest-agent"  # as a native build runs it


def test_the_seed_runs_the_steps_and_changes_nothing_a_native_build_would_not() -> None:
    steps = emulated.guest_steps(fedora().flavor.customize)
    text = emulated.user_data(steps)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["users"] == [] and doc["preserve_hostname"] is True
    assert doc["growpart"] == {"mode": "off"} and doc["resize_rootfs"] is False
    assert doc["apt"] == {"preserve_sources_list": True}
    assert doc["runcmd"] == [["sh", "/run/kmi-customize/run"]]
    assert doc["power_state"]["mode"] == "poweroff" and doc["power_state"]["condition"] is True
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert files["/run/kmi-customize/steps"] == "1 packages\n2 services: qemu-guest-agent\n"
    assert files["/run/kmi-customize/step-2"] == "systemctl enable qemu-guest-agent\n"


def run_here(tmp_path: Path, steps: list[emulated.Step]) -> tuple[Path, str]:
    """The runner and its steps as cloud-init would lay them out, under tmp_path."""
    doc = yaml.safe_load(emulated.user_data(steps))
    results = tmp_path / "results"

    def moved(text: str) -> str:
        text = text.replace(emulated.STEPS, str(tmp_path / "steps"))
        return text.replace(emulated.RESULTS, str(results))

    for f in doc["write_files"]:
        path = Path(moved(f["path"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(moved(f["content"]))
    done = subprocess.run(
        ["sh", str(tmp_path / "steps" / "run")], capture_output=True, text=True, timeout=60
    )
    return results, done.stdout


def test_the_runner_stops_at_the_first_failing_step_and_keeps_each_output(
    tmp_path: Path,
) -> None:
    steps = [
        emulated.Step("commands[0]", "echo first; echo to stderr >&2"),
        emulated.Step("commands[1]", "echo second; exit 3"),
        emulated.Step("commands[2]", f"touch {tmp_path}/never"),
    ]
    results, console = run_here(tmp_path, steps)
    assert (results / "result").read_text() == "failed 2\n"
    assert (results / "1.exit").read_text() == "0\n"
    assert (results / "1.log").read_text() == "first\nto stderr\n"
    assert (results / "2.exit").read_text() == "3\n"
    assert not (results / "3.exit").exists() and not (tmp_path / "never").exists()
    assert "kmi-customize: step 2 (commands[1]) ended with exit status 3" in console


def test_the_runner_says_done_when_every_step_passed(tmp_path: Path) -> None:
    results, _ = run_here(tmp_path, [emulated.Step("commands[0]", "true")])
    assert (results / "result").read_text() == "done\n"


def test_a_failed_step_is_one_line_then_its_output_and_the_console(tmp_path: Path) -> None:
    steps = emulated.guest_steps(fedora().flavor.customize)
    results = tmp_path / "kmi-customize"
    results.mkdir()
    (results / "result").write_text("failed 1\n")
    (results / "1.exit").write_text("100\n")
    (results / "1.log").write_text("E: Unable to locate package no-such-package\n")
    console = tmp_path / "console.log"
    console.write_text("[  OK  ] Reached target Cloud-init target.\r\n")
    with pytest.raises(KmiError) as err:
        emulated._check(fedora(), steps, results, console)
    lines = str(err.value).splitlines()
    assert lines[0] == (
        f"fedora-{fedora().version.version}-arm64: guest step packages failed with exit status "
        f"100 (customizing by emulation); console: {console}"
    )
    assert lines[1] == "    E: Unable to locate package no-such-package"
    assert lines[-1] == "    [  OK  ] Reached target Cloud-init target."


def test_no_results_means_the_steps_never_ran(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("")
    with pytest.raises(KmiError) as err:
        emulated._check(fedora(), [], tmp_path / "missing", console)
    assert "the guest powered off without running its customization steps" in str(err.value)


def test_an_arch_without_its_emulator_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert emulated.available("riscv64") == "kmi cannot boot riscv64 guests"
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = emulated.available("s390x")
    assert missing is not None and "qemu-system-s390x" in missing


def test_an_image_that_does_not_boot_fails_at_once(tmp_path: Path) -> None:
    """A blank disk under real QEMU: the firmware finds nothing to boot, and the stage says
    so with the console's last lines instead of waiting for its deadline."""
    import time

    flavor = load_catalogue(REPO / "distros").flavor("debian")
    target = Target(flavor, flavor.versions[0], Arch.AMD64)
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "1G"], check=True)
    console = tmp_path / "console.log"
    started = time.monotonic()
    with pytest.raises(KmiError) as err:
        emulated.customize(
            target, blank, tmp_path / "sysprep.log", {}, emulated.Boot("tcg", 600, console)
        )
    assert time.monotonic() - started < 300  # not the 600 s deadline
    first = str(err.value).splitlines()[0]
    assert first == (
        "the image did not boot for its customization (Boot failed: not a bootable disk); "
        f"console: {console}"
    )
