"""The engines that pack and publish containerdisks, behind one interface, chosen once per
run from KMI_ENGINE; the doit glue never asks which one it has.

- native: kmi writes each per-arch image as an OCI layout (no daemon), `manifest:I`
  assembles the index layout, and `publish:I` pushes blobs, manifests, index and tags.
- buildx: `docker buildx bake` packs each arch and pushes it by digest (its build key names
  where), and `publish:I` makes the tagged index with `docker buildx imagetools create`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from kmi import oci, publishing, receipts, releases
from kmi.catalogue import Target
from kmi.errors import KmiError
from kmi.files import write_if_changed
from kmi.progress import say
from kmi.stages import bake as bake_stage
from kmi.stages import containerdisk
from kmi.stages import publish as publish_stage

if TYPE_CHECKING:
    from kmi.context import Context
    from kmi.registry_ref import Registry


class Engine(Protocol):
    name: str

    def build_key(self, target: Target, native_key: str) -> str | None:
        """The build stage's key from the native one; None when it cannot be built here."""

    def build_output(self, name: str) -> Path | None:
        """What must exist beside the build receipt (None: the receipt is all)."""

    def build(self, target: Target) -> None:
        """Make the target's per-arch image (the plan says it is needed)."""

    def push(self, target: Target) -> None:
        """push:T: the target's per-arch image in the publish registry by digest (no tag)."""

    def publish_needs(self, image: str, targets: list[Target]) -> list[str]:
        """The doit tasks publish:I runs after, besides the boot tests."""

    def index(self, image: str) -> None:
        """manifest:I."""

    def publish(self, image: str) -> None:
        """publish:I: push what is not in the registry yet, then move the tags."""


def engine_for(ctx: Context) -> Engine:
    return Buildx(ctx) if ctx.settings.engine == "buildx" else Native(ctx)


def spec_of(ctx: Context, target: Target) -> tuple[str, oci.ImageSpec]:
    """The build key and the image's spec, annotated with how its disk was customized
    (from the final disk's receipt: the way travels with the disk, also through the stage
    cache; not in the key, which is the same either way)."""
    keys = ctx.plan.keys(target)
    if keys is None or keys.native_build is None or keys.spec is None:
        raise KmiError(f"{target.name}: no final disk; run: doit sparsify:{target.name}")
    disk = receipts.read(ctx.paths.receipt(target.name, "sparsify"), receipts.Sparsify)
    way = {containerdisk.CUSTOMIZED: disk.customized if disk else "native"}
    return keys.native_build, dataclasses.replace(
        keys.spec, annotations={**keys.spec.annotations, **way}
    )


def _chosen(ctx: Context, image: str) -> tuple[list[Target], list[Target]]:
    """The image's targets with a current build, and those without (an error unless
    KMI_INDEX_ARCHES=built and some are built)."""
    targets = ctx.images[image]
    builds = ctx.plan.current_builds(targets)
    chosen = [t for t in targets if str(t.arch) in builds]
    missing = [t for t in targets if t not in chosen]
    if not chosen or (missing and ctx.settings.index_arches == "all"):
        raise KmiError(
            f"{image}: no current containerdisk for {', '.join(t.name for t in missing)}; run "
            "doit build for them, or set KMI_INDEX_ARCHES=built to index only what was built"
        )
    return chosen, missing


def _push_to(ctx: Context, target: Target) -> tuple[Registry, str, str]:
    """The registry, repository and push key of push:T; an error without a registry."""
    registry = ctx.settings.registry
    key = ctx.plan.key(target, "push")
    if registry is None or key is None:
        raise KmiError(
            f"{target.name}: push needs a registry: set KMI_REGISTRY (push:T sends the image "
            "by digest, for a publish job with KMI_PUBLISH_FROM=pushed to index)"
        )
    return registry, registry.repository(target.flavor.name), key


def _pushed(
    ctx: Context,
    target: Target,
    where: tuple[Registry, str, str],
    manifest: tuple[str, int, str],
    sent: int,
) -> None:
    registry, repository, key = where
    digest, size, media_type = manifest
    recipe = ctx.plan.recipe(target)
    assert recipe is not None  # a target with a build key has a recipe
    made = receipts.Pushed(
        key=key,
        target=target.name,
        host=registry.host,
        repository=repository,
        digest=digest,
        size=size,
        media_type=media_type,
        arch=str(target.arch),
        recipe=recipe,
        bytes_sent=sent,
    )
    receipts.write(ctx.paths.receipt(target.name, "push"), made)


def _left_out(missing: list[Target]) -> str:
    return f" (left out, not built: {', '.join(str(t.arch) for t in missing)})" if missing else ""


class Native:
    """kmi's own OCI writer and registry client."""

    name = "native"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def build_key(self, target: Target, native_key: str) -> str | None:
        return native_key

    def build_output(self, name: str) -> Path | None:
        return self.ctx.paths.layout(name) / "index.json"

    def build(self, target: Target) -> None:
        from kmi.progress import Progress

        ctx, name = self.ctx, target.name
        key, spec = spec_of(ctx, target)
        disk, layout = ctx.paths.disk(name), ctx.paths.layout(name)
        if ctx.restored(name, receipts.Build, key, layout):
            return
        compression = cast(oci.Compression, ctx.settings.layer_compression)
        meter = Progress(f"{name}: pack", disk.stat().st_size, ctx.settings.progress)
        made = containerdisk.containerize(disk, layout, spec, compression, meter.advance)
        meter.finish()
        say(f"{name}: containerdisk {made['manifest'][:19]}… in {layout}")
        ctx.finish(name, receipts.Build(key=key, target=name, **made), layout)

    def push(self, target: Target) -> None:
        from kmi.registry import client_for

        ctx = self.ctx
        where = _push_to(ctx, target)
        registry, repository, _ = where
        plan = publish_stage.Plan(
            target.name, repository, ctx.paths.layout(target.name), tags=(), immutable=""
        )
        client = client_for(ctx.settings, registry)
        known = self._known_blobs(registry.host, "")
        manifest, out = publish_stage.push_image(client, plan, known, say, ctx.settings.progress)
        described = (manifest.digest, manifest.size, manifest.media_type)
        _pushed(ctx, target, where, described, out.bytes_sent)

    def publish_needs(self, image: str, targets: list[Target]) -> list[str]:
        return [f"manifest:{image}"]

    def index(self, image: str) -> None:
        ctx = self.ctx
        targets = ctx.images[image]
        planned = ctx.plan.index(image, targets)
        if planned is None:
            _chosen(ctx, image)  # raises, naming what is missing
            raise KmiError(f"{image}: no current containerdisk; run: doit build")
        chosen = list(planned.chosen)
        layouts = [ctx.paths.layout(t.name) for t in chosen]
        digest = containerdisk.assemble(
            ctx.paths.image_layout(image), layouts, planned.annotations, image
        )
        arches = [str(t.arch) for t in chosen]
        left_out = _left_out([t for t in targets if t not in chosen])
        say(f"{image}: index {digest[:19]}… over {', '.join(arches)}{left_out}")
        made = receipts.Manifest(
            key=planned.key,
            image=image,
            digest=digest,
            arches=arches,
            annotations=planned.annotations,
        )
        receipts.write(ctx.paths.image_receipt(image, "manifest"), made)

    def _known_blobs(self, host: str, image: str) -> dict[str, str]:
        """Blobs other images' publishes left in repositories of this registry (mounts)."""
        known: dict[str, str] = {}
        for other in self.ctx.images:
            found = receipts.read(self.ctx.paths.image_receipt(other, "publish"), receipts.Publish)
            if other == image or found is None or found.host != host:
                continue
            known.update((digest, found.repository) for digest in found.blobs)
        return known

    def publish(self, image: str) -> None:
        from kmi.registry import client_for

        ctx = self.ctx
        manifest = receipts.read(ctx.paths.image_receipt(image, "manifest"), receipts.Manifest)
        if manifest is None:
            raise KmiError(f"{image}: no index; run: doit manifest:{image}")
        publishing.check_gate(ctx, image, manifest.arches)
        flavor = ctx.images[image][0].flavor.name
        release = manifest.annotations.get("org.opencontainers.image.version", "")
        registry = ctx.settings.registry
        plan = publish_stage.Plan(
            image=image,
            repository=flavor if registry is None else registry.repository(flavor),
            layout=ctx.paths.image_layout(image),
            tags=publishing.moving_tags(ctx, image),
            immutable=releases.tag_of(release or ctx.images[image][0].version.version),
        )
        if registry is None:
            ctx.results_entry(publish_stage.dry_run(plan, "<registry>", say).to_json())
            return
        client = client_for(ctx.settings, registry)
        known = self._known_blobs(registry.host, image)
        outcome = publishing.recorded(
            ctx,
            image,
            f"{registry.host}/{plan.repository}",
            lambda: publish_stage.publish(
                client,
                plan,
                known,
                say,
                ctx.settings.progress,
                publishing.signing(ctx, client, plan.repository, image, say),
            ),
        )
        made = receipts.Publish(
            key=outcome.digest,
            host=registry.host,
            repository=plan.repository,
            blobs=sorted(publish_stage.blob_digests(ctx.paths.image_layout(image))),
            immutable=outcome.tags[-1],  # with its digest suffix, if publish needed one
        )
        receipts.write(ctx.paths.image_receipt(image, "publish"), made)


class Buildx:
    """BuildKit through python-on-whales: each arch pushed by digest as it is built."""

    name = "buildx"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def destination(self, target: Target) -> tuple[str, bool] | None:
        """Where the target's image is pushed (`host/repository`) and whether over plain
        HTTP; None without a registry."""
        registry = self.ctx.settings.registry
        if registry is None:
            return None
        return publishing.repository_of(self.ctx, target.flavor.name), registry.scheme == "http"

    def build_key(self, target: Target, native_key: str) -> str | None:
        destination = self.destination(target)
        return None if destination is None else bake_stage.build_key(native_key, destination[0])

    def build_output(self, name: str) -> Path | None:
        return None  # the pushed image: its receipt holds the digest

    def check(self, what: str) -> None:
        """A one-line error when buildx cannot run here."""
        missing = bake_stage.missing_buildx()
        if missing:
            raise KmiError(
                f"{what}: KMI_ENGINE=buildx, but {missing}; install docker buildx, or unset "
                "KMI_ENGINE to use the native engine"
            )

    def build(self, target: Target) -> None:
        ctx, name = self.ctx, target.name
        native, spec = spec_of(ctx, target)
        destination = self.destination(target)
        if destination is None:
            raise KmiError(
                f"{name}: KMI_ENGINE=buildx pushes as it builds; set KMI_REGISTRY or pass "
                "--registry=HOST/PATH"
            )
        self.check(name)
        repository, insecure = destination
        folder = ctx.paths.build / name
        context = ctx.paths.bake_context(name)
        bake_stage.link_context(ctx.paths.disk(name), context)
        bake_file = folder / "docker-bake.json"
        definition = bake_stage.bake_target(spec, context, repository, insecure)
        write_if_changed(bake_file, bake_stage.definition(name, {name: definition}))
        say(f"{name}: docker buildx bake {name} ({bake_file})")
        digest = bake_stage.bake(bake_file, [name], folder / "bake-metadata.json")[name]
        say(f"{name}: pushed {repository}@{digest} with buildx")
        made = receipts.PushedBuild(
            key=bake_stage.build_key(native, repository),
            target=name,
            engine="buildx",
            repository=repository,
            digest=digest,
        )
        receipts.write(ctx.paths.receipt(name, "build"), made)

    def push(self, target: Target) -> None:
        """BuildKit pushed the image as it built it: only its descriptor is read back."""
        from kmi.registry import client_for

        ctx = self.ctx
        where = _push_to(ctx, target)
        registry, repository, _ = where
        digest = self._pushed(target)
        described = client_for(ctx.settings, registry).describe(repository, digest)
        if described is None:
            raise KmiError(
                f"{target.name}: {registry.host}/{repository}@{digest} is not in the registry "
                f"any more; run: doit clean build:{target.name} && doit push:{target.name}"
            )
        say(f"{target.name}: {registry.host}/{repository}@{digest[:19]}… pushed by buildx")
        _pushed(ctx, target, where, described, 0)

    def publish_needs(self, image: str, targets: list[Target]) -> list[str]:
        return [f"build:{t.name}" for t in targets]

    def index(self, image: str) -> None:
        raise KmiError(
            f"{image}: with KMI_ENGINE=buildx the index is made in the registry by "
            f"`docker buildx imagetools create`; run: doit publish:{image}"
        )

    def _pushed(self, target: Target) -> str:
        found = receipts.read(self.ctx.paths.receipt(target.name, "build"), receipts.PushedBuild)
        if found is None:
            raise KmiError(
                f"{target.name}: its build receipt holds no pushed digest; run: doit "
                f"build:{target.name} (with KMI_ENGINE=buildx)"
            )
        return found.digest

    def publish(self, image: str) -> None:
        """Each arch was pushed by digest by its build task (here or in another CI job,
        its receipt brought along); imagetools makes the tagged index."""
        from kmi.registry import client_for

        ctx = self.ctx
        chosen, missing = _chosen(ctx, image)
        publishing.check_gate(ctx, image, [str(t.arch) for t in chosen])
        registry = ctx.settings.registry
        assert registry is not None  # a current buildx build names its registry
        self.check(image)
        annotations, release = ctx.plan.annotations(chosen)
        repository = registry.repository(chosen[0].flavor.name)
        reference = f"{registry.host}/{repository}"
        moving = publishing.moving_tags(ctx, image)
        tags = [*moving, releases.build_tag(chosen[0].version.version, release)]
        digests = {t.name: self._pushed(t) for t in chosen}
        say(f"{image}: docker buildx imagetools create {reference}:{{{','.join(tags)}}}")
        client = client_for(ctx.settings, registry)
        sign = publishing.signing(ctx, client, repository, image, say)  # the key read first
        bake_stage.assemble(reference, list(digests.values()), tags, annotations)
        digest = client.manifest_digest(repository, moving[0])
        if digest is None:
            raise KmiError(
                f"{image}: docker buildx imagetools create finished, but {reference}:{moving[0]} "
                "is not in the registry"
            )
        say(f"{image}: pushed {reference}@{digest} with buildx{_left_out(missing)}")
        outcome = publish_stage.Outcome(image, reference, digest, tags, "pushed")
        if sign is not None:  # imagetools moves the tags itself: signed right after
            outcome.signed, outcome.attested = sign([*digests.values(), digest])
        ctx.results_entry(outcome.to_json())
        made = receipts.Publish(
            key=digest,
            host=registry.host,
            repository=repository,
            immutable=tags[-1],
            engine="buildx",
            per_arch=digests,
        )
        receipts.write(ctx.paths.image_receipt(image, "publish"), made)
