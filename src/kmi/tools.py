"""The one way kmi runs external tools: argv lists through `sh`, logs, clear failures.

Output is teed line by line into the stage's log as it runs (so `tail -f` shows progress
of a long customization), and a failure names the command, its exit code, the log and the
log's last lines. A missing tool is reported when the stage runs, naming the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kmi.errors import KmiError
from kmi.files import write_if_changed

if TYPE_CHECKING:  # sh (about 50 ms to import) is imported by what runs a tool
    import sh

LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class Tool:
    """An external program, the packages that provide it, and why kmi needs it."""

    command: str
    debian: str
    fedora: str
    why: str

    def path(self) -> str:
        """The program's path, or a one-line error naming the package to install."""
        found = shutil.which(self.command)
        if found is None:
            raise KmiError(
                f"{self.command} not found: kmi needs it {self.why}; install the "
                f"'{self.debian}' package (Debian/Ubuntu) or '{self.fedora}' (Fedora)"
            )
        return found


GPG = Tool("gpg", "gnupg", "gnupg2", "to verify upstream signatures")
QEMU_IMG = Tool("qemu-img", "qemu-utils", "qemu-img", "to convert, check and compare disks")
VIRT_CUSTOMIZE = Tool(
    "virt-customize", "libguestfs-tools", "guestfs-tools", "to customize guest images"
)
VIRT_SYSPREP = Tool(
    "virt-sysprep", "libguestfs-tools", "guestfs-tools", "to remove host identity from images"
)
VIRT_SPARSIFY = Tool(
    "virt-sparsify", "libguestfs-tools", "guestfs-tools", "to zero unused space in images"
)
GUESTFISH = Tool("guestfish", "libguestfs-tools", "guestfs-tools", "to inspect guest images")


PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent() -> Callable[[], None]:
    """A preexec function for a child process: the kernel kills it (SIGKILL) when kmi dies,
    by any signal, SIGKILL included. A tool in its own process group (libguestfs, QEMU) is
    otherwise out of reach of a signal to kmi's group; libguestfs's own recovery process then
    takes the appliance down with the tool."""
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # kmi died before prctl took effect
            os._exit(1)

    return preexec


class ToolTimeout(KmiError):
    """A tool ran past its deadline and was stopped."""


MAX_SECONDS = 1e9  # no deadline
FULL_BELOW = 4 << 20  # bytes free under which a filesystem counts as full
POLL_SECONDS = 2.0


def full(folder: Path | None) -> bool:
    """Whether the filesystem holding `folder` is (all but) full."""
    if folder is None:
        return False
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW
    except OSError:
        return False


class FillWatch:
    """Polled: whether the filesystem of `folder` is full and has stayed so for two polls
    (QEMU pauses a guest or appliance whose write fails for want of space, so a full disk
    otherwise shows as a hang)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.since: float | None = None

    def stays_full(self) -> bool:
        if not full(self.folder):
            self.since = None
            return False
        now = time.monotonic()
        self.since = self.since or now
        return now - self.since >= 2 * POLL_SECONDS


def _command(argv: list[str], **options: Any) -> sh.RunningCommand:
    """Every tool kmi runs starts here: on pipes, never a pseudo-terminal (no colour codes
    in logs, as under CI), and killed with kmi whatever signal kills kmi."""
    import sh

    running: sh.RunningCommand = sh.Command(argv[0])(
        *argv[1:], _tty_out=False, _preexec_fn=die_with_parent(), _return_cmd=True, **options
    )
    return running


def _start(argv: list[str], **options: Any) -> sh.RunningCommand:
    """A tool started in the background, in its own process group (so that all it starts
    can be killed at once)."""
    return _command(argv, _bg=True, _bg_exc=False, _new_group=True, **options)


def _run_watched(
    argv: list[str],
    env: dict[str, str] | None,
    stdin: bytes | None,
    ok_codes: Sequence[int],
    out: Callable[[str], None],
    err: Callable[[str], None],
    timeout: float,
    space: Path | None,
) -> tuple[int, str]:
    """(exit code, why it was stopped: "", "timeout" or "full"): the tool in its own process
    group, all of it killed past the deadline, when the filesystem of `space` stays full
    (QEMU pauses an appliance whose write hits ENOSPC: without this, a hang), or when kmi
    itself is interrupted."""
    import sh

    running = _start(argv, _env=env, _in=stdin, _ok_code=list(ok_codes), _out=out, _err=err)
    reason: list[str] = []
    done = threading.Event()

    def watch() -> None:
        deadline, filling = time.monotonic() + timeout, FillWatch(space)
        while not done.wait(POLL_SECONDS):
            if filling.stays_full():
                reason.append("full")
            if time.monotonic() >= deadline:
                reason.append("timeout")
            if reason:
                _kill_group(running)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        running.wait()
    except sh.ErrorReturnCode:
        if reason:
            return -9, reason[0]
        raise
    except BaseException:
        _kill_group(running)
        with contextlib.suppress(sh.ErrorReturnCode, sh.SignalException, ProcessLookupError):
            running.wait()
        raise
    finally:
        done.set()
    return int(running.exit_code), ""


def _last_log_line(code: int, stopped: str, timeout: float | None) -> str:
    """The log's last line: how the tool ended."""
    if stopped == "timeout":
        return f"[stopped after {timeout:.0f} s]\n"
    if stopped == "full":
        return "[stopped: the filesystem filled up]\n"
    return f"[exit {code}]\n"


def filled_up(space: Path, what: str, log: Path | None) -> KmiError:
    """The error of a tool stopped because the filesystem of `space` filled up."""
    free = shutil.disk_usage(space).free
    where = f"; log: {log}" if log else ""
    return KmiError(
        f"{space}: the filesystem filled up ({free} bytes free) while {what} ran, and it was "
        f"stopped{where}; free space there, or set KMI_BUILD_DIR to a folder on a larger disk"
    )


def _kill_group(running: sh.RunningCommand) -> None:
    """SIGKILL to the tool's process group: the tool and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        running.process.kill_group()


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


def _tail(text: str) -> str:
    lines = text.strip().splitlines()[-LOG_TAIL_LINES:]
    return "\n".join("    " + line for line in lines)


def run(
    tool: Tool,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    ok_codes: Sequence[int] = (0,),
    log: Path | None = None,
    timeout: float | None = None,
    space: Path | None = None,
) -> Result:
    """Run `tool` with `args`; an exit code outside `ok_codes` is a KmiError that shows the
    command, its exit code and the last lines of its output (and the log's path). With a
    `timeout`, the tool runs in its own process group, and past the deadline the whole group
    (a libguestfs appliance included) is killed: a ToolTimeout. With `space`, the folder the
    tool writes to: when its filesystem fills up, the tool is stopped (or its failure
    explained) with a KmiError that says so, naming the folder."""
    import sh

    argv = [tool.path(), *args]
    full_env = {**os.environ, **env} if env is not None else None
    out: list[str] = []
    err: list[str] = []
    handle: IO[str] | None = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("a", encoding="utf-8")
        handle.write(f"$ {shlex.join(argv)}\n")
        handle.flush()

    def tee(into: list[str]) -> Callable[[str], None]:
        def collect(line: str) -> None:
            into.append(line)
            if handle is not None:
                handle.write(line)
                handle.flush()

        return collect

    stopped = ""
    try:
        if timeout is None and space is None:
            done = _command(
                argv,
                _env=full_env,
                _in=stdin,
                _ok_code=list(ok_codes),
                _out=tee(out),
                _err=tee(err),
            )
            code = done.exit_code
        else:
            limit = MAX_SECONDS if timeout is None else timeout
            code, stopped = _run_watched(
                argv, full_env, stdin, ok_codes, tee(out), tee(err), limit, space
            )
    except sh.ErrorReturnCode as failure:
        code = failure.exit_code
    finally:
        if handle is not None:
            handle.close()
    result = Result(code, "".join(out), "".join(err))
    if stopped == "" and code not in ok_codes and full(space):
        stopped = "full"  # it failed on the full filesystem (ENOSPC) rather than pausing
    if log is not None:
        with log.open("a", encoding="utf-8") as tail:
            tail.write(_last_log_line(code, stopped, timeout))
    if stopped == "full":
        assert space is not None
        raise filled_up(space, tool.command, log)
    if stopped == "timeout":
        assert timeout is not None
        where = f"; log: {log}" if log else ""
        raise ToolTimeout(
            f"{shlex.join(argv)} ran past its {timeout:.0f} s deadline and was stopped with "
            f"every process it started{where}\n{_tail(result.stderr + result.stdout)}"
        )
    if code not in ok_codes:
        where = f"; log: {log}" if log else ""
        raise KmiError(
            f"{shlex.join(argv)} failed with exit code {code}{where}\n"
            f"{_tail(result.stderr + result.stdout if log else result.stderr or result.stdout)}"
        )
    return result


def versions(tools: Sequence[Tool], memo: Path) -> dict[str, str]:
    """`tool --version` of each tool, part of the stage keys. Cached in `memo` by the
    binary's path, size and mtime, so up-to-date checks stat binaries instead of running
    them; an upgraded package changes the stat and so the version is read again."""
    try:
        cache: dict[str, str] = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        cache = {}
    if not isinstance(cache, dict):  # a damaged memo is only a slower run
        cache = {}
    found = {}
    for tool in tools:
        path = shutil.which(tool.command)
        if path is None:
            found[tool.command] = "missing"
            continue
        st = os.stat(path)
        stamp = f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"
        if stamp not in cache:
            first = run(tool, ["--version"]).stdout.strip().splitlines()
            cache[stamp] = first[0] if first else "unknown"
        found[tool.command] = cache[stamp]
    write_if_changed(memo, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return found


ANY_EXIT = list(range(-64, 256))  # exit codes and signals: the caller judges them


@dataclass(frozen=True)
class Answer:
    """What a short command said; `code` None when it did not finish within its time."""

    code: int | None
    stdout: str
    stderr: str


def ask(tool: Tool, args: Sequence[str], timeout: float, stdin: bytes = b"") -> Answer:
    """Run a short command whose failure is an answer, not an error (the boot test's SSH
    probe, a credential helper): any exit code is returned; past `timeout` it is killed and
    the code is None."""
    import sh

    argv = [tool.path(), *args]
    try:
        done = _command(argv, _in=stdin, _ok_code=ANY_EXIT, _timeout=timeout)
    except sh.TimeoutException:
        return Answer(None, "", "")
    stdout, stderr = done.stdout, done.stderr  # bytes, whatever the tool wrote
    return Answer(
        int(done.exit_code), stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
    )


class Spawned:
    """A long-running tool (QEMU) started by `spawn`."""

    def __init__(self, running: sh.RunningCommand) -> None:
        self.running = running

    def exit_code(self) -> int | None:
        """None while it runs; a negative number when a signal ended it."""
        alive, code = self.running.process.is_alive()
        return None if alive else int(code or 0)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then after `grace` seconds SIGKILL to its whole group; waited for."""
        import sh

        if self.exit_code() is None:
            with contextlib.suppress(ProcessLookupError):
                self.running.process.terminate()
            try:
                self.running.wait(timeout=grace)
            except sh.TimeoutException:
                _kill_group(self.running)
        self.running.wait()


@contextlib.contextmanager
def spawn(tool: Tool, args: Sequence[str], log: Path) -> Iterator[Spawned]:
    """Start `tool` in the background, in its own process group, its output appended to
    `log`, and killed with kmi (die_with_parent); stopped and waited for on leaving."""
    argv = [tool.path(), *args]
    with log.open("ab") as out:
        spawned = Spawned(_start(argv, _in=b"", _out=out, _err_to_out=True, _ok_code=ANY_EXIT))
        try:
            yield spawned
        finally:
            spawned.stop()
