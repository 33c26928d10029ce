"""What every task family shares: the run's Context, actions that fail in one line, and
the shape of a per-target task."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import InvalidDodoFile, TaskFailed

from kmi import maintained
from kmi.catalogue import Target
from kmi.context import Context
from kmi.errors import KmiError

TaskDict = dict[str, Any]

CTX = Context()


def loaded() -> Context:
    """The context with its catalogue, lock and settings read; a problem in any of them
    stops doit before any task, with the problem's own lines."""
    for what, load in (
        ("", lambda: CTX.settings),
        ("the catalogue has problems:\n", lambda: CTX.catalogue),
        ("the lock file has problems:\n", lambda: CTX.targets),
    ):
        try:
            load()
        except KmiError as err:
            raise InvalidDodoFile(f"{what}{err}") from None
    return CTX


def targets() -> dict[str, Target]:
    return loaded().targets


def images() -> dict[str, list[Target]]:
    return loaded().images


def guarded(action: Callable[..., None]) -> Callable[..., TaskFailed | None]:
    """Run an action; a KmiError becomes a TaskFailed with its message, no traceback."""

    def run(*args: Any) -> TaskFailed | None:
        try:
            with CTX.acting():
                action(*args)
        except KmiError as err:
            return TaskFailed(str(err))
        return None

    run.__name__ = action.__name__
    run.__doc__ = action.__doc__
    return run


def unknown_requested(family: str, image: bool = False) -> Iterator[TaskDict]:
    """A failing task for each `family:<name>` on the command line that names a catalogue
    flavor but no maintained target (or image), so the user reads why instead of doit's
    "Invalid parameter"."""
    known = images() if image else targets()
    for arg in sys.argv[1:]:
        head, _, name = arg.partition(":")
        if head != family or not name or name in known:
            continue
        why = maintained.why_unknown(CTX.catalogue.flavors, CTX.lock(), name, image)
        if why is not None:
            yield {
                "name": name,
                "doc": "not maintained",
                "actions": [(_refuse, [why])],
                "uptodate": [False],
            }


def _refuse(why: str) -> TaskFailed:
    return TaskFailed(why)


def _not_needed(name: str, stage: str) -> bool:
    return not CTX.plan.needed(CTX.targets[name], stage)


def per_target(
    stage: str,
    action: Callable[[Target], None],
    needs: tuple[str, ...] = (),
    clean: Callable[[Target], list[Any]] | None = None,
) -> Iterator[TaskDict]:
    """One task per target, `stage:T`: up to date when the plan says it is not needed;
    `doit clean stage:T` removes its outputs and receipt (never the download cache)."""

    def act(name: str) -> None:
        action(CTX.targets[name])

    def wipe(name: str) -> None:  # paths made only when doit clean runs
        target = CTX.targets[name]
        remove([CTX.paths.receipt(name, stage), *(clean(target) if clean else [])])

    act.__name__ = action.__name__
    build = str(CTX.paths.build)  # string joins: thousands of tasks at scale
    for name, target in targets().items():
        task: TaskDict = {
            "name": name,
            "doc": f"{target.flavor.name} {target.version.version} {target.arch}",
            "actions": [(guarded(act), [name])],
            "targets": [f"{build}/{name}/{stage}.json"],  # Paths.receipt
            "uptodate": [(_not_needed, [name, stage])],
            "clean": [(wipe, [name])],
            "verbosity": 2,
        }
        if needs:
            task["task_dep"] = [f"{need}:{name}" for need in needs]
        yield task
    yield from unknown_requested(stage)


def remove(paths: list[Any]) -> None:
    """doit clean: the receipt first (so a half-removed output never counts as done), then
    the outputs, files or folders."""
    for path in map(Path, paths):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            print(f"{path} removed")
        elif path.exists() or path.is_symlink():
            path.unlink()
            print(f"{path} removed")
