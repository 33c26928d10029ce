"""The plan: every stage's key for each target and image, computed once per run, with no doit
in it. The doit glue asks it whether a stage is needed; the actions take their keys from it.

Keys chain as osbuild chains stage ids: each stage's key hashes its own settings and the key
of its input, so a change anywhere upstream reaches every stage after it.

    download -> checksum -> sysprep -> sparsify -> build (engine) -> manifest (per image)
                                                 |        \\-> push (by digest, for CI)
                                                 |-> test  \\-> verify (with sbom)
                                                 \\-> sbom

One rule decides whether a stage is needed (`Plan.needed`): not when its receipt holds the
key computed now and its output exists, nor when the stage it only feeds is itself not
needed. So a build folder restored without its intermediate files (or its download cache)
needs no upstream byte and no libguestfs run while its final disk is current.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kmi import criteria, oci, receipts, releases
from kmi.catalogue import Flavor, Target
from kmi.errors import KmiError
from kmi.keys import stage_key
from kmi.lock import Lock, LockEntry
from kmi.maintained import source_key, upstream_config
from kmi.paths import Paths
from kmi.settings import Settings
from kmi.stages import boottest, containerdisk
from kmi.stages import sbom as sbom_stage
from kmi.stages import sparsify as sparsify_stage
from kmi.stages import sysprep as sysprep_stage
from kmi.stages.checksum import checksum_key
from kmi.stages.download import download_key

STAGES = (
    "download", "checksum", "sysprep", "sparsify", "sbom", "build", "test", "verify", "push",
)  # fmt: skip
PUSH_VERSION = "1"
# A stage whose output only feeds the next one: not needed while that one is not needed.
FEEDS = {"download": "checksum", "checksum": "sysprep", "sysprep": "sparsify"}


class BuildKeys(Protocol):
    """What the plan asks of an engine (kmi.engines): its build key and output."""

    def build_key(self, target: Target, native_key: str) -> str | None: ...

    def build_output(self, name: str) -> Path | None: ...


@dataclass(frozen=True)
class TargetKeys:
    """One target's stage keys; None where an input is missing (the action says which)."""

    entry: LockEntry
    download: str
    checksum: str
    sysprep: str | None = None
    sparsify: str | None = None
    spec: oci.ImageSpec | None = None
    native_build: str | None = None
    build: str | None = None
    test: str | None = None
    push: str | None = None  # None without a registry
    sbom: str | None = None
    verify: str | None = None

    def of(self, stage: str) -> str | None:
        key: str | None = getattr(self, stage)
        return key


@dataclass(frozen=True)
class IndexPlan:
    """An image's index: its key, the targets it covers and its annotations."""

    key: str
    chosen: tuple[Target, ...]
    annotations: dict[str, str]
    release: str


class Plan:
    """Keys of every target and image for one state of the lock; built by kmi.context."""

    def __init__(
        self,
        settings: Settings,
        paths: Paths,
        lock: Lock,
        tool_versions: Callable[[], Mapping[str, str]],
        host: str,
        engine: BuildKeys,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.lock = lock
        self._tool_versions = tool_versions
        self.host = host
        self.engine = engine
        self._keys: dict[str, TargetKeys | None] = {}
        self._pinned: dict[str, LockEntry | None] = {}
        self._early: dict[str, TargetKeys | None] = {}
        self._flavors: dict[tuple[str, str], Any] = {}  # per-flavor parts of the keys

    # --- keys -------------------------------------------------------------------------------

    def pinned(self, target: Target) -> LockEntry | None:
        """The target's lock entry, if it was found with the catalogue's current settings."""
        name = target.name
        if name not in self._pinned:
            entry = self.lock.targets.get(name)
            upstream = self._per_flavor("upstream", target.flavor, upstream_config)
            fits = entry is not None and entry.source == source_key(target, upstream)
            self._pinned[name] = entry if fits else None
        return self._pinned[name]

    def _per_flavor(self, part: str, flavor: Flavor, make: Callable[[Flavor], Any]) -> Any:
        """A part of the keys that only the flavor decides, made once per plan."""
        at = (part, flavor.name)
        if at not in self._flavors:
            self._flavors[at] = make(flavor)
        return self._flavors[at]

    def keys(self, target: Target) -> TargetKeys | None:
        """Every stage key of `target`, computed on first use; None when it is not pinned."""
        if target.name not in self._keys:
            self._keys[target.name] = self._compute(target)
        return self._keys[target.name]

    def _download_keys(self, target: Target) -> TargetKeys | None:
        """Only the download and checksum keys: what their up-to-date checks need (the
        later stages' keys cost more, and a no-op `doit checksum` needs none of them)."""
        name = target.name
        if name in self._keys:
            return self._keys[name]
        if name not in self._early:
            entry = self.pinned(target)
            if entry is None:
                self._early[name] = None
            else:
                dkey = download_key(entry, target.flavor.upstream.compression)
                self._early[name] = TargetKeys(entry, dkey, checksum_key(entry, dkey))
        return self._early[name]

    def versions(self, tools: tuple[Any, ...]) -> dict[str, str]:
        """The versions of `tools` on this machine (what the stage keys hold)."""
        every = self._tool_versions()
        return {t.command: every[t.command] for t in tools}

    def _compute(self, target: Target) -> TargetKeys | None:
        early = self._download_keys(target)
        if early is None:
            return None
        entry, dkey, ckey = early.entry, early.download, early.checksum
        try:
            versions = self.versions(sysprep_stage.TOOLS)
            config = self._per_flavor("sysprep", target.flavor, sysprep_stage.flavor_config)
            skey = sysprep_stage.sysprep_key(target, ckey, versions, config)
            disk = sparsify_stage.sparsify_key(skey, self.versions(sparsify_stage.TOOLS))
            sbom = sbom_stage.sbom_key(target, disk, self.versions(sbom_stage.TOOLS))
        except KmiError:  # a tool or a host file is missing: the action says which
            return TargetKeys(entry, dkey, ckey)
        test = boottest.boot_test_key(target, disk)
        compression = self.settings.layer_compression
        try:
            spec = containerdisk.image_spec(
                target, entry, disk, self.settings.source_date_epoch, self.settings.source_url
            )
        except KmiError:
            return TargetKeys(entry, dkey, ckey, skey, disk, test=test, sbom=sbom)
        # the recipe: the same chain without the tools' versions, the same on every machine
        recipe_disk = sparsify_stage.sparsify_key(
            sysprep_stage.sysprep_key(target, ckey, {}, config), {}
        )
        spec = containerdisk.with_recipe(spec, recipe_disk, compression)
        native = containerdisk.build_key(disk, spec, compression)
        build = self.engine.build_key(target, native)
        registry = self.settings.registry
        push = None
        if build is not None and registry is not None:
            where = f"{registry.host}/{registry.repository(target.flavor.name)}"
            push = stage_key("push", {"to": where}, {"kmi-push": PUSH_VERSION}, [build])
        verify = None
        if build is not None:
            verify = criteria.verify_key(target, build, sbom, self.settings.layer_limit)
        return TargetKeys(
            entry, dkey, ckey, skey, disk, spec, native, build, test, push, sbom, verify
        )

    def recipe(self, target: Target) -> str | None:
        """What the target's per-arch image is made from, the same on every machine (its
        build key without the tools' versions); None when it cannot be planned yet."""
        keys = self.keys(target)
        return None if keys is None or keys.spec is None else keys.spec.labels[containerdisk.RECIPE]

    def key(self, target: Target, stage: str) -> str | None:
        early = stage in ("download", "checksum")
        keys = self._download_keys(target) if early else self.keys(target)
        return None if keys is None else keys.of(stage)

    # --- what is needed -----------------------------------------------------------------------

    def output(self, target: Target, stage: str) -> Path | None:
        """The file that must exist besides the receipt for the stage to count as done."""
        name = target.name
        if stage in ("download", "checksum"):
            entry = self.pinned(target)
            compression = target.flavor.upstream.compression
            return None if entry is None else self.paths.image(entry.digest, compression)
        if stage == "sysprep":
            return self.paths.sysprep_image(name)
        if stage in ("sparsify", "test"):
            return self.paths.disk(name)
        if stage == "sbom":
            return self.paths.sbom(name)
        if stage == "build":
            return self.engine.build_output(name)
        if stage in ("push", "verify"):
            return None  # the registry holds it; the receipt is all verify makes
        raise ValueError(stage)

    def recorded(self, target: Target, stage: str) -> bool:
        """The stage's receipt holds the key computed now (its output may be elsewhere: a
        boot test passed on this disk, a build pushed by another job)."""
        key = self.key(target, stage)
        return key is not None and receipts.key_of(self.paths.receipt(target.name, stage)) == key

    def current(self, target: Target, stage: str) -> bool:
        """Recorded, and its output is in place."""
        if not self.recorded(target, stage):
            return False
        output = self.output(target, stage)
        return output is None or output.exists()

    def needed(self, target: Target, stage: str) -> bool:
        """The one rule: a stage is needed unless it is current or all it feeds is not needed."""
        if self.current(target, stage):
            return False
        feeds = FEEDS.get(stage)
        return feeds is None or self.needed(target, feeds)

    # --- images -----------------------------------------------------------------------------

    def current_builds(self, targets: list[Target]) -> dict[str, str]:
        """arch -> build key, for the targets whose per-arch image is built and current."""
        return {
            str(t.arch): key
            for t in targets
            if (key := self.key(t, "build")) is not None and self.recorded(t, "build")
        }

    def annotations(self, chosen: list[Target]) -> tuple[dict[str, str], str]:
        """The index's annotations over pinned targets, from the newest release among them."""
        first = chosen[0]
        entry = self.pinned(first)
        if entry is None:
            raise KmiError(f"{first.name}: not pinned in the lock; run: doit discover")
        created, _ = containerdisk.created_at(entry, self.settings.source_date_epoch)
        release = releases.newest((self.pinned(t) or entry).release for t in chosen)
        found = containerdisk.image_annotations(
            first.flavor, first.version.version, release, created, self.settings.source_url
        )
        return found, release

    def index(self, image: str, targets: list[Target]) -> IndexPlan | None:
        """The image's index over its current builds (all arches, or with
        KMI_INDEX_ARCHES=built those built); None when it cannot be made yet."""
        builds = self.current_builds(targets)
        if self.settings.index_arches == "all" and len(builds) < len(targets):
            return None
        chosen = [t for t in targets if str(t.arch) in builds]
        if not chosen:
            return None
        annotations, release = self.annotations(chosen)
        key = containerdisk.index_key(builds, annotations, image)
        return IndexPlan(key, tuple(chosen), annotations, release)
