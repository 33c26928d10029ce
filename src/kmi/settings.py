"""Where kmi runs: every setting in one declarative table (name, default, parser, meaning),
parsed and validated once when doit loads, before any stage runs. README.md's settings
table is written from it (`python -m kmi.settings README.md`; a test fails when it is stale).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmi.errors import KmiError
from kmi.registry_ref import Registry

# Boot-test deadlines that hold under TCG on a small machine; KVM needs far less.
DEFAULT_TEST_TIMEOUTS = (("amd64", 900.0), ("arm64", 1800.0), ("s390x", 1800.0))
# GitHub-hosted runner labels per arch (the labels the issue names); s390x has none by default
DEFAULT_CI_RUNNERS = (("amd64", "ubuntu-24.04"), ("arm64", "ubuntu-24.04-arm"))
ARCHES = ("amd64", "arm64", "s390x")
TIERS = ("planned", "preview", "proposed", "stable")
MAX_NUMBER = 1e9  # seconds, retries or MiB: anything above is a typo, not a setting
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Run settings, typed; each field is one row of SETTINGS below."""

    catalogue_dir: Path
    build_dir: Path
    cache_dir: Path
    mirror: str | None = None
    require_signed: bool = False
    record: Path | None = None
    locked: bool = False
    http_retries: int = 5
    http_backoff: float = 1.0
    http_timeout: float = 30.0
    progress: str = "auto"  # "auto", "bar", "lines" or "off"
    accel: str = "auto"  # "auto", "kvm" or "tcg"
    registry: Registry | None = None  # None: publish is a dry run
    registry_insecure: bool = False
    registry_user: str = ""
    registry_password: str = field(default="", repr=False)
    signing_key: Path | None = None
    signing_password: str = field(default="", repr=False)
    layer_compression: str = "gzip-stored"
    index_arches: str = "all"
    publish_from: str = "local"
    keep_releases: int = 5
    source_url: str = ""
    source_date_epoch: int | None = None
    test_timeouts: tuple[tuple[str, float], ...] = DEFAULT_TEST_TIMEOUTS
    guestfs_timeout: float = 3600.0
    customize: str = "auto"  # "auto", "native" or "emulated"
    test_memory: int = 2048
    untested_tiers: frozenset[str] = frozenset({"preview"})
    stable_criteria: frozenset[str] = frozenset()  # parsed from its default: every one
    proposed_criteria: frozenset[str] = frozenset()
    layer_limit: int = 10_000_000_000
    docs_dir: Path = Path("docs/images")
    stage_cache: Path | Registry | None = None  # a folder, or a registry repository
    engine: str = "native"
    ci_runners: tuple[tuple[str, str], ...] = DEFAULT_CI_RUNNERS

    def test_timeout(self, arch: str) -> float:
        return dict(self.test_timeouts).get(arch, max(t for _, t in self.test_timeouts))

    @property
    def lock_file(self) -> Path:
        return self.catalogue_dir / "lock.json"


class Bad(ValueError):
    """A parser's complaint; load_settings puts the variable and its value in front."""


Parser = Callable[[str, "Reading"], Any]


@dataclass(frozen=True)
class Reading:
    """What a parser may look at besides its own value: the folder relative paths start
    from, and the other variables (KMI_REGISTRY's scheme depends on KMI_REGISTRY_INSECURE)."""

    root: Path
    env: Mapping[str, str]


@dataclass(frozen=True)
class Setting:
    """One row: the variable, the Settings field it fills (None: read by the tests or the
    demo only), its default as written in the README, how it is parsed, what it means."""

    name: str
    attr: str | None
    default: str
    parse: Parser
    meaning: str
    empty_is_a_value: bool = False  # set but empty means something (else: the default)


# --- parsers ------------------------------------------------------------------------------


def path(raw: str, reading: Reading) -> Path:
    return reading.root / raw


def optional_path(raw: str, reading: Reading) -> Path | None:
    return reading.root / raw if raw else None


def text(raw: str, reading: Reading) -> str:
    return raw


def optional_text(raw: str, reading: Reading) -> str | None:
    return raw or None


def flag(raw: str, reading: Reading) -> bool:
    value = raw.lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise Bad("expected one of 1/true/yes/on or 0/false/no/off")


def number(raw: str, reading: Reading) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise Bad("expected a number") from None
    if not math.isfinite(value) or value > MAX_NUMBER:
        raise Bad(f"expected a number below {MAX_NUMBER:.0f}")
    if value < 0:
        raise Bad("expected a number >= 0")
    return value


def whole(raw: str, reading: Reading) -> int:
    return int(number(raw, reading))


def positive(raw: str, reading: Reading) -> int:
    value = whole(raw, reading)
    if value < 1:
        raise Bad("expected a whole number of at least 1")
    return value


UNITS = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def byte_count(raw: str, reading: Reading) -> int:
    """Bytes: a whole number, or one with a unit (10GB, 9.5GiB, 500MB)."""
    number_part = raw.rstrip("KMGTiBb ").strip()
    unit = raw[len(number_part) :].strip().upper()
    try:
        value = float(number_part) * UNITS[unit]
    except (ValueError, KeyError):
        raise Bad(
            "expected bytes: a number, or one with KB, MB, GB, TB, KiB, MiB, GiB, TiB"
        ) from None
    if not math.isfinite(value) or value < 1 or value >= 2**63:
        raise Bad("expected at least 1 byte and less than 8 EiB")
    return int(value)


def choice(*allowed: str) -> Parser:
    def parse(raw: str, reading: Reading) -> str:
        if raw not in allowed:
            raise Bad(f"expected {', '.join(allowed[:-1])} or {allowed[-1]}")
        return raw

    return parse


def mirror(raw: str, reading: Reading) -> str | None:
    return raw.rstrip("/") or None


def registry(raw: str, reading: Reading) -> Registry | None:
    if not raw:
        return None
    insecure = flag(reading.env.get("KMI_REGISTRY_INSECURE", "").strip(), reading)
    try:
        return Registry.parse(raw, insecure)
    except KmiError as err:
        raise Bad(str(err).split(": ", 1)[1]) from None


def epoch(raw: str, reading: Reading) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Bad("expected seconds since 1970") from None


def timeouts(raw: str, reading: Reading) -> tuple[tuple[str, float], ...]:
    """One number of seconds for every arch, or arch=seconds pairs."""
    hint = "expected seconds (600) or arch=seconds pairs (amd64=600,arm64=1800)"
    found = dict(DEFAULT_TEST_TIMEOUTS)
    try:
        if "=" not in raw:
            found = dict.fromkeys(found, float(raw))
        else:
            for pair in raw.split(","):
                arch, _, seconds = pair.partition("=")
                if arch.strip() not in found:
                    raise Bad(f"{hint}; unknown arch {arch.strip()!r}")
                found[arch.strip()] = float(seconds)
    except Bad:
        raise
    except ValueError:
        raise Bad(hint) from None
    if any(not 0 < v <= MAX_NUMBER for v in found.values()):
        raise Bad(f"{hint}; every timeout must be above 0 and at most 1e9")
    return tuple(found.items())


def runners(raw: str, reading: Reading) -> tuple[tuple[str, str], ...]:
    """arch=label pairs, each replacing that arch's default label."""
    found = dict(DEFAULT_CI_RUNNERS)
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        arch, _, label = pair.partition("=")
        if arch.strip() not in ARCHES or not label.strip():
            raise Bad(
                "expected arch=label pairs, e.g. arm64=ubuntu-24.04-arm,s390x=my-s390x-runner"
            )
        found[arch.strip()] = label.strip()
    return tuple(found.items())


def tiers(raw: str, reading: Reading) -> frozenset[str]:
    chosen = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = sorted(chosen - set(TIERS))
    if unknown:
        raise Bad(
            f"unknown tier {unknown[0]!r}; expected some of {', '.join(TIERS)} "
            "(comma-separated), or empty to gate every tier"
        )
    return chosen


def criteria(raw: str, reading: Reading) -> frozenset[str]:
    from kmi.criteria import parse_list

    try:
        return parse_list(raw)
    except ValueError as err:
        raise Bad(str(err)) from None


def stage_cache(raw: str, reading: Reading) -> Path | Registry | None:
    """A folder (a path or file:///path) or docker://host[:port]/repository."""
    if not raw:
        return None
    if raw.startswith("docker://"):
        where = raw[len("docker://") :].rstrip("/")
        hint = "expected docker://host[:port]/repository with a lowercase repository"
        try:
            insecure = flag(reading.env.get("KMI_REGISTRY_INSECURE", "").strip(), reading)
            found = Registry.parse(where, insecure)
        except KmiError:
            raise Bad(f"{hint}, e.g. docker://ghcr.io/acme/kmi-cache") from None
        if not found.prefix:
            raise Bad("name the repository after the host, e.g. docker://ghcr.io/acme/kmi-cache")
        return found
    folder = raw[len("file://") :] if raw.startswith("file://") else raw
    if "://" in folder:
        raise Bad(
            "give a folder (a path or file:///path) or a registry repository "
            "(docker://host/repository)"
        )
    return (reading.root / Path(folder).expanduser()).resolve()


def documented(raw: str, reading: Reading) -> str:
    """Read elsewhere (the tests, the demo): documented here, not parsed."""
    return raw


# --- the table ----------------------------------------------------------------------------

SETTINGS: tuple[Setting, ...] = (
    Setting("KMI_CATALOGUE", "catalogue_dir", "distros", path,
            "the catalogue folder (flavor YAML files and `lock.json`)"),
    Setting("KMI_BUILD_DIR", "build_dir", "build", path, "per-target outputs and receipts"),
    Setting("KMI_CACHE_DIR", "cache_dir", "cache", path,
            "content-addressed downloads and doit's state file"),
    Setting("KMI_MIRROR", "mirror", "", mirror,
            "fetch every upstream `https://HOST/PATH` from `<KMI_MIRROR>/HOST/PATH` (air-gapped "
            "and CI mirrors); the lock still records the upstream URL"),
    Setting("KMI_REQUIRE_SIGNED", "require_signed", "0", flag,
            "`1`: refuse flavors whose upstream signs nothing (`signature.kind: none`): discovery "
            "pins nothing for them, `download` and `build` stop with one line"),
    Setting("KMI_RECORD", "record", "", optional_path,
            "a folder: `discover` keeps every index, checksum file and signature it fetched "
            "there, mirror-shaped, to replay later as `KMI_MIRROR`"),
    Setting("KMI_LOCKED", "locked", "0", flag,
            "`1`: a target missing from the lock (or pinned with other upstream settings) is an "
            "error, not discovered"),
    Setting("KMI_HTTP_RETRIES", "http_retries", "5", whole,
            "retries of a transient failure (5xx, 408, 429, connection resets, timeouts), for "
            "upstreams, the registry and the stage cache alike"),
    Setting("KMI_HTTP_BACKOFF", "http_backoff", "1.0", number,
            "first retry delay in seconds, doubled each time (capped at 60; `Retry-After` wins)"),
    Setting("KMI_HTTP_TIMEOUT", "http_timeout", "30", number,
            "seconds to wait for a connection or for data"),
    Setting("KMI_PROGRESS", "progress", "auto", choice("auto", "bar", "lines", "off"),
            "`bar` on a terminal, `lines` (a few plain lines) otherwise; or `off`"),
    Setting("KMI_ACCEL", "accel", "auto", choice("auto", "kvm", "tcg"),
            "`kvm` or `tcg` for libguestfs; `auto` boots the host kernel under KVM once (about a "
            "second where KVM works, 10 s where it hangs) and falls back to TCG, caching the "
            "verdict in `cache/accel.json`"),
    Setting("KMI_REGISTRY", "registry", "", registry,
            "where `publish` pushes: `host[:port][/path]`, images go to "
            "`<path>/<flavor>:<version>`; unset: a dry run. `doit publish --registry=...` (or "
            "`registry=...`) wins"),
    Setting("KMI_REGISTRY_INSECURE", "registry_insecure", "0", flag,
            "`1`: plain HTTP to a registry that is not on loopback"),
    Setting("KMI_REGISTRY_USER", "registry_user", "", text,
            "registry user name, with `KMI_REGISTRY_PASSWORD` (else the standard auth files)"),
    Setting("KMI_REGISTRY_PASSWORD", "registry_password", "", text,
            "registry password or token; never printed"),
    Setting("KMI_SIGNING_KEY", "signing_key", "", optional_path,
            "a PEM private key (ECDSA P-256 or RSA): `publish` signs each index and per-arch "
            "manifest it publishes with it, as cosign does (`sha256-<digest>.sig` beside the "
            "image), before moving a tag; unset: nothing is signed (see \"Signed images\")"),
    Setting("KMI_SIGNING_PASSWORD", "signing_password", "", text,
            "the signing key's passphrase, if it is encrypted; never printed"),
    Setting("KMI_LAYER_COMPRESSION", "layer_compression", "gzip-stored",
            choice("gzip-stored", "gzip", "zstd", "none"),
            "the layer: `gzip-stored`, `gzip` (zlib level 1), `zstd`, `none`"),
    Setting("KMI_INDEX_ARCHES", "index_arches", "all", choice("all", "built"),
            "`all`: `manifest:I` needs every arch of I built; `built`: index the arches whose "
            "containerdisk is built and current (the others are listed as left out)"),
    Setting("KMI_PUBLISH_FROM", "publish_from", "local", choice("local", "pushed"),
            "what `publish` indexes: `local`, the per-arch images of this build folder (built "
            "first when needed); `pushed`, those that `push:T` put in the registry by digest "
            "(their receipts, e.g. from other CI jobs) and, for the other arches, what the "
            "registry already holds made from the same recipe: it builds and uploads no disk"),
    Setting("KMI_KEEP_RELEASES", "keep_releases", "5", positive,
            "`prune` keeps this many newest immutable release tags (`<version>-<release>`) "
            "of each image and deletes the older ones (never what a kept tag points at)"),
    Setting("KMI_SOURCE_URL", "source_url", "", text,
            "`org.opencontainers.image.source` of the images (e.g. your catalogue repository)"),
    Setting("SOURCE_DATE_EPOCH", "source_date_epoch", "", epoch,
            "the images' `created` time (seconds since 1970), instead of when the upstream "
            "build was pinned"),
    Setting("KMI_TEST_TIMEOUT", "test_timeouts", "amd64=900,arm64=1800,s390x=1800", timeouts,
            "seconds a boot test may take, per arch (`arch=seconds` pairs) or one number for "
            "all; sized for TCG on a small machine"),
    Setting("KMI_GUESTFS_TIMEOUT", "guestfs_timeout", "3600", number,
            "seconds one libguestfs tool run (virt-customize, virt-sysprep, virt-sparsify, a "
            "catalogue script) may take; past it the tool and its appliance are killed and the "
            "stage is tried once more from its input (a libguestfs appliance under TCG now and "
            "then hangs for good); the first try's log is kept as `<stage>.timed-out.log`"),
    Setting("KMI_CUSTOMIZE", "customize", "auto", choice("auto", "native", "emulated"),
            "how `sysprep` runs the steps that execute guest programs (packages, commands, ...): "
            "`native` with libguestfs (needs a host of the target's arch), `emulated` by booting "
            "the image under `qemu-system-<arch>`; `auto`: native where the arches match, "
            "emulated where they differ. The deadline is `KMI_GUESTFS_TIMEOUT`"),
    Setting("KMI_TEST_MEMORY", "test_memory", "2048", whole,
            "MiB of memory of the boot-test guest"),
    Setting("KMI_UNTESTED_TIERS", "untested_tiers", "preview", tiers,
            "tiers that publish without a passed boot test (comma-separated; empty: gate every "
            "tier)", empty_is_a_value=True),
    Setting("KMI_STABLE_CRITERIA", "stable_criteria", "all", criteria,
            "the criteria (\"Support tiers\") a `stable` flavor's images must pass before "
            "`publish` pushes them: `all`, `none`, names, `-name` to leave one out",
            empty_is_a_value=True),
    Setting("KMI_PROPOSED_CRITERIA", "proposed_criteria", "all,-signature", criteria,
            "the criteria a `proposed` flavor's images must pass (preview and planned: none)",
            empty_is_a_value=True),
    Setting("KMI_LAYER_LIMIT", "layer_limit", "10GB", byte_count,
            "the `size` criterion's limit on an image's layer, in bytes or with a unit (10 GB: "
            "the per-layer "
            "limit of common registries, see \"Support tiers\")"),
    Setting("KMI_DOCS_DIR", "docs_dir", "docs/images", path,
            "where `docs` writes the image READMEs and `release-chart.md`"),
    Setting("KMI_CACHE_URL", "stage_cache", "", stage_cache,
            "the shared stage cache: a folder (a path or `file:///path`) or a registry "
            "repository (`docker://host[:port]/repository`); `sysprep`, `sparsify` and `build` "
            "look their stage key up there first and restore the output (checked byte for byte) "
            "instead of making it; what they make is added (see \"Scaling out\")"),
    Setting("KMI_ENGINE", "engine", "native", choice("native", "buildx"),
            "`buildx`: `build` packs and pushes each arch with `docker buildx bake` (by digest), "
            "and `publish` indexes them with `docker buildx imagetools create` "
            "(python-on-whales), instead of kmi's own engine; needs `KMI_REGISTRY` and the "
            "buildx plugin"),
    Setting("KMI_CI_RUNNERS", "ci_runners", "amd64=ubuntu-24.04,arm64=ubuntu-24.04-arm", runners,
            "`ci-matrix`: the CI runner label per arch (`arch=label` pairs replace the defaults); "
            "an arch without one (s390x by default) is left out, and said so"),
    Setting("KMI_FIXTURE_CACHE", None, "~/.cache/kmi-fixtures", documented,
            "tests and demo: where the offline fixture images are kept, keyed by the hash of "
            "`scripts/fixture-image.sh` (and `fixture-image-arm64.sh`)"),
    Setting("KMI_FIXTURE_DEBIAN_MIRROR", None, "http://deb.debian.org/debian", documented,
            "tests and demo: the Debian mirror the fixture is built from"),
)  # fmt: skip


def load_settings(
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Settings:
    """Every setting from the environment (and `overrides`, e.g. `registry=` on doit's
    command line, by variable name), parsed once; relative paths start at `root` (the cwd).
    A bad value is one KmiError naming the variable (or its `labels` name, as the user
    typed it), its value and what is expected."""
    given = {**(os.environ if env is None else env), **(overrides or {})}
    reading = Reading(Path.cwd() if root is None else root, given)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.attr is None:
            continue
        raw = given.get(setting.name)
        stripped = "" if raw is None else raw.strip()
        if raw is None or not (stripped or setting.empty_is_a_value):
            stripped = setting.default
        try:
            values[setting.attr] = setting.parse(stripped, reading)
        except Bad as err:
            label = (labels or {}).get(setting.name, setting.name)
            raise KmiError(f"{label}={raw!r}: {err}") from None
    if bool(values["registry_user"]) != bool(values["registry_password"]):
        raise KmiError("set both KMI_REGISTRY_USER and KMI_REGISTRY_PASSWORD, or neither")
    return Settings(**values)


def readme_table() -> str:
    """README.md's settings table, from SETTINGS."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "none"
        rows.append(f"| `{s.name}` | {default} | {s.meaning} |")
    return "\n".join(rows) + "\n"


BEGIN = "<!-- settings table: written by python -m kmi.settings README.md -->\n"
END = "<!-- end of settings table -->\n"


def with_table(readme: str) -> str:
    """README.md's text with its settings table replaced by the current one."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise KmiError(f"README.md: no {BEGIN.strip()} ... {END.strip()} markers")
    return head + BEGIN + readme_table() + END + tail


def main(argv: list[str]) -> int:
    readme = Path(argv[1] if len(argv) > 1 else "README.md")
    readme.write_text(with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
