"""The doit glue: task_* generators in pipeline order, and the actions that call stages.

Loading is cheap (YAML, the lock, no network, no hashing, no tool probing) so `doit list`
stays instant. Up-to-date checks compare stage keys with receipts and stat outputs; they
never read a large file. Expected failures become one-line TaskFailed messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from doit.exceptions import InvalidDodoFile, TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from kmi import maintained, oci, results
from kmi.catalogue import Catalogue, Target, load_catalogue
from kmi.errors import KmiError
from kmi.files import hold, write_if_changed
from kmi.keys import is_current, write_receipt
from kmi.lock import Lock, LockEntry, read_lock
from kmi.paths import Paths
from kmi.progress import say
from kmi.settings import Settings, load_settings
from kmi.stages import bake as bake_stage
from kmi.stages import boottest, containerdisk
from kmi.stages import sparsify as sparsify_stage
from kmi.stages import sysprep as sysprep_stage
from kmi.stages.checksum import checksum_key, verify_cached
from kmi.stages.download import download, download_key

Made = TypeVar("Made")

if TYPE_CHECKING:  # heavy (requests, sh): imported when an action needs the network
    from kmi.net import Http
    from kmi.stagecache import StageCache

TaskDict = dict[str, Any]


class Context:
    """What every task generator and action of one doit process shares, loaded lazily."""

    def __init__(self) -> None:
        self._lock: tuple[tuple[int, int], Lock] | None = None
        self._build_lock: IO[str] | None = None
        # one id per doit run (parallel workers are forked from this process and share it)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def paths(self) -> Paths:
        return Paths.of(self.settings)

    @cached_property
    def catalogue(self) -> Catalogue:
        try:
            return load_catalogue(self.settings.catalogue_dir)
        except KmiError as err:
            raise InvalidDodoFile(f"the catalogue has problems:\n{err}") from None

    @cached_property
    def http(self) -> Http:
        from kmi.net import Http

        return Http(self.settings)

    def lock(self) -> Lock:
        """The lock file, re-read only when it changed on disk (other tasks may write it)."""
        path = self.settings.lock_file
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return Lock()
        if self._lock is None or self._lock[0] != stamp:
            self._lock = (stamp, read_lock(path))
        return self._lock[1]

    @cached_property
    def tool_versions(self) -> dict[str, str]:
        """Versions of the image tools (stat-cached), probed when first needed."""
        from kmi import tools

        every = (*sysprep_stage.TOOLS, *sparsify_stage.TOOLS)
        return tools.versions(list(dict.fromkeys(every)), self.paths.tool_versions())

    def versions_of(self, stage_tools: tuple[Any, ...]) -> dict[str, str]:
        return {t.command: self.tool_versions[t.command] for t in stage_tools}

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
        from kmi import stagecache

        where = self.settings.stage_cache
        return stagecache.parse(where, self.settings.registry_insecure) if where else None

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

    @cached_property
    def targets(self) -> dict[str, Target]:
        try:
            lock = self.lock()
        except KmiError as err:
            raise InvalidDodoFile(f"the lock file has problems:\n{err}") from None
        return {
            t.name: t
            for flavor in self.catalogue.flavors
            for t in maintained.maintained_targets(flavor, lock)
        }

    def pinned(self, target: Target) -> LockEntry | None:
        """The target's lock entry, if it was found with the catalogue's current settings."""
        entry = self.lock().targets.get(target.name)
        if entry is None or entry.source != maintained.source_key(target):
            return None
        return entry

    def entry_for(self, target: Target) -> LockEntry:
        """The lock entry, discovered now when missing, unless the lock is frozen."""
        entry = self.pinned(target)
        if entry is not None:
            return entry
        lock_file = self.settings.lock_file
        if self.settings.locked:
            why = (
                "is not pinned"
                if target.name not in self.lock().targets
                else ("was pinned with other upstream settings")
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


CTX = Context()


def guarded(action: Callable[..., None]) -> Callable[..., TaskFailed | None]:
    """Run an action; a KmiError becomes a TaskFailed with its message, no traceback."""

    def run(*args: Any) -> TaskFailed | None:
        try:
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
    known = images_of(CTX.targets) if image else CTX.targets
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


def images_of(targets: dict[str, Target]) -> dict[str, list[Target]]:
    """Every maintained image and its targets, in catalogue order."""
    found: dict[str, list[Target]] = {}
    for target in targets.values():
        found.setdefault(target.image, []).append(target)
    return found


def _per_target(
    stage: str,
    action: Callable[[str], None],
    is_current: Callable[[str], bool],
    needs: str | None = None,
) -> Iterator[TaskDict]:
    """One task per target: `stage:T`, up to date when its receipt holds the current key."""
    for name, target in CTX.targets.items():
        task: TaskDict = {
            "name": name,
            "doc": f"{target.flavor.name} {target.version.version} {target.arch}",
            "actions": [(guarded(action), [name])],
            "targets": [str(CTX.paths.receipt(name, stage))],
            "uptodate": [(is_current, [name])],
            "verbosity": 2,
        }
        if needs is not None:
            task["task_dep"] = [f"{needs}:{name}"]
        yield task
    yield from unknown_requested(stage)


# --- discover ---------------------------------------------------------------------------


def task_discover() -> Iterator[TaskDict]:
    """Refresh the lock: newest signature-verified build of every target (network)."""
    for flavor in CTX.catalogue.flavors:
        yield {
            "name": flavor.name,
            "doc": f"refresh the lock entries of {flavor.name}",
            "actions": [(guarded(run_discover), [flavor.name])],
            "uptodate": [False],
            "verbosity": 2,
        }


def run_discover(flavor_name: str) -> None:
    from kmi import discover

    flavor = CTX.catalogue.flavor(flavor_name)
    failures = discover.discover_flavor(CTX.http, CTX.settings.lock_file, flavor, say)
    if failures:
        raise KmiError("\n".join(failures))


# --- download ---------------------------------------------------------------------------


def _download_state(target: Target) -> tuple[LockEntry, str] | None:
    entry = CTX.pinned(target)
    if entry is None:
        return None
    return entry, download_key(entry, target.flavor.upstream.compression)


def _current(name: str, stage: str, key: str | None, output: Path) -> bool:
    """Up to date: the receipt holds the key computed now, and the output exists."""
    return key is not None and is_current(CTX.paths.receipt(name, stage), key) and output.exists()


def _restored(stage: str, name: str, key: str, output: Path) -> bool:
    """Restore the stage's output from the shared stage cache, if it holds the key."""
    cache = CTX.stage_cache
    if cache is None:
        return False
    details = cache.fetch(stage, key, output, say)
    if details is None:
        return False
    entry = cache.where(stage, key)
    write_receipt(CTX.paths.receipt(name, stage), key, {**details, "restored_from": entry})
    say(f"{name}: {stage} restored from the stage cache ({entry})")
    return True


def _finish(stage: str, name: str, key: str, output: Path, details: dict[str, Any]) -> None:
    """The receipt, written last; then the output is offered to the shared stage cache."""
    write_receipt(CTX.paths.receipt(name, stage), key, details)
    cache = CTX.stage_cache
    if cache is not None and cache.store(stage, key, output, details, say):
        say(f"{name}: {stage} added to the stage cache ({cache.where(stage, key)})")


def _once_more_on_timeout(name: str, log: Path, make: Callable[[], Made]) -> Made:
    """A libguestfs appliance under TCG now and then hangs for good ("Examining the
    guest ..."); a tool run past KMI_GUESTFS_TIMEOUT is stopped with its appliance and the
    stage tried once more from its input. The first try's log is kept beside the log."""
    from kmi.tools import ToolTimeout

    try:
        return make()
    except ToolTimeout as err:
        kept = log.with_name(f"{log.stem}.timed-out{log.suffix}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(log, kept)
        first = str(err).splitlines()[0]
        say(f"{name}: {first}; trying once more (the first try's log: {kept})")
        return make()


def download_is_current(name: str) -> bool:
    target = CTX.targets[name]
    state = _download_state(target)
    if state is None:
        return False
    entry, key = state
    image = CTX.paths.image(entry.digest, target.flavor.upstream.compression)
    return _current(name, "download", key, image) or sysprep_is_current(name)


def _image_check(target: Target, entry: LockEntry) -> Callable[[Path], str] | None:
    """For upstreams that sign the image itself: a check run on the downloaded bytes."""
    if not entry.image_signature_url:
        return None

    def check(path: Path) -> str:
        from kmi import discover

        rings = discover.KeyringCache()
        try:
            signature = CTX.http.content(entry.image_signature_url)
            return rings.detached(target, path, signature)
        finally:
            rings.close()

    return check


def run_download(name: str) -> None:
    from kmi import discover

    target = CTX.targets[name]
    discover.refuse_unsigned(CTX.http, target)
    entry = CTX.entry_for(target)
    compression = target.flavor.upstream.compression
    fetched = download(
        CTX.http,
        CTX.paths,
        name,
        entry,
        compression,
        CTX.settings.progress,
        _image_check(target, entry),
    )
    how = f"fetched {fetched.transferred} bytes" if fetched.transferred else "in the cache"
    say(f"{name}: {entry.release} {how}, {entry.digest[:19]}… verified")
    write_receipt(
        CTX.paths.receipt(name, "download"),
        download_key(entry, compression),
        {
            "target": name,
            "url": entry.url,
            "digest": entry.digest,
            "release": entry.release,
            "image": str(fetched.image),
            "signed_by": fetched.image_signed_by or entry.signed_by,
        },
    )


def task_download() -> Iterator[TaskDict]:
    """Fetch each target's pinned upstream image, verified while it streams, into cache/."""
    yield from _per_target("download", run_download, download_is_current)


# --- checksum ---------------------------------------------------------------------------


def _checksum_state(target: Target) -> tuple[LockEntry, str] | None:
    state = _download_state(target)
    if state is None:
        return None
    entry, dkey = state
    return entry, checksum_key(entry, dkey)


def checksum_is_current(name: str) -> bool:
    state = _checksum_state(CTX.targets[name])
    if state is None:
        return False
    return is_current(CTX.paths.receipt(name, "checksum"), state[1]) or sysprep_is_current(name)


def run_checksum(name: str) -> None:
    target = CTX.targets[name]
    state = _download_state(target)
    if state is None:
        raise KmiError(f"{name}: not pinned in the lock; run: doit download:{name}")
    entry, dkey = state
    checked = verify_cached(CTX.paths, name, entry, target.flavor.upstream.compression)
    say(f"{name}: {checked} cached bytes match {entry.digest[:19]}…")
    write_receipt(
        CTX.paths.receipt(name, "checksum"),
        checksum_key(entry, dkey),
        {
            "target": name,
            "digest": entry.digest,
            "bytes": checked,
        },
    )


def task_checksum() -> Iterator[TaskDict]:
    """Prove each target's cached bytes still match the digest pinned in the lock."""
    yield from _per_target("checksum", run_checksum, checksum_is_current, needs="download")


# --- sysprep ----------------------------------------------------------------------------


def _sysprep_key(target: Target) -> str | None:
    """None when an input is not ready (the action says why). A build this host cannot run
    (guest programs of another arch) gets the key of a build on its own arch: what a
    machine of that arch adds to the shared stage cache, so this one can restore it."""
    from kmi.accel import host_arch

    state = _checksum_state(target)
    if state is None:
        return None
    host = host_arch()
    try:
        sysprep_stage.skips_guest_steps(target, host)
    except KmiError:
        host = str(target.arch)
    try:
        versions = CTX.versions_of(sysprep_stage.TOOLS)
        return sysprep_stage.sysprep_key(target, state[1], versions, host)
    except KmiError:
        return None


def sysprep_is_current(name: str) -> bool:
    """Current, or not needed: a stage whose output only feeds a stage that is current
    (here: sparsify's final disk) need not be made again, nor its inputs fetched. A build
    folder restored without the intermediate files (or without the download cache) needs
    no upstream file and no libguestfs run as long as its final disk is current."""
    key = _sysprep_key(CTX.targets[name])
    return _current(name, "sysprep", key, CTX.paths.sysprep_image(name)) or sparsify_is_current(
        name
    )


def run_sysprep(name: str) -> None:
    from kmi.accel import host_arch

    target = CTX.targets[name]
    state = _checksum_state(target)
    if state is None:
        raise KmiError(f"{name}: not downloaded and verified; run: doit checksum:{name}")
    entry = state[0]
    key = _sysprep_key(target)
    assert key is not None
    source = CTX.paths.image(entry.digest, target.flavor.upstream.compression)
    output = CTX.paths.sysprep_image(name)
    if _restored("sysprep", name, key, output):
        return
    host = host_arch()
    try:
        sysprep_stage.skips_guest_steps(target, host)  # the arch error, before any work
    except KmiError as err:
        cache = CTX.stage_cache
        if cache is None:
            raise
        raise KmiError(f"{err}; the stage cache has no {cache.where('sysprep', key)}") from None
    log = CTX.paths.log(name, "sysprep")
    say(f"{name}: customizing (log: {log})")
    limit = CTX.settings.guestfs_timeout
    made = _once_more_on_timeout(
        name,
        log,
        lambda: sysprep_stage.sysprep(target, source, output, log, host, CTX.libguestfs_env, limit),
    )
    if made["skipped_guest_steps"]:
        say(f"{name}: guest steps left out as the catalogue says: {made['skipped_guest_steps']}")
    say(f"{name}: upstream {source.stat().st_size} bytes -> sysprep {made['size']} bytes")
    _finish("sysprep", name, key, output, {"target": name, **made})


def task_sysprep() -> Iterator[TaskDict]:
    """Customize each image: packages, commands, files, SELinux relabel, then sysprep."""
    yield from _per_target("sysprep", run_sysprep, sysprep_is_current, needs="checksum")


# --- sparsify ---------------------------------------------------------------------------


def _sparsify_key(target: Target) -> str | None:
    skey = _sysprep_key(target)
    if skey is None:
        return None
    return sparsify_stage.sparsify_key(skey, CTX.versions_of(sparsify_stage.TOOLS))


def sparsify_is_current(name: str) -> bool:
    key = _sparsify_key(CTX.targets[name])
    return _current(name, "sparsify", key, CTX.paths.disk(name))


def run_sparsify(name: str) -> None:
    key = _sparsify_key(CTX.targets[name])
    if key is None:
        raise KmiError(f"{name}: no customized image; run: doit sysprep:{name}")
    if _restored("sparsify", name, key, CTX.paths.disk(name)):
        return
    log = CTX.paths.log(name, "sparsify")
    limit = CTX.settings.guestfs_timeout
    made = _once_more_on_timeout(
        name,
        log,
        lambda: sparsify_stage.sparsify(
            CTX.paths.sysprep_image(name), CTX.paths.disk(name), log, CTX.libguestfs_env, limit
        ),
    )
    say(
        f"{name}: sysprep {made['sysprep_size']} bytes -> final {made['final_size']} bytes "
        f"({CTX.paths.disk(name)})"
    )
    _finish("sparsify", name, key, CTX.paths.disk(name), {"target": name, **made})


def task_sparsify() -> Iterator[TaskDict]:
    """Make each final disk.qcow2: unused space zeroed, compressed, checked, compared."""
    yield from _per_target("sparsify", run_sparsify, sparsify_is_current, needs="sysprep")


# --- build (the per-arch containerdisk) ---------------------------------------------------


def build_state(target: Target) -> tuple[str, oci.ImageSpec] | None:
    """The build key and image spec, or None when the final disk's inputs are not ready."""
    disk_key = _sparsify_key(target)
    entry = CTX.pinned(target)
    if disk_key is None or entry is None:
        return None
    settings = CTX.settings
    spec = containerdisk.image_spec(
        target, entry, disk_key, settings.source_date_epoch, settings.source_url
    )
    return containerdisk.build_key(disk_key, spec, settings.layer_compression), spec


def registry_setting() -> str | None:
    """`doit publish registry=HOST/PATH` wins over KMI_REGISTRY."""
    from doit import get_var

    given = get_var("registry", None)
    return (given or "").strip() or CTX.settings.registry


def buildx_destination(target: Target) -> tuple[str, bool] | None:
    """Where the buildx engine pushes the target (`host/repository`) and whether over plain
    HTTP; None without a registry."""
    from kmi.registry import Registry

    where = registry_setting()
    if where is None:
        return None
    registry = Registry.parse(where, CTX.settings.registry_insecure)
    return f"{registry.host}/{registry.repository(target.flavor.name)}", registry.scheme == "http"


def engine_build_key(target: Target) -> str | None:
    """The build key of the engine in use (KMI_ENGINE); None when its inputs are not ready.
    The buildx engine's output is the pushed per-arch image, so its key names where."""
    state = build_state(target)
    if state is None or CTX.settings.engine != "buildx":
        return None if state is None else state[0]
    destination = buildx_destination(target)
    if destination is None:
        return None
    return bake_stage.build_key(state[0], destination[0])


def build_is_current(name: str) -> bool:
    try:
        key = engine_build_key(CTX.targets[name])
    except KmiError:
        return False  # the action says why
    if CTX.settings.engine == "buildx":
        return key is not None and is_current(CTX.paths.receipt(name, "build"), key)
    return _current(name, "build", key, CTX.paths.layout(name) / "index.json")


def run_build(name: str) -> None:
    from kmi import discover
    from kmi.progress import Progress

    discover.refuse_unsigned(CTX.http, CTX.targets[name])  # a disk from a cache or another job
    if CTX.settings.engine == "buildx":
        run_build_buildx(name)
        return
    state = build_state(CTX.targets[name])
    if state is None:
        raise KmiError(f"{name}: no final disk; run: doit sparsify:{name}")
    key, spec = state
    disk, layout = CTX.paths.disk(name), CTX.paths.layout(name)
    if _restored("build", name, key, layout):
        return
    compression = cast(oci.Compression, CTX.settings.layer_compression)
    meter = Progress(f"{name}: pack", disk.stat().st_size, CTX.settings.progress)
    made = containerdisk.containerize(disk, layout, spec, compression, meter.advance)
    meter.finish()
    say(f"{name}: containerdisk {made['manifest'][:19]}… in {layout}")
    _finish("build", name, key, layout, {"target": name, **made})


def check_buildx(what: str) -> None:
    """A one-line error when KMI_ENGINE=buildx cannot run here."""
    missing = bake_stage.missing_buildx()
    if missing:
        raise KmiError(
            f"{what}: KMI_ENGINE=buildx, but {missing}; install docker buildx, or unset "
            "KMI_ENGINE to use the native engine"
        )


def run_build_buildx(name: str) -> None:
    """KMI_ENGINE=buildx: BuildKit packs the final disk and pushes it by digest; the
    receipt holds the digest, which the publish job (maybe on another machine) indexes."""
    target = CTX.targets[name]
    state = build_state(target)
    if state is None:
        raise KmiError(f"{name}: no final disk; run: doit sparsify:{name}")
    destination = buildx_destination(target)
    if destination is None:
        raise KmiError(
            f"{name}: KMI_ENGINE=buildx pushes as it builds; set KMI_REGISTRY or pass "
            "registry=HOST/PATH"
        )
    check_buildx(name)
    repository, insecure = destination
    folder = CTX.paths.build / name
    context = CTX.paths.bake_context(name)
    bake_stage.link_context(CTX.paths.disk(name), context)
    bake_file = folder / "docker-bake.json"
    target_definition = bake_stage.bake_target(state[1], context, repository, insecure)
    write_if_changed(bake_file, bake_stage.definition(name, {name: target_definition}))
    say(f"{name}: docker buildx bake {name} ({bake_file})")
    digest = bake_stage.bake(bake_file, [name], folder / "bake-metadata.json")[name]
    say(f"{name}: pushed {repository}@{digest} with buildx")
    details = {"target": name, "engine": "buildx", "repository": repository, "digest": digest}
    write_receipt(
        CTX.paths.receipt(name, "build"), bake_stage.build_key(state[0], repository), details
    )


def task_build() -> Iterator[TaskDict]:
    """Pack each final disk as its per-arch containerdisk (an OCI layout, no daemon; with
    KMI_ENGINE=buildx, BuildKit pushes it by digest)."""
    yield from _per_target("build", run_build, build_is_current, needs="sparsify")


# --- test (the boot test) ----------------------------------------------------------------


def _test_key(target: Target) -> str | None:
    disk_key = _sparsify_key(target)
    return None if disk_key is None else boottest.boot_test_key(target, disk_key)


def test_passed(target: Target) -> bool:
    """Whether the target's current final disk passed its boot test."""
    key = _test_key(target)
    return key is not None and is_current(CTX.paths.receipt(target.name, "test"), key)


def test_is_current(name: str) -> bool:
    return test_passed(CTX.targets[name]) and CTX.paths.disk(name).exists()


def run_test(name: str) -> None:
    target = CTX.targets[name]
    key = _test_key(target)
    disk = CTX.paths.disk(name)
    if key is None or not disk.exists():
        raise KmiError(f"{name}: no final disk; run: doit sparsify:{name}")
    arch = str(target.arch)
    options = boottest.Options(
        CTX.accel_for(arch), CTX.settings.test_timeout(arch), CTX.settings.test_memory
    )
    logs = CTX.paths.log(name, "test").parent
    report = boottest.boot_test(target, disk, logs, options, say)
    boottest.write_results(report, logs / "test-checks.json")
    results.record(CTX.paths.results(), CTX.run_id, report.to_json(), "tests")
    if report.failed is not None:
        raise KmiError(boottest.failure_message(report, logs / "test-console.log"))
    say(
        f"{name}: passed boot, cloud-init, agent and ssh in {report.seconds:.0f} s "
        f"({options.accel})"
    )
    write_receipt(CTX.paths.receipt(name, "test"), key, report.to_json())


def task_test() -> Iterator[TaskDict]:
    """Boot each final disk in QEMU: cloud-init, guest agent and SSH checks."""
    yield from _per_target("test", run_test, test_is_current, needs="sparsify")


# --- reporting --------------------------------------------------------------------------


class KmiReporter(ConsoleReporter):  # type: ignore[misc]
    """doit's console reporter, with failures as `FAILED task: message` and a summary.
    Only `doit run` makes one: it takes the build folder's lock (list and info do not)."""

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        try:
            CTX.hold_build_folder()
        except KmiError as err:
            self.write(f"ERROR: {err}\n")
            raise SystemExit(3) from None
        super().initialize(tasks, selected_tasks)

    def _write_failure(self, result: dict[str, Any], write_exception: bool = True) -> None:
        fail, task = result["exception"], result["task"]
        if isinstance(fail, TaskFailed):
            self.write(f"FAILED {task.name}: {fail.message}\n")
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
        if self.runtime_errors:
            self.write("Execution aborted.\n" + "\n".join(self.runtime_errors) + "\n")


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


def doit_config() -> dict[str, Any]:
    """DOIT_CONFIG for dodo.py: state db in the cache, keep going past failures."""
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
