"""What publishing an image means, whatever the engine: the boot-test gate, the tags, and
where the image goes. The engines (kmi.engines) and the docs use these."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kmi import maintained, receipts, releases
from kmi.catalogue import Flavor, Target
from kmi.errors import KmiError
from kmi.settings import Settings

if TYPE_CHECKING:
    from kmi.context import Context
    from kmi.criteria import Result
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
    test (when the flavor is gated), or the criteria its tier requires."""
    targets = ctx.images[image]
    flavor = targets[0].flavor
    if gated(flavor, ctx.settings):
        _check_tested(ctx, image, arches)
    check_criteria(ctx, image, arches)


def _check_tested(ctx: Context, image: str, arches: list[str]) -> None:
    targets = ctx.images[image]
    flavor = targets[0].flavor
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


def required_criteria(ctx: Context, flavor: Flavor) -> frozenset[str]:
    """The criteria the flavor's tier requires of its images, less what it waives."""
    from kmi import criteria

    settings = ctx.settings
    needed = criteria.required(flavor.tier, settings.stable_criteria, settings.proposed_criteria)
    return needed - set(flavor.test.waive)


def criteria_of(ctx: Context, target: Target) -> dict[str, Result]:
    """Each criterion's result for the target's current image (kmi.criteria.Result), from
    the verify and test receipts and the signing setting; a stale receipt counts as none."""
    from kmi.criteria import BOOT, Result

    def read(result: dict[str, Any]) -> Result:
        passed = result.get("passed")  # only a JSON true passes, whatever else a file holds
        return Result(passed if isinstance(passed, bool) else None, str(result.get("detail")))

    found: dict[str, Result] = {}
    verify = receipts.read(ctx.paths.receipt(target.name, "verify"), receipts.Verify)
    if verify is not None and ctx.plan.recorded(target, "verify"):
        found.update((name, read(result)) for name, result in verify.results.items())
    test = receipts.read(ctx.paths.receipt(target.name, "test"), receipts.Test)
    if test is not None and ctx.plan.recorded(target, "test"):
        found.update((name, read(test.checks[name])) for name in BOOT if name in test.checks)
    key = ctx.settings.signing_key
    found["signature"] = (
        Result(True, f"signed by publish with {key.name}")
        if key is not None
        else Result(False, "KMI_SIGNING_KEY is not set: publish would not sign")
    )
    return found


def check_criteria(ctx: Context, image: str, arches: list[str]) -> None:
    """Refuse an image whose flavor's tier requires criteria one of its arches has not
    passed, naming each with why."""
    from kmi import criteria

    targets = [t for t in ctx.images[image] if str(t.arch) in set(arches)]
    if not targets:
        return
    flavor = targets[0].flavor
    needed = required_criteria(ctx, flavor)
    if not needed:
        return
    for target in targets:
        waived = {str(k): v for k, v in flavor.test.waive.items()}
        unmet = criteria.unmet(criteria_of(ctx, target), needed, waived)
        if unmet:
            said = "; ".join(f"{name} ({why})" for name, why in unmet)
            run = sorted(
                {criteria.stage_of(n) for n, why in unmet if why == "not checked"} - {"publish"}
            )
            hint = f"run: doit {' '.join(f'{s}:{target.name}' for s in run)}; " if run else ""
            raise KmiError(
                f"{image}: not published: its tier, {flavor.tier}, requires criteria "
                f"{target.name} has not passed: {said}; {hint}see README, "
                f'"Support tiers" (waive one in {flavor.source} under test.waive, with why)'
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
    KMI_SIGNING_KEY (None when it is unset), and attaches each per-arch image's SBOM and
    provenance as signed attestations. The key is read here, before anything is pushed: a
    wrong passphrase stops the publish at once."""
    key = ctx.settings.signing_key
    if key is None:
        return None
    from kmi import cosign

    signer = cosign.Signer(key, ctx.settings.signing_password)
    public = signer.public_pem()
    identity = f"{client.registry.host}/{repository}"
    per_arch = per_arch_digests(ctx, image)

    def sign(digests: list[str]) -> tuple[int, int]:
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
        attested = 0
        for digest in digests:
            target = per_arch.get(digest)
            if target is None:  # the index, or an arch built on an earlier night
                continue
            for kind, predicate in attestations(ctx, target, say):
                attested += cosign.attest_digest(
                    client, repository, identity, digest, kind, predicate, signer, public
                )
        if attested:
            say(f"{image}: attached {attested} signed attestation(s) (SBOM, provenance)")
        return fresh, attested

    return sign


def per_arch_digests(ctx: Context, image: str) -> dict[str, Target]:
    """The per-arch manifest digests this machine's receipts know the targets of: the
    native engine's layout, push:T's push, buildx's push."""
    found: dict[str, Target] = {}
    for target in ctx.images[image]:
        build = ctx.paths.receipt(target.name, "build")
        native = receipts.read(build, receipts.Build)
        pushed = receipts.read(ctx.paths.receipt(target.name, "push"), receipts.Pushed)
        buildx = receipts.read(build, receipts.PushedBuild)
        for digest in (
            native.manifest if native else None,
            pushed.digest if pushed else None,
            buildx.digest if buildx else None,
        ):
            if digest:
                found[digest] = target
    return found


def attestations(ctx: Context, target: Target, say: Callable[[str], None]) -> list[tuple[str, Any]]:
    """The predicates publish attaches to the target's per-arch image: its SBOM (when
    sbom:T made it for this disk) and its provenance."""
    from kmi import cosign, provenance

    found: list[tuple[str, Any]] = []
    sbom = ctx.paths.sbom(target.name)
    if ctx.plan.recorded(target, "sbom"):
        try:
            found.append((cosign.SPDX, json.loads(sbom.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            name = target.name
            say(f"{name}: {sbom} cannot be read; no SBOM attached (run: doit sbom:{name})")
    else:
        say(f"{target.name}: no SBOM of this disk; none attached (run: doit sbom:{target.name})")
    disk = receipts.read(ctx.paths.receipt(target.name, "sparsify"), receipts.Sparsify)
    entry = ctx.pinned(target)
    recipe = ctx.plan.recipe(target)
    if disk is None or entry is None or recipe is None:
        say(f"{target.name}: its sparsify receipt or lock entry is missing; no provenance attached")
        return found
    made = provenance.predicate(
        target, entry, recipe, disk.built, disk.customized, disk.restored_from
    )
    found.append((cosign.SLSA_PROVENANCE, made))
    return found


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
