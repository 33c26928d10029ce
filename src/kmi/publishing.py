"""What publishing an image means, whatever the engine: the boot-test gate, the tags, and
where the image goes. The engines (kmi.engines) and the docs use these."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kmi import maintained, receipts, releases
from kmi.catalogue import Flavor, Target
from kmi.errors import KmiError
from kmi.settings import Settings

if TYPE_CHECKING:
    from kmi.context import Context
    from kmi.published import PublishedArch, Reader
    from kmi.registry import Client
    from kmi.stages.publish import Outcome, Sign


def gated(flavor: Flavor, settings: Settings) -> bool:
    """Whether the flavor's images publish only after their boot tests passed."""
    if flavor.test.required is not None:
        return flavor.test.required
    return flavor.tier not in settings.untested_tiers


def check_gate(ctx: Context, image: str, arches: list[str]) -> None:
    """Refuse to publish an index over `arches` holding a disk that has not passed its boot
    test (when the flavor is gated)."""
    targets = ctx.images[image]
    flavor = targets[0].flavor
    if not gated(flavor, ctx.settings):
        return
    indexed = set(arches)
    untested = [
        t.name for t in targets if str(t.arch) in indexed and not ctx.plan.recorded(t, "test")
    ]
    if untested:
        why = "test.required" if flavor.test.required else f"its tier, {flavor.tier}"
        raise KmiError(
            f"{image}: not published: {', '.join(untested)} has not passed its boot test, "
            f"which {why} requires; run: doit test:{untested[0]} (or set test.required: "
            f"false in {flavor.source})"
        )


def moving_tags(ctx: Context, image: str) -> tuple[str, ...]:
    """The tags every new build of the image moves: its version, and maybe `latest`."""
    first = ctx.images[image][0]
    version = first.version.version
    latest = maintained.latest_version(first.flavor, ctx.lock()) == version
    return releases.moving_tags(version, latest)


def signing(
    ctx: Context, client: Client, repository: str, image: str, say: Callable[[str], None]
) -> Sign | None:
    """What signs the image's manifests in `repository` of the client's registry, with
    KMI_SIGNING_KEY (None when it is unset). The key is read here, before anything is pushed:
    a wrong passphrase stops the publish at once."""
    key = ctx.settings.signing_key
    if key is None:
        return None
    from kmi import cosign

    signer = cosign.Signer(key, ctx.settings.signing_password)
    public = signer.public_pem()
    identity = f"{client.registry.host}/{repository}"

    def sign(digests: list[str]) -> int:
        fresh = sum(
            cosign.sign_digest(client, repository, identity, d, signer, public) for d in digests
        )
        kept = len(digests) - fresh
        say(
            f"{image}: signed {fresh} manifest(s) as cosign does"
            + (f"; {kept} already signed by this key" if kept else "")
            if fresh
            else f"{image}: its {kept} manifest(s) are already signed by this key"
        )
        return fresh

    return sign


def repository_of(ctx: Context, flavor: str) -> str:
    """`host/repository` of the flavor's images in the publish registry, or a placeholder."""
    registry = ctx.settings.registry
    if registry is None:
        return f"<registry>/{flavor}"
    return f"{registry.host}/{registry.repository(flavor)}"


def published_tag(ctx: Context, image: str) -> str | None:
    """The immutable tag publish gave the image where the settings publish it now (it may
    carry a digest suffix), when its receipt says so."""
    found = receipts.read(ctx.paths.image_receipt(image, "publish"), receipts.Publish)
    flavor = ctx.images[image][0].flavor.name
    if found is None or f"{found.host}/{found.repository}" != repository_of(ctx, flavor):
        return None
    return found.immutable or None


def planned_tag(ctx: Context, image: str, chosen: list[Target]) -> str:
    """The immutable tag the next publish of the image over `chosen` would push (before
    any digest suffix): the one rule of kmi.releases over the releases they pin."""
    version = ctx.images[image][0].version.version
    pinned = [e.release for t in chosen if (e := ctx.pinned(t)) is not None]
    return releases.build_tag(version, releases.newest(pinned)) if pinned else ""


def recorded(ctx: Context, image: str, where: str, push: Callable[[], Outcome]) -> Outcome:
    """Run one image's push; its outcome, or its error, goes into results.json."""
    from kmi.stages.publish import Outcome

    try:
        outcome = push()
    except KmiError as err:
        ctx.results_entry(Outcome(image, where, error=str(err)).to_json())
        raise
    ctx.results_entry(outcome.to_json())
    return outcome


def published(ctx: Context, image: str, client: Reader) -> tuple[str, dict[str, PublishedArch]]:
    """Where the image is published (`host/repository:<version>`) and, per arch, what the
    registry holds there with its recipe (a few GETs)."""
    from kmi.published import published_arches

    registry = ctx.settings.registry
    assert registry is not None
    repository = registry.repository(ctx.images[image][0].flavor.name)
    tag = moving_tags(ctx, image)[0]
    where = f"{registry.host}/{repository}:{tag}"
    return where, published_arches(client, repository, tag, where)
