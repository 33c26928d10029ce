"""A full disk fails at once, not as a paused appliance: sysprep and sparsify check the free
space they may need before any tool runs, on a real (small, tmpfs) filesystem."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmi.accel import choose, libguestfs_env
from kmi.catalogue import Arch, load_catalogue, load_flavor, targets_of
from kmi.demo import fixture as fixture_image
from kmi.demo.upstreams import SigningKey
from kmi.errors import KmiError
from kmi.stages import space
from kmi.stages.sparsify import sparsify
from kmi.stages.sysprep import sysprep
from tests.conftest import REPO
from tests.test_containerdisk import run


def test_virtual_size_is_what_qemu_img_says(tmp_path: Path) -> None:
    image = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "3G"], check=True)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)], capture_output=True, check=True
    )
    assert space.virtual_size(image) == json.loads(info.stdout)["virtual-size"] == 3 << 30
    raw = tmp_path / "d.raw"
    raw.write_bytes(b"\0" * 4096)
    assert space.virtual_size(raw) == 4096
    assert space.grown(3 << 30, "+2G") == 5 << 30
    assert space.grown(3 << 30, "10G") == 10 << 30
    assert space.grown(3 << 30, "") == 3 << 30


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB filesystem (tmpfs) as the build folder."""
    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_sysprep_on_a_full_disk_is_refused_before_any_tool_runs(
    small: Path, tmp_path: Path
) -> None:
    flavor = load_catalogue(REPO / "distros").flavor("debian")
    target = next(t for t in targets_of(flavor) if t.arch == Arch.AMD64)
    source = tmp_path / "upstream.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "3G"], check=True)
    log = small / "logs" / "sysprep.log"
    with pytest.raises(KmiError) as err:
        sysprep(target, source, small / "sysprep.qcow2", log, {})
    assert str(err.value).startswith(f"{small}: ")
    assert f"free, but sysprep of {target.name} may need 3.0 GiB; free space there, or set " in (
        str(err.value)
    )
    assert not log.exists() and list(small.iterdir()) == []  # nothing ran, nothing left


def test_sparsify_on_a_full_disk_is_refused_before_any_tool_runs(
    small: Path, tmp_path: Path
) -> None:
    source = tmp_path / "sysprep.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(source), "64M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 20M", str(source))  # 20 MiB of data
    with pytest.raises(KmiError, match=r"free, but sparsify of .* may need 40\.\d MiB"):
        sparsify(source, small / "disk.qcow2", small / "sparsify.log", {})
    assert list(small.iterdir()) == []


def test_a_disk_that_fills_up_during_sysprep_stops_the_appliance_and_says_so(
    tmp_path: Path, gpg_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-check passed (here: skipped), then the guest's package install fills the
    filesystem: QEMU pauses the appliance on ENOSPC, and kmi stops it within seconds with
    one line naming the folder, instead of waiting for KMI_GUESTFS_TIMEOUT."""
    made = fixture_image.fixture()
    catalogue = tmp_path / "distros"
    catalogue.mkdir()
    flavor, problems = load_flavor(fixture_image.add_flavor(catalogue, made, gpg_key))
    assert flavor is not None, problems
    target = targets_of(flavor)[0]
    source = made / "fixture.qcow2"
    copied = tmp_path / "copied.qcow2"  # how much room the converted image takes
    run("qemu-img", "convert", "-O", "qcow2", str(source), str(copied))
    room = space.allocated(copied) + (6 << 20)  # 6 MiB left for the package install
    copied.unlink()
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    monkeypatch.setattr(space, "require", lambda folder, need, what: None)
    chosen, _ = choose("auto", tmp_path / "accel.json")
    log = tmp_path / "sysprep.log"
    started = time.monotonic()
    try:
        with pytest.raises(KmiError) as err:
            sysprep(target, source, folder / "sysprep.qcow2", log, libguestfs_env(chosen), 900)
        took = time.monotonic() - started
        message = str(err.value)
        assert message.startswith(f"{folder}: the filesystem filled up ("), message
        assert "free space there, or set KMI_BUILD_DIR" in message
        assert took < 300  # not the 900 s deadline
        assert list(folder.iterdir()) == []  # nothing half-made is left
    finally:
        subprocess.run(["umount", str(folder)], check=False)
