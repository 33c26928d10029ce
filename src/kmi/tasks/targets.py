"""The per-target task families, in pipeline order: discover (per flavor), download,
checksum, sysprep, sparsify, build, test. Each action takes its keys from the plan and calls
a stage; whether a task is up to date is the plan's one rule (kmi.plan.Plan.needed)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from kmi import receipts, tools
from kmi.catalogue import Target
from kmi.errors import KmiError
from kmi.progress import say
from kmi.stages import boottest, emulated
from kmi.stages import sparsify as sparsify_stage
from kmi.stages import sysprep as sysprep_stage
from kmi.stages.checksum import verify_cached
from kmi.stages.download import download
from kmi.tasks.common import CTX, TaskDict, guarded, loaded, per_target

Made = TypeVar("Made")


# --- discover ---------------------------------------------------------------------------


def task_discover() -> Iterator[TaskDict]:
    """Refresh the lock: newest signature-verified build of every target (network)."""
    for flavor in loaded().catalogue.flavors:
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


# --- download and checksum ------------------------------------------------------------------


def _image_check(target: Target, signature_url: str) -> Callable[[Path], str] | None:
    """For upstreams that sign the image itself: a check run on the downloaded bytes."""
    if not signature_url:
        return None

    def check(path: Path) -> str:
        from kmi import discover

        rings = discover.KeyringCache()
        try:
            return rings.detached(target, path, CTX.http.content(signature_url))
        finally:
            rings.close()

    return check


def run_download(target: Target) -> None:
    from kmi import discover

    discover.refuse_unsigned(CTX.http, target)
    entry = CTX.discover_unpinned(target)  # network, when the lock lacks the target
    keys = CTX.plan.keys(target)
    assert keys is not None  # pinned now
    name, compression = target.name, target.flavor.upstream.compression
    check = _image_check(target, entry.image_signature_url)
    fetched = download(CTX.http, CTX.paths, name, entry, compression, CTX.settings.progress, check)
    how = f"fetched {fetched.transferred} bytes" if fetched.transferred else "in the cache"
    say(f"{name}: {entry.release} {how}, {entry.digest[:19]}… verified")
    made = receipts.Download(
        key=keys.download,
        target=name,
        url=entry.url,
        digest=entry.digest,
        release=entry.release,
        image=str(fetched.image),
        signed_by=fetched.image_signed_by or entry.signed_by,
    )
    receipts.write(CTX.paths.receipt(name, "download"), made)


def task_download() -> Iterator[TaskDict]:
    """Fetch each target's pinned upstream image, verified while it streams, into cache/."""
    yield from per_target("download", run_download)


def run_checksum(target: Target) -> None:
    name = target.name
    keys = CTX.plan.keys(target)
    if keys is None:
        raise KmiError(f"{name}: not pinned in the lock; run: doit download:{name}")
    compression = target.flavor.upstream.compression
    checked = verify_cached(CTX.paths, name, keys.entry, compression)
    say(f"{name}: {checked} cached bytes match {keys.entry.digest[:19]}…")
    made = receipts.Checksum(
        key=keys.checksum, target=name, digest=keys.entry.digest, bytes=checked
    )
    receipts.write(CTX.paths.receipt(name, "checksum"), made)


def task_checksum() -> Iterator[TaskDict]:
    """Prove each target's cached bytes still match the digest pinned in the lock."""
    yield from per_target("checksum", run_checksum, needs=("download",))


# --- sysprep and sparsify -------------------------------------------------------------------


def once_more_on_timeout(name: str, log: Path, make: Callable[[], Made]) -> Made:
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


def run_sysprep(target: Target) -> None:
    name = target.name
    keys = CTX.plan.keys(target)
    if keys is None:
        raise KmiError(f"{name}: not downloaded and verified; run: doit checksum:{name}")
    if keys.sysprep is None:
        CTX.tool_versions()  # raises, naming the missing tool
        raise KmiError(f"{name}: cannot key the sysprep stage; run: doit checksum:{name}")
    source = CTX.paths.image(keys.entry.digest, target.flavor.upstream.compression)
    output = CTX.paths.sysprep_image(name)
    if CTX.restored(name, receipts.Sysprep, keys.sysprep, output):
        return
    try:  # the way it customizes, or why it cannot here: before any work
        way, why = sysprep_stage.way_to_customize(target, CTX.plan.host, CTX.settings.customize)
    except KmiError as err:
        cache = CTX.stage_cache
        if cache is None:
            raise
        missing = cache.where("sysprep", keys.sysprep)
        raise KmiError(f"{err}; the stage cache has no {missing}") from None
    log = CTX.paths.log(name, "sysprep")
    say(f"{name}: customizing, {way}: {why} (log: {log})")
    limit, env = CTX.settings.guestfs_timeout, CTX.libguestfs_env
    boot = None
    if way == "emulated":
        console = CTX.paths.log(name, "sysprep-console")
        boot = emulated.Boot(CTX.accel_for(str(target.arch)), limit, console, say)
    skipped, size = once_more_on_timeout(
        name, log, lambda: sysprep_stage.sysprep(target, source, output, log, env, limit, boot)
    )
    if skipped:
        say(f"{name}: guest steps left out as the catalogue says: {skipped}")
    say(f"{name}: upstream {source.stat().st_size} bytes -> sysprep {size} bytes")
    done = receipts.Sysprep(
        key=keys.sysprep,
        target=name,
        size=size,
        skipped_guest_steps=skipped,
        customized=way,
        built=_made_by(sysprep_stage.TOOLS),
    )
    CTX.finish(name, done, output)


def task_sysprep() -> Iterator[TaskDict]:
    """Customize each image: packages, commands, files, SELinux relabel, then sysprep."""

    def outputs(target: Target) -> list[Path]:
        logs = [CTX.paths.log(target.name, log) for log in ("sysprep", "sysprep-console")]
        return [CTX.paths.sysprep_image(target.name), *logs]

    yield from per_target("sysprep", run_sysprep, needs=("checksum",), clean=outputs)


def run_sparsify(target: Target) -> None:
    name = target.name
    key = CTX.plan.key(target, "sparsify")
    if key is None:
        raise KmiError(f"{name}: no customized image; run: doit sysprep:{name}")
    disk = CTX.paths.disk(name)
    if CTX.restored(name, receipts.Sparsify, key, disk):
        return
    log = CTX.paths.log(name, "sparsify")
    limit, env = CTX.settings.guestfs_timeout, CTX.libguestfs_env
    source = CTX.paths.sysprep_image(name)
    made = once_more_on_timeout(
        name, log, lambda: sparsify_stage.sparsify(source, disk, log, env, limit)
    )
    say(
        f"{name}: sysprep {made['sysprep_size']} bytes -> final {made['final_size']} bytes ({disk})"
    )
    customized = receipts.read(CTX.paths.receipt(name, "sysprep"), receipts.Sysprep)
    done = receipts.Sparsify(
        key=key,
        target=name,
        sysprep_size=made["sysprep_size"],
        final_size=made["final_size"],
        customized=customized.customized if customized else "native",
        built={**(customized.built if customized else {}), **_made_by(sparsify_stage.TOOLS)},
    )
    CTX.finish(name, done, disk)


def _made_by(stage_tools: tuple[tools.Tool, ...]) -> dict[str, str]:
    """This machine, this kmi and the versions of the stage's tools (for the provenance)."""
    from kmi import provenance

    return provenance.made_by(CTX.plan.host, CTX.plan.versions(stage_tools))


def task_sparsify() -> Iterator[TaskDict]:
    """Make each final disk.qcow2: unused space zeroed, compressed, checked, compared."""

    def outputs(target: Target) -> list[Path]:
        return [CTX.paths.disk(target.name), CTX.paths.log(target.name, "sparsify")]

    yield from per_target("sparsify", run_sparsify, needs=("sysprep",), clean=outputs)


# --- sbom (the final disk's installed packages) --------------------------------------------


def run_sbom(target: Target) -> None:
    from kmi.stages import sbom as sbom_stage

    name = target.name
    keys = CTX.plan.keys(target)
    disk = CTX.paths.disk(name)
    if keys is None or keys.sbom is None or not disk.exists():
        raise KmiError(f"{name}: no final disk; run: doit sparsify:{name}")
    if keys.spec is None:
        raise KmiError(f"{name}: cannot date its SBOM (no image spec); run: doit build:{name}")
    log = CTX.paths.log(name, "sbom")
    made = sbom_stage.make_sbom(
        target,
        disk,
        CTX.paths.sbom(name),
        keys.sbom,
        keys.spec.created,
        log,
        CTX.libguestfs_env,
        CTX.settings.guestfs_timeout,
    )
    say(
        f"{name}: SBOM of {made.packages} installed packages ({made.licensed} with an SPDX "
        f"licence) -> {CTX.paths.sbom(name)}"
    )
    done = receipts.Sbom(key=keys.sbom, target=name, packages=made.packages, licensed=made.licensed)
    receipts.write(CTX.paths.receipt(name, "sbom"), done)


def task_sbom() -> Iterator[TaskDict]:
    """List each final disk's installed packages as an SPDX 2.3 document (sbom.spdx.json)."""

    def outputs(target: Target) -> list[Path]:
        return [CTX.paths.sbom(target.name), CTX.paths.log(target.name, "sbom")]

    yield from per_target("sbom", run_sbom, needs=("sparsify",), clean=outputs)


# --- build (the per-arch containerdisk) ---------------------------------------------------


def run_build(target: Target) -> None:
    from kmi import discover

    discover.refuse_unsigned(CTX.http, target)  # a disk from a cache or another job
    CTX.engine.build(target)


def task_build() -> Iterator[TaskDict]:
    """Pack each final disk as its per-arch containerdisk (an OCI layout, no daemon; with
    KMI_ENGINE=buildx, BuildKit pushes it by digest)."""

    def outputs(target: Target) -> list[Path]:
        name = target.name
        build = CTX.paths.build / name
        return [
            CTX.paths.layout(name),
            CTX.paths.bake_context(name),
            build / "docker-bake.json",
            build / "bake-metadata.json",
        ]

    yield from per_target("build", run_build, needs=("sparsify",), clean=outputs)


# --- test (the boot test) ----------------------------------------------------------------


def run_test(target: Target) -> None:
    name = target.name
    key = CTX.plan.key(target, "test")
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
    CTX.results_entry(report.to_json(), "tests")
    if report.failed is not None:
        raise KmiError(boottest.failure_message(report, logs / "test-console.log"))
    say(
        f"{name}: passed boot, cloud-init, agent and ssh in {report.seconds:.0f} s "
        f"({options.accel})"
    )
    extra = [report.checks[c] for c in boottest.EXTRA_CHECKS]
    say(
        f"{name}: for the support tiers: "
        + "; ".join(f"{c.name} {'ok' if c.passed else 'FAILED'} ({c.detail})" for c in extra)
    )
    made = receipts.Test.from_json({**report.to_json(), "key": key})
    assert made is not None  # the report's own shape
    receipts.write(CTX.paths.receipt(name, "test"), made)


def task_test() -> Iterator[TaskDict]:
    """Boot each final disk in QEMU: cloud-init, guest agent and SSH checks."""

    def outputs(target: Target) -> list[Path]:
        logs = CTX.paths.log(target.name, "test").parent
        return [logs / "test-checks.json", logs / "test-console.log"]

    yield from per_target("test", run_test, needs=("sparsify",), clean=outputs)


# --- push (the per-arch image by digest, for a publish job elsewhere) -----------------------


def run_push(target: Target) -> None:
    from kmi import discover

    discover.refuse_unsigned(CTX.http, target)
    CTX.engine.push(target)


def task_push() -> Iterator[TaskDict]:
    """Push each per-arch image to KMI_REGISTRY by digest, no tag (after its boot test where
    the flavor requires one), for `publish` with KMI_PUBLISH_FROM=pushed to index."""
    from kmi.publishing import gated

    for task in per_target("push", run_push, needs=("build",)):
        target = CTX.targets.get(task["name"])
        if target is not None and gated(target.flavor, CTX.settings):
            task["task_dep"] = [*task["task_dep"], f"test:{target.name}"]
        yield task


# --- verify (the tiers' criteria on the built image, without booting it) -------------------


def run_verify(target: Target) -> None:
    from kmi import criteria, oci

    name = target.name
    keys = CTX.plan.keys(target)
    if keys is None or keys.verify is None or keys.spec is None:
        raise KmiError(f"{name}: no built image to verify; run: doit build:{name}")
    disk, sbom = CTX.paths.disk(name), CTX.paths.sbom(name)
    if not disk.exists():
        raise KmiError(f"{name}: no final disk; run: doit sparsify:{name}")
    made = receipts.read(CTX.paths.receipt(name, "build"), receipts.Build)
    annotations = dict(keys.spec.annotations)  # what buildx bakes into the image
    layer_size = disk.stat().st_size
    if made is not None:  # the native engine's layout: read what it holds
        manifest = oci.read_json(Path(made.layout), made.manifest)
        annotations = dict(manifest.get("annotations") or {})
        layer_size = made.layer_size
    disk_made = receipts.read(CTX.paths.receipt(name, "sparsify"), receipts.Sparsify)
    # the stage keys chain from the checksum stage, keyed by the lock's digest: a current
    # final disk was made from bytes that matched it
    checked = keys.entry.digest if CTX.plan.recorded(target, "sparsify") else None
    commit = disk_made.built.get("kmi_commit", "") if disk_made else ""
    log = CTX.paths.log(name, "verify")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    results = {
        "metadata": criteria.metadata(annotations, keys.entry, checked, commit),
        "size": criteria.size(layer_size, CTX.settings.layer_limit),
        "qcow2": criteria.qcow2(disk, log),
        "packages": criteria.packages(target.flavor.test.packages, sbom),
    }
    for criterion, found in results.items():
        mark = "passed" if found.passed else "FAILED"
        say(f"{name}: {criterion}: {mark}: {found.detail}")
    as_json = {k: v.to_json() for k, v in results.items()}
    receipts.write(
        CTX.paths.receipt(name, "verify"),
        receipts.Verify(key=keys.verify, target=name, results=as_json),
    )
    CTX.results_entry({"target": name, **as_json}, "criteria")


def task_verify() -> Iterator[TaskDict]:
    """Check the tiers' criteria that need no boot on each built image (metadata, size, qcow2,
    packages); publish holds a stable or proposed flavor to them."""
    yield from per_target("verify", run_verify, needs=("build", "sbom"))
