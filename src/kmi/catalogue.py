"""The catalogue: `distros/<flavor>.yaml` -> frozen Flavor and Target objects.

The dataclasses below are the schema (see schema.py); docs/catalogue.md documents them.
Loading reports every problem of every file at once, as `file: .path.to.key: message`.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kmi import catalogue_checks as valid
from kmi import schema, templates
from kmi.errors import CatalogueError, VerificationError
from kmi.signatures import Pins

Tier = Literal["planned", "preview", "proposed", "stable"]
Security = Literal["auto", "selinux", "apparmor", "none"]
# the support tiers' criteria a machine checks (kmi.criteria; README, "Support tiers")
Criterion = Literal[
    "metadata", "signature", "size", "qcow2", "packages",
    "boot", "cloud-init", "agent", "ssh",
    "agent-ssh-key", "security", "network", "root-grows",
]  # fmt: skip
NAME = valid.NAME
GROW = re.compile(r"^(\+?[0-9]+[KMGT]?)?$")
MAX_FILE = 1 << 20  # a catalogue file is a few KiB; more is a mistake
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Arch(enum.StrEnum):
    """Architectures, by their OCI names."""

    AMD64 = "amd64"
    ARM64 = "arm64"
    S390X = "s390x"


def _doc(text: str, check: schema.Check | None = None) -> Any:
    meta: dict[str, Any] = {"doc": text}
    if check is not None:
        meta["check"] = check
    return meta


@dataclass(frozen=True)
class Version:
    """One maintained release of a flavor."""

    version: str = field(metadata=_doc("release version, e.g. '42', '24.04'", valid.name))
    name: str = field(default="", metadata=_doc("release name, e.g. 'noble', 'bookworm'"))
    arches: tuple[Arch, ...] = field(
        default=(), metadata=_doc("the arches of this version, if fewer than the flavor's")
    )
    latest: bool = field(default=False, metadata=_doc("also publish this version as `latest`"))


@dataclass(frozen=True)
class Discovery:
    """How `doit discover` finds the newest build of a version."""

    kind: Literal["listing", "dated-folders", "releases-json", "simplestreams"] = field(
        metadata=_doc("the upstream's way of publishing builds (see docs/catalogue.md)")
    )
    index: str = field(
        metadata=_doc(
            "URL of the page or JSON that lists builds", valid.url_template(templates.VERSION_VARS)
        )
    )
    match: str = field(
        default="",
        metadata=_doc(
            "listing, releases-json: regex of the image file name with a (?P<release>...) group",
            valid.regex_template(templates.VERSION_VARS, "release"),
        ),
    )
    folder: str = field(
        default="",
        metadata=_doc(
            "dated-folders: regex of a build folder name with a (?P<release>...) group",
            valid.regex_template(templates.VERSION_VARS, "release"),
        ),
    )
    file: str = field(
        default="",
        metadata=_doc(
            "dated-folders: the image file name in a build folder",
            valid.placeholders(templates.RELEASE_VARS),
        ),
    )
    pin: str = field(
        default="",
        metadata=_doc(
            "listing of a moving folder (latest/): the dated URL of the same file, which is "
            "what the lock pins",
            valid.url_template(templates.RELEASE_VARS | {"file"}, optional=True),
        ),
    )
    filter: dict[str, str] = field(
        default_factory=dict,
        metadata=_doc("releases-json: fields an entry must have, e.g. {variant: Cloud}"),
    )
    product: str = field(
        default="",
        metadata=_doc("simplestreams: product id", valid.placeholders(templates.VERSION_VARS)),
    )
    item: str = field(default="disk1.img", metadata=_doc("simplestreams: item ftype"))
    base: str = field(
        default="",
        metadata=_doc("simplestreams: URL that item paths are relative to"),
    )


@dataclass(frozen=True)
class Track:
    """A policy that follows new versions upstream, e.g. "keep the newest two"."""

    index: str = field(
        metadata=_doc("URL of the page listing versions", valid.url_template(frozenset({"flavor"})))
    )
    match: str = field(
        metadata=_doc(
            "regex of a version in that page, with a (?P<version>...) group",
            valid.regex_template(frozenset({"flavor"}), "version"),
        )
    )
    json_key: str = field(
        default="",
        metadata=_doc(
            "the index is a JSON list: match each entry's value of this key, whole, instead of "
            "searching the page text (however the JSON is laid out)"
        ),
    )
    keep: int = field(default=2, metadata=_doc("how many of the newest versions to maintain"))
    latest: bool = field(default=False, metadata=_doc("publish the newest of them as `latest`"))


@dataclass(frozen=True)
class Checksum:
    """Where upstream publishes the digest of each image."""

    url: str = field(
        metadata=_doc("URL of the checksum file", valid.url_template(templates.FILE_VARS))
    )
    format: Literal["bsd", "gnu", "single", "json"] = field(
        metadata=_doc("bsd: 'SHA256 (f) = h'; gnu: 'h  f' or 'h *f'; single: one digest; json")
    )
    algorithm: Literal["sha256", "sha512"] = field(metadata=_doc("digest algorithm"))


@dataclass(frozen=True)
class Signature:
    """How the checksum file is signed, and whose keys are trusted."""

    kind: Literal["clearsigned", "detached", "none"] = field(
        metadata=_doc("clearsigned checksum file, detached signature, or none (unsigned)")
    )
    of: Literal["checksum", "image"] = field(
        default="checksum",
        metadata=_doc("detached: what is signed, the checksum file or the image itself"),
    )
    url: str = field(
        default="",
        metadata=_doc(
            "detached: URL of the signature",
            valid.url_template(templates.SIGNATURE_VARS, optional=True),
        ),
    )
    keys: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "the public key files, relative to the catalogue folder (kept in the repository, "
            "never fetched)",
            valid.key_files,
        ),
    )
    fingerprints: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "pinned primary-key fingerprints (40 hex digits) trusted for every version",
            valid.fingerprints,
        ),
    )
    per_version: dict[str, tuple[str, ...]] = field(
        default_factory=dict,
        metadata=_doc(
            "pinned fingerprints per version, for upstreams with one key per release "
            "(Fedora, AlmaLinux); a version listed here trusts only its own keys",
            lambda value: next(filter(None, map(valid.fingerprints, value.values())), None),
        ),
    )
    why: str = field(
        default="",
        metadata=_doc("kind none: why upstream is treated as unsigned (said to users)"),
    )

    def pins(self, version: str, what: str) -> Pins:
        """The fingerprints trusted for `version`; a VerificationError when there are none."""
        pinned = self.per_version.get(version, self.fingerprints)
        if not pinned:
            listed = ", ".join(sorted(self.per_version))
            where = (
                f"upstream.signature.per_version has no entry for {version!r} (it has {listed})"
                if self.per_version
                else "no key fingerprints are pinned (upstream.signature.fingerprints)"
            )
            raise VerificationError(
                f"{what}: {where}; pin the upstream's signing keys, or set "
                "signature.kind: none if it signs nothing"
            )
        elsewhere = tuple(
            (f, v) for v, fps in sorted(self.per_version.items()) if v != version for f in fps
        )
        return Pins(version, pinned, elsewhere)


@dataclass(frozen=True)
class Upstream:
    """Where and how upstream publishes its cloud images."""

    arches: dict[Arch, str] = field(
        metadata=_doc("the arches built, each with the upstream's own name (amd64: x86_64)")
    )
    discovery: Discovery = field(metadata=_doc("how builds are found"))
    checksum: Checksum = field(metadata=_doc("where digests are published"))
    signature: Signature = field(metadata=_doc("how the checksum file is signed"))
    compression: Literal["none", "xz", "gz", "bz2"] = field(
        default="none", metadata=_doc("transport compression removed after download")
    )


@dataclass(frozen=True)
class FileSpec:
    """A file written into the image."""

    path: str = field(metadata=_doc("absolute path in the guest", valid.guest_path))
    content: str = field(metadata=_doc("file content"))
    mode: str = field(default="0644", metadata=_doc("octal mode", valid.octal))


@dataclass(frozen=True)
class CopyIn:
    """A host file or folder copied into the image."""

    source: str = field(
        metadata=_doc("host path, relative to the catalogue folder", valid.relative_path)
    )
    dest: str = field(metadata=_doc("guest folder it is copied into", valid.guest_path))


@dataclass(frozen=True)
class Customize:
    """What the sysprep stage changes in the guest, in this order: grow, copy_in, files,
    update, packages, commands, services, firstboot_commands, post_commands, scripts,
    selinux_relabel."""

    grow: str = field(
        default="",
        metadata=_doc(
            "grow the virtual disk first: '+2G' or a size such as '10G'",
            lambda v: None if GROW.match(v) else f"expected '+2G' or '10G', got {v!r}",
        ),
    )
    copy_in: tuple[CopyIn, ...] = field(
        default=(), metadata=_doc("host files or folders copied into the guest first")
    )
    packages: tuple[str, ...] = field(default=(), metadata=_doc("packages to install"))
    update: bool = field(default=False, metadata=_doc("update all packages first"))
    commands: tuple[str, ...] = field(
        default=(), metadata=_doc("shell commands run in the guest after installing")
    )
    post_commands: tuple[str, ...] = field(
        default=(), metadata=_doc("shell commands run in the guest last")
    )
    firstboot_commands: tuple[str, ...] = field(
        default=(), metadata=_doc("shell commands run once at the VM's first boot")
    )
    files: tuple[FileSpec, ...] = field(default=(), metadata=_doc("files to write"))
    services: tuple[str, ...] = field(default=(), metadata=_doc("systemd units to enable"))
    selinux_relabel: bool = field(default=False, metadata=_doc("relabel SELinux contexts"))
    network: bool = field(
        default=False,
        metadata=_doc(
            "give the guest steps a network (the libguestfs appliance's, or the emulated "
            "guest's user-mode network)"
        ),
    )
    scripts: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "extra host scripts (relative to the catalogue), each run with the image's path",
            lambda paths: next(filter(None, map(valid.relative_path, paths)), None),
        ),
    )
    without_guest_steps: tuple[Arch, ...] = field(
        default=(),
        metadata=_doc(
            "arches whose builds leave out the steps that run guest programs (update, "
            "packages, commands, services, post_commands), on every host"
        ),
    )


@dataclass(frozen=True)
class Sysprep:
    """virt-sysprep operations: what host identity is removed."""

    operations: tuple[str, ...] = field(
        default=("defaults",),
        metadata=_doc("virt-sysprep --operations list, e.g. [defaults, -ssh-userdir]"),
    )


@dataclass(frozen=True)
class ContainerDisk:
    """Metadata of the published containerdisk."""

    user: str = field(metadata=_doc("the default cloud-init user"))
    instancetype: str = field(default="u1.medium", metadata=_doc("default instancetype"))
    preference: str = field(
        default="",
        metadata=_doc(
            "default preference; may use {version}", valid.placeholders(templates.VERSION_VARS)
        ),
    )
    preferences: dict[Arch, str] = field(
        default_factory=dict, metadata=_doc("per-arch preference overrides")
    )


@dataclass(frozen=True)
class BootTest:
    """The boot test (test:T) and whether publishing waits for it."""

    os_id: str = field(
        default="",
        metadata=_doc(
            "the ID of /etc/os-release the guest agent must report (default: the flavor name)"
        ),
    )
    required: bool | None = field(
        default=None,
        metadata=_doc(
            "publish only images whose boot test passed; default: yes, except for the tiers "
            "in KMI_UNTESTED_TIERS (preview)"
        ),
    )
    security: Security = field(
        default="auto",
        metadata=_doc(
            "the access control the distribution ships on: selinux (must be enforcing), "
            "apparmor (must be enabled), none; auto: SELinux enforcing if the guest has "
            "SELinux, else AppArmor enabled"
        ),
    )
    packages: tuple[str, ...] = field(
        default=("qemu-guest-agent",),
        metadata=_doc("packages the image must contain (the `packages` criterion)"),
    )
    waive: dict[Criterion, str] = field(
        default_factory=dict,
        metadata=_doc(
            'criteria (README, "Support tiers") this flavor\'s tier does not require, each '
            "with the reason, shown in the image README"
        ),
    )


@dataclass(frozen=True)
class Flavor:
    """One catalogue file: a distribution line and everything needed to build it."""

    name: str = field(metadata=_doc("flavor name; the file must be <name>.yaml", valid.name))
    description: str = field(metadata=_doc("one sentence for users"))
    homepage: str = field(metadata=_doc("upstream home page"))
    license: str = field(metadata=_doc("upstream licence of the image"))
    tier: Tier = field(metadata=_doc("support tier"))
    versions: tuple[Version, ...] = field(metadata=_doc("versions to maintain"))
    upstream: Upstream = field(metadata=_doc("where the images come from"))
    containerdisk: ContainerDisk = field(metadata=_doc("published image metadata"))
    documentation: str = field(default="", metadata=_doc("upstream docs for these images"))
    track: Track | None = field(default=None, metadata=_doc("follow new versions upstream"))
    customize: Customize = field(default_factory=Customize, metadata=_doc("guest changes"))
    sysprep: Sysprep = field(default_factory=Sysprep, metadata=_doc("sysprep operations"))
    test: BootTest = field(default_factory=BootTest, metadata=_doc("boot test and publish gate"))
    source: Path = field(default=Path(), metadata={"internal": True})

    def arches_of(self, version: Version) -> tuple[Arch, ...]:
        return version.arches or tuple(self.upstream.arches)


@dataclass(frozen=True)
class Target:
    """One disk for one arch: `<flavor>-<version>-<arch>`."""

    flavor: Flavor
    version: Version
    arch: Arch

    @property
    def name(self) -> str:
        return f"{self.flavor.name}-{self.version.version}-{self.arch}"

    @property
    def image(self) -> str:
        return f"{self.flavor.name}-{self.version.version}"

    @property
    def upstream_arch(self) -> str:
        return self.flavor.upstream.arches[self.arch]

    def template_values(self) -> dict[str, str]:
        """The values every template of this target may use."""
        return {
            "flavor": self.flavor.name,
            "version": self.version.version,
            "name": self.version.name,
            "arch": str(self.arch),
            "uarch": self.upstream_arch,
        }


@dataclass(frozen=True)
class Catalogue:
    """All flavors, in file-name order."""

    flavors: tuple[Flavor, ...]

    def flavor(self, name: str) -> Flavor:
        for f in self.flavors:
            if f.name == name:
                return f
        raise KeyError(name)


def _cross_checks(flavor: Flavor) -> list[str]:
    """Rules that span several keys."""
    problems = []
    seen: set[str] = set()
    for i, v in enumerate(flavor.versions):
        if v.version in seen:
            problems.append(f".versions[{i}].version: {v.version!r} is listed twice")
        seen.add(v.version)
        if v.latest and any(w.latest for w in flavor.versions[:i]):
            problems.append(f".versions[{i}].latest: only one version can be tagged latest")
        for arch in v.arches:
            if arch not in flavor.upstream.arches:
                problems.append(f".versions[{i}].arches: {arch} is not in .upstream.arches")
    d = flavor.upstream.discovery
    needs = {
        "listing": ("match",),
        "dated-folders": ("folder", "file"),
        "releases-json": ("match",),
        "simplestreams": ("product", "base"),
    }[d.kind]
    for key in needs:
        if not getattr(d, key):
            problems.append(f".upstream.discovery.{key}: required when kind is {d.kind}")
    sig = flavor.upstream.signature
    if sig.kind == "detached" and not sig.url:
        problems.append(".upstream.signature.url: required when kind is detached")
    if d.pin and d.kind != "listing":
        problems.append(".upstream.discovery.pin: only for kind: listing")
    if sig.of == "image" and sig.kind != "detached":
        problems.append(".upstream.signature.of: 'image' needs kind: detached")
    if sig.kind == "none" and not sig.why.strip():
        problems.append(
            ".upstream.signature.why: required when kind is none: say why upstream is treated "
            "as unsigned (users are told)"
        )
    return problems


def _read_yaml(path: Path) -> Any:
    """The YAML document of one catalogue file; a CatalogueError for anything else."""
    try:
        with path.open("rb") as src:
            raw = src.read(MAX_FILE + 1)
    except OSError as err:
        raise CatalogueError([f"{path}: cannot read: {err.strerror}"]) from None
    if len(raw) > MAX_FILE:
        raise CatalogueError([f"{path}: larger than 1 MiB; a catalogue file is a few KiB"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        problem = f"{path}:{line}: not UTF-8 (byte {err.start}); save it as UTF-8"
        raise CatalogueError([problem]) from None
    try:
        for event in yaml.parse(text, Loader=LOADER):
            if isinstance(event, yaml.AliasEvent):  # expanded, aliases can blow up a file
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise CatalogueError([f"{path}:{line}: YAML aliases (*name) are not supported"])
        return yaml.load(text, Loader=LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CatalogueError([f"{path}{where}: invalid YAML: {problem}"]) from None
    except RecursionError:
        raise CatalogueError([f"{path}: nested too deeply to be a catalogue file"]) from None


def load_flavor(path: Path) -> tuple[Flavor | None, list[str]]:
    """Parse and validate one catalogue file; problems come back prefixed with the file."""
    try:
        data = _read_yaml(path)
    except CatalogueError as err:
        return None, err.problems
    problems: list[str] = []
    try:
        flavor = schema.build(Flavor, data, "", problems)
    except RecursionError:
        return None, [f"{path}: nested too deeply to be a catalogue file"]
    if flavor is not schema.INVALID:
        problems += _cross_checks(flavor)
        if flavor.name != path.stem:
            problems.append(f".name: {flavor.name!r} does not match the file name {path.name!r}")
    located = [f"{path}: {p}" for p in problems]
    if located or flavor is schema.INVALID:
        return None, located
    return _with_source(flavor, path), []


def _with_source(flavor: Flavor, path: Path) -> Flavor:
    return dataclasses.replace(flavor, source=path)


def load_catalogue(directory: Path) -> Catalogue:
    """Load every `*.yaml` in `directory`; raise CatalogueError listing every problem."""
    if not directory.is_dir():
        raise CatalogueError([f"{directory}: catalogue folder not found (set KMI_CATALOGUE)"])
    flavors, problems = [], []
    for path in sorted(directory.glob("*.yaml")):
        flavor, found = load_flavor(path)
        problems += found
        if flavor is not None:
            flavors.append(flavor)
    if problems:
        raise CatalogueError(problems)
    if not flavors:
        raise CatalogueError([f"{directory}: no <flavor>.yaml files in the catalogue folder"])
    return Catalogue(tuple(flavors))


def targets_of(flavor: Flavor, versions: tuple[Version, ...] | None = None) -> list[Target]:
    """Every target of a flavor, for the given versions (default: the catalogue's)."""
    chosen = flavor.versions if versions is None else versions
    return [Target(flavor, v, a) for v in chosen for a in flavor.arches_of(v)]
