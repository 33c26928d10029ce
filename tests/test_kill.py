"""A kill at any moment leaves no tool running: every child kmi starts dies with it, by the
kernel's parent-death signal, even a tool in its own process group (libguestfs, QEMU) and
even when kmi gets SIGKILL. Tools see a pipe, not a terminal. doit's state file, torn by a
kill, is set aside with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kmi import tools
from tests.conftest import Project

SH = tools.Tool("sh", "dash", "bash", "to run a test script")

CHILD = """
import sys
from kmi import tools
sleep = tools.Tool("sleep", "coreutils", "coreutils", "to wait")
print("ready", flush=True)
tools.run(sleep, ["300"], timeout=float(sys.argv[1]) if sys.argv[1] != "none" else None)
"""


def marked(mark: str) -> list[int]:
    """Processes whose environment carries `mark` (children inherit it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def started(mark: str, seconds: float = 60) -> list[int]:
    """The marked processes once the tool has run its program: a child read between its fork
    and its exec can show an empty environment for a moment, so waiting for two marked
    processes is not enough (seen once in CI under load); wait for `sleep` itself."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = marked(mark)
        for pid in found:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    return found
            except OSError:
                continue
        time.sleep(0.05)
    return marked(mark)


def gone(mark: str, seconds: float = 10) -> list[int]:
    """Wait for every marked process to end; those left."""
    deadline = time.monotonic() + seconds
    while (left := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_tools_see_a_pipe_not_a_terminal() -> None:
    done = tools.run(SH, ["-c", "[ -t 1 ] && echo terminal || echo pipe"])
    assert done.stdout == "pipe\n"


@pytest.mark.parametrize("how", ["pid", "group"])
@pytest.mark.parametrize("timeout", ["none", "600"])  # 600: the tool in its own group
def test_a_tool_dies_with_kmi(how: str, timeout: str) -> None:
    mark = f"KMI_KILL_TEST={uuid.uuid4()}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, timeout],
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,  # its own group, as a CI runner starts a job
    )
    assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
    assert len(started(mark)) == 2  # kmi and its sleep
    if how == "pid":
        os.kill(parent.pid, signal.SIGKILL)
    else:
        os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    assert gone(mark) == []


def test_sigterm_is_an_interrupt(tmp_path: Path) -> None:
    """SIGTERM, as a CI runner sends on cancel, ends a run the way Ctrl-C does: Python's
    cleanup runs (temp outputs removed, the tool's group killed) instead of a bare exit."""
    mark = f"KMI_KILL_TEST={uuid.uuid4()}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1], "KMI_CACHE_DIR": str(tmp_path)}
    script = "from kmi.tasks.config import doit_config\ndoit_config()\n" + CHILD
    parent = subprocess.Popen(
        [sys.executable, "-c", script, "600"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
    assert len(started(mark)) == 2
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=30)
    assert parent.returncode not in (0, -signal.SIGTERM)
    assert b"KeyboardInterrupt: signal 15" in err
    assert gone(mark) == []


def test_a_torn_doit_state_is_set_aside(project: Project) -> None:
    state = project.work / "cache" / "doit-state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text('{"checksum:debian-12-amd64": {"')
    run = project.doit("list")
    assert run.code == 0, run.out
    assert (
        f"kmi: {state} was damaged (a run killed while writing it?); set aside as "
        "doit-state.json.damaged; receipts decide what is done"
    ) in run.out.splitlines()
    assert not state.exists() and state.with_name("doit-state.json.damaged").exists()
    assert "Traceback" not in run.out
