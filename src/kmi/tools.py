"""The one way kmi runs external tools: argv lists through `sh`, logs, clear failures."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sh

from kmi.errors import KmiError

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
) -> Result:
    """Run `tool` with `args`; an exit code outside `ok_codes` is a KmiError that shows the
    command, its exit code and the last lines of its output (and the log's path)."""
    argv = [tool.path(), *args]
    command = sh.Command(argv[0])
    try:
        done = command(
            *argv[1:],
            _env=dict(env) if env is not None else None,
            _in=stdin,
            _ok_code=list(ok_codes),
            _return_cmd=True,
            _err_to_out=False,
        )
        result = Result(done.exit_code, _text(done.stdout), _text(done.stderr))
    except sh.ErrorReturnCode as err:
        result = Result(err.exit_code, _text(err.stdout), _text(err.stderr))
    _append_log(log, argv, result)
    if result.exit_code not in ok_codes:
        where = f"; log: {log}" if log else ""
        raise KmiError(
            f"{shlex.join(argv)} failed with exit code {result.exit_code}{where}\n"
            f"{_tail(result.stderr or result.stdout)}"
        )
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def _append_log(log: Path | None, argv: Sequence[str], result: Result) -> None:
    if log is None:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(
            f"$ {shlex.join(argv)}\n{result.stdout}{result.stderr}[exit {result.exit_code}]\n"
        )
