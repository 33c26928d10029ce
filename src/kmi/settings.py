"""Where kmi runs: every KMI_* environment variable, read in one place."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from kmi.errors import KmiError

# Boot-test deadlines that hold under TCG on a small machine; KVM needs far less.
DEFAULT_TEST_TIMEOUTS = (("amd64", 900.0), ("arm64", 1800.0), ("s390x", 1800.0))
# GitHub-hosted runner labels per arch (the labels the issue names); s390x has none by default
DEFAULT_CI_RUNNERS = (("amd64", "ubuntu-24.04"), ("arm64", "ubuntu-24.04-arm"))
TIERS = ("planned", "preview", "proposed", "stable")
MAX_NUMBER = 1e9  # seconds, retries or MiB: anything above is a typo, not a setting
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Run settings; documented in README.md ("Settings")."""

    catalogue_dir: Path
    build_dir: Path
    cache_dir: Path
    mirror: str | None
    locked: bool
    http_retries: int
    http_backoff: float
    http_timeout: float
    progress: str  # "auto", "bar", "lines" or "off"
    accel: str  # "auto", "kvm" or "tcg"
    registry: str | None = None  # host[:port][/path] to publish to; None: dry run
    registry_insecure: bool = False  # plain HTTP to a registry that is not on loopback
    layer_compression: str = "gzip-stored"  # see kmi.oci.LAYER_TYPES
    index_arches: str = "all"  # "all": an index needs every arch; "built": what was built
    source_url: str = ""  # org.opencontainers.image.source of published images
    source_date_epoch: str | None = None  # fixes `created` instead of the lock's `found`
    test_timeouts: tuple[tuple[str, float], ...] = DEFAULT_TEST_TIMEOUTS  # per arch, seconds
    test_memory: int = 2048  # MiB of guest memory for boot tests
    untested_tiers: frozenset[str] = frozenset({"preview"})  # may publish without a boot test
    docs_dir: Path = Path("docs/images")
    ci_runners: tuple[tuple[str, str], ...] = DEFAULT_CI_RUNNERS  # arch -> CI runner label
    guestfs_timeout: float = 3600.0  # KMI_GUESTFS_TIMEOUT: seconds per libguestfs tool run
    engine: str = "native"  # KMI_ENGINE: "native" (no daemon) or "buildx" (BuildKit)
    stage_cache: str | None = None  # KMI_CACHE_URL: the shared stage cache (folder or registry)
    require_signed: bool = False  # KMI_REQUIRE_SIGNED: refuse upstreams that sign nothing
    record: Path | None = None  # KMI_RECORD: keep every small upstream file fetched, mirror-shaped

    def test_timeout(self, arch: str) -> float:
        return dict(self.test_timeouts).get(arch, max(t for _, t in self.test_timeouts))

    @property
    def lock_file(self) -> Path:
        return self.catalogue_dir / "lock.json"


def _flag(env: dict[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise KmiError(f"{name}={value!r}: expected one of 1/true/yes/on or 0/false/no/off")


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise KmiError(f"{name}={raw!r}: expected a number") from None
    if not math.isfinite(value) or value > MAX_NUMBER:
        raise KmiError(f"{name}={raw!r}: expected a number below {MAX_NUMBER:.0f}")
    if value < 0:
        raise KmiError(f"{name}={raw!r}: expected a number >= 0")
    return value


def _timeouts(env: dict[str, str]) -> tuple[tuple[str, float], ...]:
    """KMI_TEST_TIMEOUT: one number of seconds for every arch, or arch=seconds pairs."""
    raw = env.get("KMI_TEST_TIMEOUT", "").strip()
    found = dict(DEFAULT_TEST_TIMEOUTS)
    if not raw:
        return DEFAULT_TEST_TIMEOUTS
    hint = (
        f"KMI_TEST_TIMEOUT={raw!r}: expected seconds (600) or arch=seconds pairs "
        "(amd64=600,arm64=1800)"
    )
    try:
        if "=" not in raw:
            found = dict.fromkeys(found, float(raw))
        else:
            for pair in raw.split(","):
                arch, _, seconds = pair.partition("=")
                if arch.strip() not in found:
                    raise KmiError(f"{hint}; unknown arch {arch.strip()!r}")
                found[arch.strip()] = float(seconds)
    except ValueError:
        raise KmiError(hint) from None
    if any(not 0 < v <= MAX_NUMBER for v in found.values()):
        raise KmiError(f"{hint}; every timeout must be above 0 and at most 1e9")
    return tuple(found.items())


def _runners(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """KMI_CI_RUNNERS: arch=label pairs, each replacing that arch's default label."""
    raw = env.get("KMI_CI_RUNNERS", "").strip()
    found = dict(DEFAULT_CI_RUNNERS)
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        arch, _, label = pair.partition("=")
        if arch.strip() not in {"amd64", "arm64", "s390x"} or not label.strip():
            raise KmiError(
                f"KMI_CI_RUNNERS={raw!r}: expected arch=label pairs, e.g. "
                "arm64=ubuntu-24.04-arm,s390x=my-s390x-runner"
            )
        found[arch.strip()] = label.strip()
    return tuple(found.items())


def _tiers(env: dict[str, str]) -> frozenset[str]:
    raw = env.get("KMI_UNTESTED_TIERS")
    if raw is None:
        return frozenset({"preview"})
    tiers = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = sorted(tiers - set(TIERS))
    if unknown:
        raise KmiError(
            f"KMI_UNTESTED_TIERS={raw!r}: unknown tier {unknown[0]!r}; expected some of "
            f"{', '.join(TIERS)} (comma-separated), or empty to gate every tier"
        )
    return tiers


def load_settings(env: dict[str, str] | None = None, root: Path | None = None) -> Settings:
    """Read settings from the environment; relative paths are taken from `root` (the cwd)."""
    env = dict(os.environ) if env is None else env
    root = Path.cwd() if root is None else root
    mirror = env.get("KMI_MIRROR", "").strip() or None
    progress = env.get("KMI_PROGRESS", "auto").strip() or "auto"
    if progress not in {"auto", "bar", "lines", "off"}:
        raise KmiError(f"KMI_PROGRESS={progress!r}: expected auto, bar, lines or off")
    accel = env.get("KMI_ACCEL", "auto").strip() or "auto"
    if accel not in {"auto", "kvm", "tcg"}:
        raise KmiError(f"KMI_ACCEL={accel!r}: expected auto, kvm or tcg")
    compression = env.get("KMI_LAYER_COMPRESSION", "").strip() or "gzip-stored"
    if compression not in {"gzip-stored", "gzip", "zstd", "none"}:
        raise KmiError(
            f"KMI_LAYER_COMPRESSION={compression!r}: expected gzip-stored, gzip, zstd or none"
        )
    index_arches = env.get("KMI_INDEX_ARCHES", "").strip() or "all"
    if index_arches not in {"all", "built"}:
        raise KmiError(f"KMI_INDEX_ARCHES={index_arches!r}: expected all or built")
    engine = env.get("KMI_ENGINE", "").strip() or "native"
    if engine not in {"native", "buildx"}:
        raise KmiError(f"KMI_ENGINE={engine!r}: expected native (the default) or buildx")
    registry = env.get("KMI_REGISTRY", "").strip() or None
    return Settings(
        catalogue_dir=root / env.get("KMI_CATALOGUE", "distros"),
        build_dir=root / env.get("KMI_BUILD_DIR", "build"),
        cache_dir=root / env.get("KMI_CACHE_DIR", "cache"),
        mirror=mirror.rstrip("/") if mirror else None,
        locked=_flag(env, "KMI_LOCKED"),
        http_retries=int(_number(env, "KMI_HTTP_RETRIES", 5)),
        http_backoff=_number(env, "KMI_HTTP_BACKOFF", 1.0),
        http_timeout=_number(env, "KMI_HTTP_TIMEOUT", 30.0),
        progress=progress,
        accel=accel,
        registry=registry,
        registry_insecure=_flag(env, "KMI_REGISTRY_INSECURE"),
        layer_compression=compression,
        index_arches=index_arches,
        engine=engine,
        source_url=env.get("KMI_SOURCE_URL", "").strip(),
        source_date_epoch=env.get("SOURCE_DATE_EPOCH", "").strip() or None,
        test_timeouts=_timeouts(env),
        test_memory=int(_number(env, "KMI_TEST_MEMORY", 2048)),
        guestfs_timeout=_number(env, "KMI_GUESTFS_TIMEOUT", 3600.0),
        untested_tiers=_tiers(env),
        docs_dir=root / env.get("KMI_DOCS_DIR", "docs/images"),
        ci_runners=_runners(env),
        stage_cache=env.get("KMI_CACHE_URL", "").strip() or None,
        require_signed=_flag(env, "KMI_REQUIRE_SIGNED"),
        record=root / record if (record := env.get("KMI_RECORD", "").strip()) else None,
    )
