"""doit's configuration for kmi: the state file in the cache, keep going past failures,
kmi's reporter, SIGTERM as Ctrl-C, and a bare `doit` that only shows where things stand."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from kmi.errors import KmiError
from kmi.tasks.common import CTX


class KmiReporter(ConsoleReporter):  # type: ignore[misc]
    """doit's console reporter, with failures as `FAILED task: message` and a summary.
    Only `doit run` makes one: it takes the build folder's lock (list and info do not)."""

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        try:
            CTX.hold_build_folder()
        except KmiError as err:
            self.write(f"ERROR: {err}\n")
            raise SystemExit(3) from None
        CTX.stamp_follows_tasks = True
        self.failed_lines: list[tuple[str, str]] = []
        self.command = " ".join(["doit", *(selected_tasks or [])])
        super().initialize(tasks, selected_tasks)

    def add_success(self, task: Any) -> None:
        CTX.task_ended()
        super().add_success(task)

    def add_failure(self, task: Any, exception: Any) -> None:
        CTX.task_ended()
        super().add_failure(task, exception)

    def _write_failure(self, result: dict[str, Any], write_exception: bool = True) -> None:
        fail, task = result["exception"], result["task"]
        if isinstance(fail, TaskFailed):
            self.write(f"FAILED {task.name}: {fail.message}\n")
            first = (fail.message.strip().splitlines() or ["failed"])[0]
            self.failed_lines.append((task.name, first))
        elif isinstance(fail, UnmetDependency):
            self.write(f"SKIPPED {task.name}: a task it needs failed\n")
        else:
            super()._write_failure(result, write_exception)

    def complete_run(self) -> None:
        failed = [
            r["task"].name for r in self.failures if not isinstance(r["exception"], UnmetDependency)
        ]
        skipped = len(self.failures) - len(failed)
        if failed:
            self.write(f"{len(failed)} task(s) failed, {skipped} skipped: {', '.join(failed)}\n")
        from kmi import results

        with contextlib.suppress(KmiError):
            table = results.summary(CTX.paths.results(), CTX.run_id)
            if table:
                self.write(table)
        self._job_summary()
        if self.runtime_errors:
            self.write("Execution aborted.\n" + "\n".join(self.runtime_errors) + "\n")

    def _job_summary(self) -> None:
        """In a GitHub Actions job, this run's failures and tables on the run's summary page
        (every job's summary shows there: a red night says what failed and why)."""
        where = os.environ.get("GITHUB_STEP_SUMMARY", "")
        if not where:
            return
        from kmi import results

        with contextlib.suppress(KmiError):
            text = results.job_summary(
                CTX.paths.results(), CTX.run_id, self.command, self.failed_lines
            )
            if not text:
                return
            try:
                with open(where, "a", encoding="utf-8") as out:
                    out.write(text)
            except OSError as err:
                self.write(f"kmi: cannot write the job summary to {where}: {err.strerror}\n")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _set_aside_if_torn(state: Path) -> None:
    """doit's state file is only an accelerator (receipts say what is done): one torn by a
    kill while doit wrote it is set aside with one line, and the run goes on without it."""
    try:
        json.loads(state.read_bytes())
    except FileNotFoundError:
        return
    except (ValueError, RecursionError, OSError):
        aside = state.with_name(f"{state.name}.damaged")
        os.replace(state, aside)
        sys.stderr.write(
            f"kmi: {state} was damaged (a run killed while writing it?); set aside as "
            f"{aside.name}; receipts decide what is done\n"
        )


def _registry_variable() -> None:
    """`doit publish registry=HOST/PATH` (a doit variable) is a setting like KMI_REGISTRY,
    parsed and checked with the others when doit loads."""
    from doit import get_var

    given = (get_var("registry", None) or "").strip()
    if given:
        CTX.overrides["KMI_REGISTRY"], CTX.labels["KMI_REGISTRY"] = given, "registry"


def doit_config() -> dict[str, Any]:
    """DOIT_CONFIG for dodo.py. Every setting is parsed here, before any task runs: a bad
    value stops doit with one line naming the variable."""
    _registry_variable()
    try:
        paths = CTX.paths
    except KmiError as err:
        sys.stderr.write(f"ERROR: {err}\n")
        raise SystemExit(3) from None
    paths.cache.mkdir(parents=True, exist_ok=True)
    _set_aside_if_torn(paths.doit_db())
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted)  # as Ctrl-C: outputs cleaned up, tools killed
    return {
        "default_tasks": ["status"],  # a bare `doit` starts nothing heavy
        "dep_file": str(paths.doit_db()),
        "backend": "json",
        "continue": True,
        "reporter": KmiReporter,
    }
