"""The per-image task families (I = <flavor>-<version>): manifest:I, bake:I, publish:I,
docs:I. What each does depends on the engine (kmi.engines), which the glue never asks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from doit import task_params

from kmi import criteria, docs, publishing, receipts
from kmi.catalogue import Target
from kmi.engines import spec_of
from kmi.errors import KmiError
from kmi.files import write_if_changed
from kmi.progress import say
from kmi.stages import bake as bake_stage
from kmi.stages.sysprep import way_to_customize
from kmi.tasks.common import CTX, TaskDict, guarded, images, remove, unknown_requested


def buildable_here(target: Target) -> bool:
    try:
        way_to_customize(target, CTX.plan.host, CTX.settings.customize)
    except KmiError:
        return False
    return True


def _needed(targets: list[Target]) -> list[Target]:
    """The targets an image's tasks wait for: all, or (KMI_INDEX_ARCHES=built) those this
    host can build."""
    every = CTX.settings.index_arches == "all"
    return [t for t in targets if every or buildable_here(t)]


# --- manifest ---------------------------------------------------------------------------


def manifest_is_current(image: str) -> bool:
    try:
        planned = CTX.plan.index(image, CTX.images[image])
    except KmiError:
        return False
    receipt = CTX.paths.image_receipt(image, "manifest")
    return (
        planned is not None
        and receipts.key_of(receipt) == planned.key
        and CTX.paths.image_layout(image).exists()
    )


def run_manifest(image: str) -> None:
    CTX.engine.index(image)


def task_manifest() -> Iterator[TaskDict]:
    """Assemble each image's multi-arch OCI index over its per-arch containerdisks."""
    for image, targets in images().items():
        receipt = CTX.paths.image_receipt(image, "manifest")
        yield {
            "name": image,
            "doc": f"{image}: index over {', '.join(str(t.arch) for t in targets)}",
            "actions": [(guarded(run_manifest), [image])],
            "targets": [str(receipt)],
            "uptodate": [(manifest_is_current, [image])],
            "task_dep": [f"build:{t.name}" for t in _needed(targets)],
            "clean": [(remove, [[receipt, CTX.paths.image_layout(image)]])],
            "verbosity": 2,
        }
    yield from unknown_requested("manifest", image=True)


# --- bake (the buildx engine's definition, for use by hand or by CI jobs of their own) ----


def bake_file_of(image: str) -> Path:
    return CTX.paths.image_dir(image) / "docker-bake.json"


def render_bake(image: str) -> tuple[str, list[Target]]:
    """The image's bake file (every arch with a current final disk) and the targets it
    covers. `doit build` with KMI_ENGINE=buildx bakes each target from a file of its own,
    with the same target definition."""
    targets = CTX.images[image]
    ready = [t for t in targets if CTX.plan.current(t, "sparsify")]
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
        _, spec = spec_of(CTX, target)  # what the native engine would write
        repository = publishing.repository_of(CTX, target.flavor.name)
        registry = CTX.settings.registry
        insecure = registry is not None and registry.scheme == "http"
        context = CTX.paths.bake_context(target.name)
        found[target.name] = bake_stage.bake_target(spec, context, repository, insecure)
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
    for image, targets in images().items():
        yield {
            "name": image,
            "doc": f"{image}: docker-bake.json over {', '.join(str(t.arch) for t in targets)}",
            "actions": [(guarded(run_bake), [image])],
            "targets": [str(bake_file_of(image))],
            "uptodate": [(bake_is_current, [image])],
            "task_dep": [f"sparsify:{t.name}" for t in _needed(targets)],
            "clean": [(remove, [[bake_file_of(image)]])],
            "verbosity": 2,
        }
    yield from unknown_requested("bake", image=True)


# --- publish ----------------------------------------------------------------------------

REGISTRY_PARAM = {
    "name": "registry",
    "long": "registry",
    "type": str,
    "default": "",
    "help": "host[:port][/path] to push to, instead of KMI_REGISTRY (also: registry=...)",
}


def _registry_option(registry: str, family: str) -> None:
    """`--registry=HOST/PATH` of publish and prune: KMI_REGISTRY for this run."""
    if registry.strip():
        try:
            CTX.override("KMI_REGISTRY", registry.strip(), f"{family} --registry")
        except KmiError as err:
            from doit.exceptions import InvalidCommand

            raise InvalidCommand(str(err)) from None


def run_publish(image: str) -> None:
    if CTX.settings.publish_from == "pushed":
        from kmi.assemble import publish_pushed

        publish_pushed(CTX, image)
    else:
        CTX.engine.publish(image)


@task_params([REGISTRY_PARAM])  # type: ignore[untyped-decorator]
def task_publish(registry: str = "") -> Iterator[TaskDict]:
    """Push each image to KMI_REGISTRY (or --registry): blobs, manifests, index, tags."""
    _registry_option(registry, "publish")
    pushed = CTX.settings.publish_from == "pushed"  # builds nothing: indexes the registry's
    for image, targets in images().items():
        needed = _needed(targets)
        gated = publishing.gated(targets[0].flavor, CTX.settings)
        tests = [f"test:{t.name}" for t in needed] if gated else []
        if publishing.required_criteria(CTX, targets[0].flavor) & set(criteria.STATIC):
            tests += [f"verify:{t.name}" for t in needed]
        yield {
            "name": image,
            "doc": f"{image} -> <registry>/{targets[0].flavor.name}:{targets[0].version.version}",
            "actions": [(guarded(run_publish), [image])],
            "task_dep": [] if pushed else [*CTX.engine.publish_needs(image, needed), *tests],
            "uptodate": [False],  # the registry's state is checked on every run: a few HEADs
            "clean": [(remove, [[CTX.paths.image_receipt(image, "publish")]])],
            "verbosity": 2,
        }
    yield from unknown_requested("publish", image=True)


# --- prune ------------------------------------------------------------------------------

DELETE_PARAM = {
    "name": "delete",
    "long": "delete",
    "type": bool,
    "default": False,
    "help": "delete for real (without it: a dry run that says what would go); also "
    "delete=1, which works for prune:<image> too",
}


def _delete_variable() -> bool:
    """`delete=1` on the command line (a doit variable, for `doit prune:I delete=1`)."""
    from doit import get_var

    from kmi.settings import TRUE_WORDS

    return str(get_var("delete", "") or "").lower() in TRUE_WORDS


def run_prune(image: str, delete: bool) -> None:
    from kmi import prune
    from kmi.progress import human
    from kmi.registry import client_for

    registry = CTX.settings.registry
    if registry is None:
        raise KmiError(f"{image}: prune works on a registry; set KMI_REGISTRY or pass registry=...")
    targets = CTX.images[image]
    flavor = targets[0].flavor
    repository = registry.repository(flavor.name)
    where = f"{registry.host}/{repository}"
    keep = CTX.settings.keep_releases
    client = client_for(CTX.settings, registry)
    others = [v.version for v in flavor.versions if v.version != targets[0].version.version]
    moving = publishing.moving_tags(CTX, image)
    found = prune.plan(
        client, image, repository, where, targets[0].version.version, others, moving, keep
    )
    if not found.going:
        total = len(found.kept) + len(found.spared)
        spared = f"; {len(found.spared)} older on a manifest in use" if found.spared else ""
        say(
            f"{image}: {total} release tag(s) in {where}, nothing to delete (keeping the "
            f"newest {keep}{spared})"
        )
        return
    tags = ", ".join(f"{t} ({d[:19]}…)" for t, d in found.going.items())
    frees = f"frees {human(found.frees)} of blobs no kept image uses"
    if not delete:
        say(
            f"{image}: dry run: would delete {tags} from {where} ({len(found.manifests)} "
            f"manifest(s)), keeping the newest {keep}; {frees} at the registry's next garbage "
            f"collection; run: doit prune:{image} delete=1"
        )
        return
    prune.apply(client, repository, found)
    say(f"{image}: deleted {tags} from {where} ({len(found.manifests)} manifest(s)); {frees}")


@task_params([DELETE_PARAM, REGISTRY_PARAM])  # type: ignore[untyped-decorator]
def task_prune(delete: bool = False, registry: str = "") -> Iterator[TaskDict]:
    """Delete each image's release tags beyond the newest KMI_KEEP_RELEASES (dry run unless
    --delete)."""
    _registry_option(registry, "prune")
    delete = delete or _delete_variable()
    for image in images():
        yield {
            "name": image,
            "doc": f"{image}: keep the newest KMI_KEEP_RELEASES releases in the registry",
            "actions": [(guarded(run_prune), [image, delete])],
            "uptodate": [False],
            "verbosity": 2,
        }
    yield from unknown_requested("prune", image=True)


# --- docs -------------------------------------------------------------------------------

CHART = "release-chart"


def docs_path(name: str) -> Path:
    return CTX.settings.docs_dir / f"{name}.md"


def render_doc(name: str) -> str:
    if name == CHART:
        return docs.release_chart(CTX.catalogue, list(CTX.targets.values()))
    targets = CTX.images[name]
    entries = {t.name: e for t in targets if (e := CTX.pinned(t)) is not None}
    planned = CTX.plan.index(name, targets)
    chosen = list(planned.chosen) if planned is not None else targets
    repository = publishing.repository_of(CTX, targets[0].flavor.name)
    doc = docs.ImageDoc(
        image=name,
        flavor=targets[0].flavor,
        targets=tuple(targets),
        entries=entries,
        repository=repository,
        tags=publishing.moving_tags(CTX, name),
        immutable=publishing.published_tag(CTX, name) or publishing.planned_tag(CTX, name, chosen),
        gated=publishing.gated(targets[0].flavor, CTX.settings),
        required=publishing.required_criteria(CTX, targets[0].flavor),
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
