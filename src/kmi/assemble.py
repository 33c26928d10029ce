"""publish:I with KMI_PUBLISH_FROM=pushed: the index made over per-arch images that are in
the registry already, so the publish job of a nightly needs no disk and no layout.

Each arch comes from one of two places:
- tonight's push: a push receipt (push:T, in this build folder or brought from the build
  job that made it) whose key is the one the plan computes now;
- the registry: the image published under the moving tag holds the arch made from the
  same recipe (kmi.published), as on a night when only another arch or nothing changed.

An arch found in neither is left out (KMI_INDEX_ARCHES=built) or stops the image (all).
The index bytes are canonical (kmi.oci.index_data): when nothing changed they are the bytes
already published, and publish sends nothing (a few HEAD and GET requests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kmi import oci, publishing, receipts, releases
from kmi.catalogue import Target
from kmi.errors import KmiError
from kmi.progress import say
from kmi.stages import publish as publish_stage

if TYPE_CHECKING:
    from kmi.context import Context
    from kmi.registry import Client


@dataclass(frozen=True)
class Arch:
    target: Target
    descriptor: oci.Descriptor
    tonight: bool  # pushed by this night's push:T (so its boot test gates it), else reused


def _found(ctx: Context, image: str, client: Client) -> tuple[list[Arch], list[Target]]:
    _, published = publishing.published(ctx, image, client)
    found, missing = [], []
    for target in ctx.images[image]:
        arch = str(target.arch)
        platform = oci.platform_of(arch)
        pushed = receipts.read(ctx.paths.receipt(target.name, "push"), receipts.Pushed)
        there = published.get(arch)
        if pushed is not None and pushed.key == ctx.plan.key(target, "push"):
            desc = oci.Descriptor(pushed.media_type, pushed.digest, pushed.size, platform)
            found.append(Arch(target, desc, tonight=True))
        elif there is not None and there.made_from(ctx.plan.recipe(target)):
            old = there.descriptor
            desc = oci.Descriptor(old.media_type, old.digest, old.size, platform)
            found.append(Arch(target, desc, tonight=False))
        else:
            missing.append(target)
    return found, missing


def publish_pushed(ctx: Context, image: str) -> None:
    registry = ctx.settings.registry
    if registry is None:
        raise KmiError(
            f"{image}: KMI_PUBLISH_FROM=pushed indexes what is in the registry; set "
            "KMI_REGISTRY or pass --registry=HOST/PATH"
        )
    from kmi.registry import client_for

    client = client_for(ctx.settings, registry)
    found, missing = _found(ctx, image, client)
    if not found or (missing and ctx.settings.index_arches == "all"):
        names = ", ".join(t.name for t in missing)
        raise KmiError(
            f"{image}: not published: no image in the registry made from tonight's recipe for "
            f"{names}; run doit push for them (their build job's push receipts go in the build "
            "folder), or set KMI_INDEX_ARCHES=built to index only what is there"
        )
    # what tonight's jobs pushed passed its boot test where the flavor requires one; what is
    # reused passed it when it was published
    publishing.check_gate(ctx, image, [str(a.target.arch) for a in found if a.tonight])
    chosen = [a.target for a in found]
    annotations, release = ctx.plan.annotations(chosen)
    data = oci.index_data([a.descriptor for a in found], annotations)
    repository = registry.repository(chosen[0].flavor.name)
    plan = publish_stage.Plan(
        image=image,
        repository=repository,
        layout=None,
        tags=publishing.moving_tags(ctx, image),
        immutable=releases.build_tag(chosen[0].version.version, release),
    )
    for arch in found:
        how = "pushed tonight" if arch.tonight else "unchanged, already in the registry"
        say(f"{image}: {arch.target.arch} {arch.descriptor.digest[:19]}… ({how})")
    if missing:
        say(f"{image}: left out, not pushed: {', '.join(str(t.arch) for t in missing)}")
    outcome = publishing.recorded(
        ctx,
        image,
        f"{registry.host}/{repository}",
        lambda: publish_stage.publish_index(
            client, plan, data, say, publishing.signing(ctx, client, repository, image, say)
        ),
    )
    made = receipts.Publish(
        key=outcome.digest,
        host=registry.host,
        repository=repository,
        immutable=outcome.tags[-1],
        engine="pushed",
        per_arch={a.target.name: a.descriptor.digest for a in found},
    )
    receipts.write(ctx.paths.image_receipt(image, "publish"), made)
