"""The plan (kmi.plan): keys computed once per lock state, chained stage to stage, and the
one rule that decides whether a stage is needed. Against a real lock from discovery on the
loopback mirror, real receipts and real files; no doit."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmi import receipts
from kmi.context import Context
from kmi.demo.layouts import debian
from kmi.demo.upstreams import Upstreams
from tests.conftest import Project

TARGET = "debian-12-amd64"


@pytest.fixture
def ctx(project: Project, upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch) -> Context:
    debian(upstreams)
    assert project.doit("discover:debian").code == 0
    monkeypatch.chdir(project.work)
    for name, value in project.env.items():
        monkeypatch.setenv(name, value)
    return Context()


def test_each_target_is_keyed_once_and_its_keys_chain(ctx: Context) -> None:
    probes: list[int] = []
    real = ctx.tool_versions

    def counted() -> dict[str, str]:
        probes.append(1)
        return real()

    ctx.tool_versions = counted  # type: ignore[method-assign]
    target = ctx.targets[TARGET]
    plan = ctx.plan
    first = plan.keys(target)
    assert first is not None
    assert plan.keys(target) is first and ctx.plan is plan  # same lock: nothing recomputed
    assert len(probes) == 3  # sysprep's tools, sparsify's and sbom's, once
    keys = [first.download, first.checksum, first.sysprep, first.sparsify, first.build, first.sbom]
    assert len(set(keys)) == 6 and all(keys)
    assert first.test and first.test not in keys
    # a change to the lock (another discovery) makes a new plan
    lock = ctx.settings.lock_file
    lock.write_text(lock.read_text() + " ")
    assert ctx.plan is not plan


def test_one_rule_decides_what_is_needed(ctx: Context, tmp_path: Path) -> None:
    target = ctx.targets[TARGET]
    plan = ctx.plan
    keys = plan.keys(target)
    assert keys is not None and keys.sparsify is not None
    paths = ctx.paths
    assert all(plan.needed(target, s) for s in ("download", "checksum", "sysprep", "sparsify"))
    # a current final disk: nothing before it is needed, whatever is missing
    disk = paths.disk(TARGET)
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"QFI\xfb")
    made = receipts.Sparsify(key=keys.sparsify, target=TARGET, sysprep_size=1, final_size=4)
    receipts.write(paths.receipt(TARGET, "sparsify"), made)
    assert not any(plan.needed(target, s) for s in ("download", "checksum", "sysprep"))
    assert not plan.needed(target, "sparsify") and plan.needed(target, "build")
    # the receipt alone is not enough: its output must be there
    disk.unlink()
    assert plan.recorded(target, "sparsify") and not plan.current(target, "sparsify")
    assert plan.needed(target, "download")
    # a receipt of another key (the catalogue or a tool changed) is stale
    receipts.write(
        paths.receipt(TARGET, "sparsify"), made.__class__(**{**made.to_json(), "key": "0" * 64})
    )
    disk.write_bytes(b"QFI\xfb")
    assert plan.needed(target, "sparsify")


def test_receipts_read_back_typed_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    made = receipts.Manifest(
        key="k", image="x-1", digest="sha256:1", arches=["amd64"], annotations={"a": "b"}
    )
    receipts.write(path, made)
    assert receipts.read(path, receipts.Manifest) == made
    assert receipts.read(path, receipts.Publish) is None  # another stage's shape
    path.write_text('{"key": "k", "image": "x-1", "digest": 1, "arches": [], "annotations": {}}')
    assert receipts.read(path, receipts.Manifest) is None  # a digest that is not a string
    assert receipts.key_of(path) == "k"


def test_the_keys_are_the_same_on_every_host(ctx: Context) -> None:
    """A target customized natively on an arm64 machine and by emulation on this one share
    their cache entries: no key names the host or the way it customizes."""
    from kmi.plan import Plan

    arm = ctx.targets["debian-12-arm64"]
    here = ctx.plan.keys(arm)
    elsewhere = Plan(
        ctx.settings, ctx.paths, ctx.plan.lock, ctx.tool_versions, "arm64", ctx.plan.engine
    ).keys(arm)
    assert here is not None and here.sysprep is not None
    assert here == elsewhere


def test_the_recipe_ignores_the_tools_but_not_what_shapes_the_image(ctx: Context) -> None:
    """A runner with other libguestfs and qemu-img versions makes other keys (its local
    cache) but the same recipe, so the discover job can tell from the registry what needs
    a build job; a change to the catalogue entry changes both."""
    from kmi.plan import Plan
    from kmi.stages.containerdisk import RECIPE

    target = ctx.targets[TARGET]
    here = ctx.plan.keys(target)
    assert here is not None and here.spec is not None
    recipe = ctx.plan.recipe(target)
    assert recipe and here.spec.annotations[RECIPE] == recipe == here.spec.labels[RECIPE]

    def upgraded() -> dict[str, str]:
        return {name: version + " (upgraded)" for name, version in ctx.tool_versions().items()}

    runner = Plan(ctx.settings, ctx.paths, ctx.plan.lock, upgraded, "arm64", ctx.plan.engine)
    there = runner.keys(target)
    assert there is not None and there.sysprep != here.sysprep and there.build != here.build
    assert runner.recipe(target) == recipe
    flavor = ctx.targets[TARGET].flavor.source
    flavor.write_text(flavor.read_text().replace("customize:", "customize:\n  update: true", 1))
    again = Context()
    assert again.plan.recipe(again.targets[TARGET]) not in (None, recipe)
