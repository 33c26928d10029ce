"""`doit ci-matrix`: the CI job matrix, one job per target on a runner of its arch, written
from the catalogue and the lock (.github/workflows/kmi.yml reads it).

    doit ci-matrix               every maintained target
    doit ci-matrix only=stale    only the targets that need a build job: with a registry set
                                 (KMI_REGISTRY), those whose image published for their arch
                                 was not made from tonight's recipe; without one, those whose
                                 containerdisk or boot test is not current in this build folder

The matrix goes to build/ci-matrix.json (GitHub's `strategy.matrix` shape: {"include": [...]})
and to stdout. Targets of an arch with no runner label are left out, and said so on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from kmi import publishing
from kmi.catalogue import Target
from kmi.errors import KmiError
from kmi.files import write_if_changed
from kmi.progress import say
from kmi.tasks.common import CTX, TaskDict, guarded


def matrix(targets: Iterable[Target], runners: Mapping[str, str]) -> dict[str, Any]:
    """GitHub's matrix: one entry per target that has a runner for its arch."""
    include = [
        {
            "target": t.name,
            "image": t.image,
            "flavor": t.flavor.name,
            "version": t.version.version,
            "arch": str(t.arch),
            "runner": runners[str(t.arch)],
        }
        for t in targets
        if str(t.arch) in runners
    ]
    return {"include": include}


def is_stale(target: Target) -> bool:
    """Its containerdisk or its boot test is not current in this build folder."""
    return not (CTX.plan.current(target, "build") and CTX.plan.recorded(target, "test"))


def stale_in_registry(targets: list[Target]) -> list[Target]:
    """The pinned targets whose arch the registry does not hold made from tonight's recipe
    (the published per-arch manifest's annotation against the plan's): a few GETs per
    image, the same answer on any machine. Why each target needs a job goes to stderr."""
    from kmi.registry import client_for

    registry = CTX.settings.registry
    assert registry is not None
    client = client_for(CTX.settings, registry)
    recipes = {t.name: CTX.plan.recipe(t) for t in targets}
    unpinned = [name for name, recipe in recipes.items() if recipe is None]
    if unpinned:
        sys.stderr.write(
            f"ci-matrix: not pinned in the lock (discovery failed or never ran), left out: "
            f"{', '.join(unpinned)}\n"
        )
    by_image: dict[str, list[Target]] = {}
    for target in targets:
        if recipes[target.name] is not None:
            by_image.setdefault(target.image, []).append(target)
    stale = []
    for image, mine in by_image.items():
        where, found = publishing.published(CTX, image, client)
        for target in mine:
            there = found.get(str(target.arch))
            if there is not None and there.made_from(recipes[target.name]):
                continue
            stale.append(target)
            why = "holds it made from another recipe" if there else "does not hold it"
            sys.stderr.write(f"ci-matrix: {target.name}: {where} {why}\n")
    return stale


def run_ci_matrix(only: str) -> None:
    if only not in ("", "stale"):
        raise KmiError(f"ci-matrix only={only!r}: expected only=stale, or nothing for every target")
    runners = dict(CTX.settings.ci_runners)
    targets = list(CTX.targets.values())
    if only and CTX.settings.registry is not None:
        targets = stale_in_registry(targets)
    elif only:
        targets = [t for t in targets if is_stale(t)]
    left_out = sorted({str(t.arch) for t in targets} - set(runners))
    for arch in left_out:
        names = ", ".join(t.name for t in targets if str(t.arch) == arch)
        sys.stderr.write(
            f"ci-matrix: no runner for {arch}, left out: {names} "
            f"(set KMI_CI_RUNNERS={arch}=<runner label>)\n"
        )
    found = matrix(targets, runners)
    text = json.dumps(found, separators=(",", ":"))
    path = CTX.paths.build / "ci-matrix.json"
    write_if_changed(path, text + "\n")
    say(text)


def task_ci_matrix() -> TaskDict:
    """Print the CI job matrix (JSON, one job per target with its arch's runner label)."""
    from doit import get_var

    return {
        "basename": "ci-matrix",
        "actions": [(guarded(run_ci_matrix), [get_var("only", "")])],
        "uptodate": [False],
        "verbosity": 2,
    }
