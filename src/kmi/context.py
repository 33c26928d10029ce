"""What one run shares: the settings (parsed once), the catalogue, the lock, the plan, the
engine, and the things made on first use (HTTP, the stage cache, tool versions, the
accelerator). No doit here; kmi.tasks.common holds one Context for the doit process.

Loading is cheap (YAML, the lock; no network, no hashing, no tool probing), so `doit list`
stays instant. Only `discover_unpinned` reaches the network, and says so in its name.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kmi import maintained, receipts
from kmi.catalogue import Catalogue, Target, load_catalogue
from kmi.engines import Engine, engine_for
from kmi.errors import KmiError
from kmi.files import hold
from kmi.lock import Lock, LockEntry, read_lock
from kmi.paths import Paths
from kmi.plan import Plan
from kmi.progress import say
from kmi.settings import Settings, load_settings
from kmi.stages import sparsify as sparsify_stage
from kmi.stages import sysprep as sysprep_stage

if TYPE_CHECKING:  # heavy (requests, sh): imported when an action needs them
    from kmi.net import Http
    from kmi.stagecache import StageCache


class Context:
    """Shared by every task generator and action of one doit process, loaded lazily."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self.labels: dict[str, str] = {}  # how the user named an override (`--registry`)
        self._lock: tuple[tuple[int, int], Lock] | None = None
        # Under doit's reporter the lock is stat'ed again only after a task ended (what may
        # change it), not at each of the thousands of up-to-date checks of a large run.
        self.stamp_follows_tasks = False
        self._stamp: tuple[tuple[int, int] | None] | None = None
        self._plan: tuple[tuple[int, int] | None, Plan] | None = None
        self._build_lock: IO[str] | None = None
        # one id per doit run (parallel workers are forked from this process and share it)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"

    @cached_property
    def settings(self) -> Settings:
        return load_settings(overrides=self.overrides, labels=self.labels)

    def override(self, name: str, value: str, label: str) -> None:
        """A setting given on doit's command line (`--registry=...`): parsed and checked as
        the environment's are; what was derived from the settings is made again."""
        self.overrides[name], self.labels[name] = value, label
        for derived in ("settings", "paths", "engine", "stage_cache", "http"):
            self.__dict__.pop(derived, None)
        self._plan = None
        self.settings  # noqa: B018 - parsed now: a bad value fails before any task runs

    @cached_property
    def paths(self) -> Paths:
        return Paths.of(self.settings)

    @cached_property
    def catalogue(self) -> Catalogue:
        return load_catalogue(self.settings.catalogue_dir)

    @cached_property
    def engine(self) -> Engine:
        """The engine the settings chose (native or buildx), for the whole run."""
        return engine_for(self)

    def _lock_stamp(self) -> tuple[int, int] | None:
        if self.stamp_follows_tasks and self._stamp is not None:
            return self._stamp[0]
        try:
            st = self.settings.lock_file.stat()
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        self._stamp = (stamp,)
        return stamp

    def task_ended(self) -> None:
        """A task ended: it may have written the lock (discovery does), so look again."""
        self._stamp = None

    @contextlib.contextmanager
    def acting(self) -> Iterator[None]:
        """While an action runs (here or in a worker process of `doit -n`), the lock is
        stat'ed at each look: the action itself may write it (discovery on first build)."""
        follows, self.stamp_follows_tasks = self.stamp_follows_tasks, False
        try:
            yield
        finally:
            self.stamp_follows_tasks = follows
            self._stamp = None

    def lock(self) -> Lock:
        """The lock file, re-read only when it changed on disk (discovery may write it)."""
        stamp = self._lock_stamp()
        if stamp is None:
            return Lock()
        if self._lock is None or self._lock[0] != stamp:
            self._lock = (stamp, read_lock(self.settings.lock_file))
        return self._lock[1]

    @property
    def plan(self) -> Plan:
        """Every stage key, computed once for the lock as it is (again only if it changes)."""
        stamp = self._lock_stamp()
        if self._plan is None or self._plan[0] != stamp:
            from kmi.accel import host_arch

            plan = Plan(
                self.settings, self.paths, self.lock(), self.tool_versions, host_arch(), self.engine
            )
            self._plan = (stamp, plan)
        return self._plan[1]

    def tool_versions(self) -> dict[str, str]:
        """Versions of the image tools (stat-cached), probed when first needed."""
        return self._tool_versions

    @cached_property
    def _tool_versions(self) -> dict[str, str]:
        from kmi import tools
        from kmi.stages import sbom as sbom_stage

        every = (*sysprep_stage.TOOLS, *sparsify_stage.TOOLS, *sbom_stage.TOOLS)
        return tools.versions(list(dict.fromkeys(every)), self.paths.tool_versions())

    @cached_property
    def targets(self) -> dict[str, Target]:
        return {
            t.name: t
            for flavor in self.catalogue.flavors
            for t in maintained.maintained_targets(flavor, self.lock())
        }

    @cached_property
    def images(self) -> dict[str, list[Target]]:
        """Every maintained image and its targets, in catalogue order."""
        found: dict[str, list[Target]] = {}
        for target in self.targets.values():
            found.setdefault(target.image, []).append(target)
        return found

    def pinned(self, target: Target) -> LockEntry | None:
        """The target's lock entry, if it was found with the catalogue's current settings."""
        return self.plan.pinned(target)

    def discover_unpinned(self, target: Target) -> LockEntry:
        """The lock entry; discovered now over the network when missing, unless the lock is
        frozen (KMI_LOCKED)."""
        entry = self.pinned(target)
        if entry is not None:
            return entry
        lock_file = self.settings.lock_file
        if self.settings.locked:
            why = (
                "is not pinned"
                if target.name not in self.lock().targets
                else "was pinned with other upstream settings"
            )
            raise KmiError(
                f"{target.name} {why} in {lock_file} and KMI_LOCKED is set; "
                f"run: doit discover:{target.flavor.name}, and commit the lock"
            )
        say(f"{target.name}: not pinned in {lock_file}; discovering it")
        from kmi import discover

        rings = discover.KeyringCache()
        try:
            found = discover.discover_target(self.http, rings, target)
        finally:
            rings.close()
        change = discover.record(lock_file, target.name, found)
        say(change or f"{target.name}: unchanged")
        discover.say_unsigned(target, say)
        return found

    @cached_property
    def http(self) -> Http:
        from kmi.net import Http

        return Http(self.settings)

    def hold_build_folder(self) -> None:
        """One doit run per build folder: a second one is refused, not left to corrupt it."""
        if self._build_lock is None:
            build = self.paths.build
            self._build_lock = hold(
                build / ".kmi-run.lock",
                f"{build}: another doit run (pid {{pid}}) is using this build folder; wait for "
                "it to finish, or give this run its own KMI_BUILD_DIR",
            )

    @cached_property
    def stage_cache(self) -> StageCache | None:
        from kmi.stagecache import open_cache

        where = self.settings.stage_cache
        return None if where is None else open_cache(where, self.settings)

    @cached_property
    def host_accel(self) -> str:
        """KVM or TCG for guests of this host's arch, decided (and said) once per run."""
        from kmi import accel

        chosen, why = accel.choose(self.settings.accel, self.paths.accel())
        say(f"acceleration: {chosen} ({why})")
        return chosen

    def accel_for(self, arch: str) -> str:
        """Guests of another arch always run under TCG."""
        from kmi.accel import host_arch

        return self.host_accel if arch == host_arch() else "tcg"

    @cached_property
    def libguestfs_env(self) -> dict[str, str]:
        from kmi import accel

        return accel.libguestfs_env(self.host_accel)

    # --- the stage cache around a stage -----------------------------------------------------

    def restored(
        self, name: str, kind: type[receipts.R], key: str, output: Path
    ) -> receipts.R | None:
        """The stage's output restored from the shared stage cache when it holds the key;
        the receipt is written."""
        cache = self.stage_cache
        if cache is None:
            return None
        details = cache.fetch(kind.STAGE, key, output, say)
        if details is None:
            return None
        entry = cache.where(kind.STAGE, key)
        made = kind.from_json({**details, "key": key, "restored_from": entry})
        if made is None:
            say(f"{name}: stage cache entry {entry} is of another shape; making it here")
            return None
        receipts.write(self.paths.receipt(name, kind.STAGE), made)
        say(f"{name}: {kind.STAGE} restored from the stage cache ({entry})")
        return made

    def finish(self, name: str, made: receipts.Receipt, output: Path) -> None:
        """The receipt, written last; then the output is offered to the shared stage cache."""
        receipts.write(self.paths.receipt(name, made.STAGE), made)
        cache = self.stage_cache
        if cache is not None and cache.store(made.STAGE, made.key, output, made.details(), say):
            where = cache.where(made.STAGE, made.key)
            say(f"{name}: {made.STAGE} added to the stage cache ({where})")

    def results_entry(self, entry: dict[str, Any], section: str = "images") -> None:
        from kmi import results

        results.record(self.paths.results(), self.run_id, entry, section)
