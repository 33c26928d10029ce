"""`doit status`, the default task: where the catalogue stands and what to run next. A bare
`doit` runs it, so it never starts a download or a build by accident."""

from __future__ import annotations

from kmi.progress import say
from kmi.tasks.common import CTX, TaskDict, guarded


def run_status() -> None:
    targets = list(CTX.targets.values())
    pinned = [t for t in targets if CTX.pinned(t) is not None]
    built = [t for t in pinned if CTX.plan.current(t, "build")]
    tested = [t for t in built if CTX.plan.recorded(t, "test")]
    flavors = len(CTX.catalogue.flavors)
    say(
        f"kmi: {flavors} flavors, {len(CTX.images)} images, {len(targets)} targets: "
        f"{len(pinned)} pinned in {CTX.settings.lock_file}, {len(built)} built, "
        f"{len(tested)} boot-tested"
    )
    step = (
        "doit discover (find and pin the newest verified upstream builds; network)"
        if len(pinned) < len(targets)
        else "doit build:<target> or doit build (download, customize, pack)"
        if len(built) < len(targets)
        else "doit test, then doit publish (KMI_REGISTRY=host/path)"
    )
    say(f"next: {step}")
    say("doit list shows every task family, doit list --all every target")


def task_status() -> TaskDict:
    """Show what is pinned, built and boot-tested, and what to run next (a bare `doit`)."""
    return {"actions": [(guarded(run_status), [])], "uptodate": [False], "verbosity": 2}
