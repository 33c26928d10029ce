"""The doit glue of multi-arch images (I = <flavor>-<version>): manifest:I, bake:I, publish:I,
docs:I."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kmi import docs, maintained, releases, results
from kmi.accel import host_arch
from kmi.catalogue import Flavor, Target
from kmi.errors import KmiError
from kmi.files import write_if_changed
from kmi.keys import is_current, read_receipt, receipt_field, write_receipt
from kmi.progress import say
from kmi.stages import bake as bake_stage
from kmi.stages import containerdisk
from kmi.stages import publish as publish_stage
from kmi.stages.sysprep import skips_guest_steps
from kmi.tasks import (
    CTX,
    TaskDict,
    build_state,
    buildx_destination,
    check_buildx,
    engine_build_key,
    guarded,
    images_of,
    registry_setting,
    sparsify_is_current,
    test_passed,
    unknown_requested,
)


def images() -> dict[str, list[Target]]:
    """Every maintained image and its targets, in catalogue order."""
    return images_of(CTX.targets)


def buildable_here(target: Target) -> bool:
    try:
        skips_guest_steps(target, host_arch())
    except KmiError:
        return False
    return True


def _current_builds(targets: list[Target]) -> dict[str, str]:
    """arch -> build key, for the targets whose containerdisk is built and current."""
    current = {}
    for target in targets:
        try:
            key = engine_build_key(target)
        except KmiError:
            continue
        receipt = CTX.paths.receipt(target.name, "build")
        if key is not None and is_current(receipt, key):
            current[str(target.arch)] = key
    return current


# --- manifest ---------------------------------------------------------------------------


def _manifest_state(image: str) -> tuple[str, list[Target], dict[str, str]] | None:
    """The index key, the targets it covers and its annotations; None if not ready."""
    targets = images()[image]
    builds = _current_builds(targets)
    if CTX.settings.index_arches == "all" and len(builds) < len(targets):
        return None
    chosen = [t for t in targets if str(t.arch) in builds]
    if not chosen:
        return None
    annotations = index_annotations(chosen)
    return containerdisk.index_key(builds, annotations, image), chosen, annotations


def index_annotations(chosen: list[Target]) -> dict[str, str]:
    """The index's annotations over `chosen` (pinned targets): the newest release of them."""
    first = chosen[0]
    entry = CTX.pinned(first)
    assert entry is not None  # a current disk or build implies a pinned entry
    created, _ = containerdisk.created_at(entry, CTX.settings.source_date_epoch)
    release = releases.newest((CTX.pinned(t) or entry).release for t in chosen)
    return containerdisk.image_annotations(
        first.flavor, first.version.version, release, created, CTX.settings.source_url
    )


def manifest_is_current(image: str) -> bool:
    try:
        state = _manifest_state(image)
    except KmiError:
        return False
    layout = CTX.paths.image_layout(image)
    receipt = CTX.paths.image_receipt(image, "manifest")
    return state is not None and is_current(receipt, state[0]) and layout.exists()


def run_manifest(image: str) -> None:
    if CTX.settings.engine == "buildx":
        raise KmiError(
            f"{image}: with KMI_ENGINE=buildx the index is made in the registry by "
            f"`docker buildx imagetools create`; run: doit publish:{image}"
        )
    state = _manifest_state(image)
    targets = images()[image]
    if state is None:
        missing = [t.name for t in targets if str(t.arch) not in _current_builds(targets)]
        raise KmiError(
            f"{image}: no current containerdisk for {', '.join(missing)}; run doit build "
            "for them, or set KMI_INDEX_ARCHES=built to index only what was built"
        )
    key, chosen, annotations = state
    layouts = [CTX.paths.layout(t.name) for t in chosen]
    digest = containerdisk.assemble(CTX.paths.image_layout(image), layouts, annotations, image)
    arches = [str(t.arch) for t in chosen]
    left_out = [str(t.arch) for t in targets if t not in chosen]
    note = f" (left out, not built: {', '.join(left_out)})" if left_out else ""
    say(f"{image}: index {digest[:19]}… over {', '.join(arches)}{note}")
    details = {"image": image, "digest": digest, "arches": arches, "annotations": annotations}
    write_receipt(CTX.paths.image_receipt(image, "manifest"), key, details)


def task_manifest() -> Iterator[TaskDict]:
    """Assemble each image's multi-arch OCI index over its per-arch containerdisks."""
    every = CTX.settings.index_arches == "all"
    for image, targets in images().items():
        needed = [t for t in targets if every or buildable_here(t)]
        yield {
            "name": image,
            "doc": f"{image}: index over {', '.join(str(t.arch) for t in targets)}",
            "actions": [(guarded(run_manifest), [image])],
            "targets": [str(CTX.paths.image_receipt(image, "manifest"))],
            "uptodate": [(manifest_is_current, [image])],
            "task_dep": [f"build:{t.name}" for t in needed],
            "verbosity": 2,
        }
    yield from unknown_requested("manifest", image=True)


# --- bake (the buildx engine's definition) ------------------------------------------------


def bake_file_of(image: str) -> Path:
    return CTX.paths.image_dir(image) / "docker-bake.json"


def render_bake(image: str) -> tuple[str, list[Target]]:
    """The image's bake file (every arch with a current final disk, for use by hand or by
    CI jobs of their own) and the targets it covers. `doit build` with KMI_ENGINE=buildx
    bakes each target from a file of its own, with the same target definition."""
    targets = images()[image]
    ready = [t for t in targets if sparsify_is_current(t.name)]
    if CTX.settings.index_arches == "all" and len(ready) < len(targets):
        missing = [t.name for t in targets if t not in ready]
        raise KmiError(
            f"{image}: no current final disk for {', '.join(missing)}; run doit sparsify "
            "for them, or set KMI_INDEX_ARCHES=built to bake only what was built"
        )
    if not ready:
        raise KmiError(f"{image}: no current final disk; run: doit sparsify")
    found = {}
    for target in ready:
        state = build_state(target)
        assert state is not None  # a current final disk implies a pinned entry
        context = CTX.paths.bake_context(target.name)
        repository, insecure = buildx_destination(target) or (
            repository_of(target.flavor.name),
            False,
        )
        found[target.name] = bake_stage.bake_target(state[1], context, repository, insecure)
    return bake_stage.definition(image, found), ready


def bake_is_current(image: str) -> bool:
    try:
        text, ready = render_bake(image)
        if bake_file_of(image).read_text(encoding="utf-8") != text:
            return False
    except (OSError, KmiError):
        return False
    return all((CTX.paths.bake_context(t.name) / bake_stage.DISK_NAME).exists() for t in ready)


def run_bake(image: str) -> None:
    text, ready = render_bake(image)
    for target in ready:
        bake_stage.link_context(CTX.paths.disk(target.name), CTX.paths.bake_context(target.name))
    path = bake_file_of(image)
    write_if_changed(path, text)
    say(f"{image}: bake definition over {', '.join(str(t.arch) for t in ready)} in {path}")


def task_bake() -> Iterator[TaskDict]:
    """Write each image's docker-bake.json: the buildx engine's per-arch containerdisks."""
    every = CTX.settings.index_arches == "all"
    for image, targets in images().items():
        needed = [t for t in targets if every or buildable_here(t)]
        yield {
            "name": image,
            "doc": f"{image}: docker-bake.json over {', '.join(str(t.arch) for t in targets)}",
            "actions": [(guarded(run_bake), [image])],
            "targets": [str(bake_file_of(image))],
            "uptodate": [(bake_is_current, [image])],
            "task_dep": [f"sparsify:{t.name}" for t in needed],
            "verbosity": 2,
        }
    yield from unknown_requested("bake", image=True)


# --- publish ----------------------------------------------------------------------------


def moving_tags(image: str) -> tuple[str, ...]:
    """The tags every new build of the image moves: its version, and maybe `latest`."""
    targets = images()[image]
    flavor, version = targets[0].flavor, targets[0].version.version
    tags = [version]
    if maintained.latest_version(flavor, CTX.lock()) == version:
        tags.append("latest")
    return tuple(releases.tag_of(t) for t in tags)


def plan_of(
    image: str, repository: str, annotations: dict[str, str] | None = None
) -> publish_stage.Plan:
    """What to publish; the immutable tag is the index's version annotation (the manifest
    task's, unless `annotations` are given)."""
    version = images()[image][0].version.version
    if annotations is None:
        found = receipt_field(CTX.paths.image_receipt(image, "manifest"), "annotations", dict)
        annotations = found or {}
    release = str(annotations.get("org.opencontainers.image.version", version))
    return publish_stage.Plan(
        image=image,
        repository=repository,
        layout=CTX.paths.image_layout(image),
        tags=moving_tags(image),
        immutable=releases.tag_of(release),  # the annotation is <version>-<release>
    )


def gated(flavor: Flavor) -> bool:
    """Whether the flavor's images publish only after their boot tests passed."""
    if flavor.test.required is not None:
        return flavor.test.required
    return flavor.tier not in CTX.settings.untested_tiers


def check_gate(image: str, arches: list[str] | None = None) -> None:
    """Refuse to publish an index holding a disk that has not passed its boot test; the
    index's arches are `arches`, or those of the manifest task's receipt."""
    targets = images()[image]
    flavor = targets[0].flavor
    if not gated(flavor):
        return
    if arches is None:
        found = receipt_field(CTX.paths.image_receipt(image, "manifest"), "arches", list)
        arches = [str(a) for a in found or [t.arch for t in targets]]
    indexed = set(arches)
    untested = [t.name for t in targets if str(t.arch) in indexed and not test_passed(t)]
    if untested:
        why = "test.required" if flavor.test.required else f"its tier, {flavor.tier}"
        raise KmiError(
            f"{image}: not published: {', '.join(untested)} has not passed its boot test, "
            f"which {why} requires; run: doit test:{untested[0]} (or set test.required: "
            f"false in {flavor.source})"
        )


def _pushed_digest(target: Target) -> str:
    digest = receipt_field(CTX.paths.receipt(target.name, "build"), "digest", str)
    if digest is None:
        raise KmiError(
            f"{target.name}: its build receipt holds no pushed digest; run: doit "
            f"build:{target.name} (with KMI_ENGINE=buildx)"
        )
    return digest


def _known_blobs(host: str, image: str) -> dict[str, str]:
    """Blobs other images' publishes left in repositories of this registry (for mounts)."""
    known: dict[str, str] = {}
    for other in images():
        receipt = read_receipt(CTX.paths.image_receipt(other, "publish"))
        if other == image or not receipt or receipt.get("host") != host:
            continue
        blobs, repository = receipt.get("blobs"), receipt.get("repository")
        if isinstance(blobs, list) and isinstance(repository, str):
            known.update((str(digest), repository) for digest in blobs)
    return known


def run_publish(image: str) -> None:
    from kmi.registry import Client, Registry

    if CTX.settings.engine == "buildx":
        run_publish_buildx(image)
        return
    check_gate(image)
    flavor = images()[image][0].flavor.name
    where = registry_setting()
    paths = CTX.paths
    if where is None:
        plan = plan_of(image, flavor)
        outcome = publish_stage.dry_run(plan, "<registry>", say)
        results.record(paths.results(), CTX.run_id, outcome.to_json())
        return
    registry = Registry.parse(where, CTX.settings.registry_insecure)
    plan = plan_of(image, registry.repository(flavor))
    client = Client(
        registry, CTX.settings.http_retries, CTX.settings.http_backoff, CTX.settings.http_timeout
    )
    try:
        outcome = publish_stage.publish(
            client, plan, _known_blobs(registry.host, image), say, CTX.settings.progress
        )
    except KmiError as err:
        failed = publish_stage.Outcome(image, f"{registry.host}/{plan.repository}", error=str(err))
        results.record(paths.results(), CTX.run_id, failed.to_json())
        raise
    results.record(paths.results(), CTX.run_id, outcome.to_json())
    blobs = sorted(publish_stage.blob_digests(plan.layout))
    details = {
        "host": registry.host,
        "repository": plan.repository,
        "blobs": blobs,
        "immutable": outcome.tags[-1],  # with its digest suffix, if publish needed one
    }
    write_receipt(paths.image_receipt(image, "publish"), outcome.digest, details)


def run_publish_buildx(image: str) -> None:
    """KMI_ENGINE=buildx: each arch was pushed by digest by its build task (here or in
    another CI job, its receipt brought along); imagetools makes the tagged index."""
    from kmi.registry import Client, Registry

    targets = images()[image]
    builds = _current_builds(targets)
    chosen = [t for t in targets if str(t.arch) in builds]
    missing = [t.name for t in targets if t not in chosen]
    if not chosen or (missing and CTX.settings.index_arches == "all"):
        raise KmiError(
            f"{image}: no current buildx build of {', '.join(missing)}; run doit build for "
            "them, or set KMI_INDEX_ARCHES=built to index only what was built"
        )
    check_gate(image, [str(t.arch) for t in chosen])
    where = registry_setting()
    assert where is not None  # a current buildx build names its registry
    check_buildx(image)
    registry = Registry.parse(where, CTX.settings.registry_insecure)
    annotations = index_annotations(chosen)
    plan = plan_of(image, registry.repository(chosen[0].flavor.name), annotations)
    reference = f"{registry.host}/{plan.repository}"
    digests = {t.name: _pushed_digest(t) for t in chosen}
    tags = [*plan.tags, plan.immutable]
    say(f"{image}: docker buildx imagetools create {reference}:{{{','.join(tags)}}}")
    bake_stage.assemble(reference, list(digests.values()), tags, annotations)
    client = Client(
        registry, CTX.settings.http_retries, CTX.settings.http_backoff, CTX.settings.http_timeout
    )
    digest = client.manifest_digest(plan.repository, plan.tags[0])
    if digest is None:
        raise KmiError(
            f"{image}: docker buildx imagetools create finished, but {reference}:{plan.tags[0]} "
            "is not in the registry"
        )
    left_out = f" (left out, not built: {', '.join(missing)})" if missing else ""
    say(f"{image}: pushed {reference}@{digest} with buildx{left_out}")
    outcome = publish_stage.Outcome(image, reference, digest, tags, "pushed")
    results.record(CTX.paths.results(), CTX.run_id, outcome.to_json())
    details = {"host": registry.host, "repository": plan.repository, "engine": "buildx"}
    write_receipt(
        CTX.paths.image_receipt(image, "publish"), digest, {**details, "per_arch": digests}
    )


def task_publish() -> Iterator[TaskDict]:
    """Push each image to KMI_REGISTRY (or registry=...): blobs, manifests, index, tags."""
    every = CTX.settings.index_arches == "all"
    buildx = CTX.settings.engine == "buildx"
    for image, targets in images().items():
        needed = [t.name for t in targets if every or buildable_here(t)]
        tests = [f"test:{name}" for name in needed] if gated(targets[0].flavor) else []
        # buildx: the per-arch images are pushed by their build tasks; natively, the index
        packed = [f"build:{name}" for name in needed] if buildx else [f"manifest:{image}"]
        yield {
            "name": image,
            "doc": f"{image} -> <registry>/{targets[0].flavor.name}:{targets[0].version.version}",
            "actions": [(guarded(run_publish), [image])],
            "task_dep": [*packed, *tests],
            "uptodate": [False],  # the registry's state is checked on every run: a few HEADs
            "verbosity": 2,
        }
    yield from unknown_requested("publish", image=True)


# --- docs -------------------------------------------------------------------------------

CHART = "release-chart"


def docs_path(name: str) -> Path:
    return CTX.settings.docs_dir / f"{name}.md"


def repository_of(flavor: str) -> str:
    """Where the docs say the image is: the publish registry, or a placeholder."""
    from kmi.registry import Registry

    where = registry_setting()
    if where is None:
        return f"<registry>/{flavor}"
    registry = Registry.parse(where, CTX.settings.registry_insecure)
    return f"{registry.host}/{registry.repository(flavor)}"


def published_tag(image: str, repository: str) -> str | None:
    """The immutable tag publish gave the image in `repository` (which may carry the digest
    suffix), when its receipt says so."""
    receipt = read_receipt(CTX.paths.image_receipt(image, "publish")) or {}
    where = f"{receipt.get('host')}/{receipt.get('repository')}"
    tag = receipt.get("immutable")
    return tag if where == repository and isinstance(tag, str) else None


def render_doc(name: str) -> str:
    if name == CHART:
        return docs.release_chart(CTX.catalogue, list(CTX.targets.values()))
    targets = images()[name]
    entries = {t.name: e for t in targets if (e := CTX.pinned(t)) is not None}
    doc = docs.ImageDoc(
        image=name,
        flavor=targets[0].flavor,
        targets=tuple(targets),
        entries=entries,
        repository=repository_of(targets[0].flavor.name),
        tags=moving_tags(name),
        immutable=published_tag(name, repository_of(targets[0].flavor.name))
        or (
            releases.build_tag(targets[0].version.version, newest)
            if (newest := releases.newest(e.release for e in entries.values()))
            else ""
        ),
        gated=gated(targets[0].flavor),
    )
    return docs.image_readme(doc)


def docs_are_current(name: str) -> bool:
    try:
        return docs_path(name).read_text(encoding="utf-8") == render_doc(name)
    except (OSError, KmiError):
        return False


def run_docs(name: str) -> None:
    path = docs_path(name)
    changed = write_if_changed(path, render_doc(name))
    say(f"{name}: {'wrote' if changed else 'unchanged'} {path}")


def task_docs() -> Iterator[TaskDict]:
    """Write each image's README ("try me" manifests) and the release chart (KMI_DOCS_DIR)."""
    for name in [*images(), CHART]:
        yield {
            "name": name,
            "doc": "flavor x tier x arch of the catalogue" if name == CHART else f"{name} README",
            "actions": [(guarded(run_docs), [name])],
            "targets": [str(docs_path(name))],
            "uptodate": [(docs_are_current, [name])],
            "verbosity": 2,
        }
    yield from unknown_requested("docs", image=True)
