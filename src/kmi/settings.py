"""Where kmi runs: every KMI_* environment variable, read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kmi.errors import KmiError

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
    if value < 0:
        raise KmiError(f"{name}={raw!r}: expected a number >= 0")
    return value


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
        source_url=env.get("KMI_SOURCE_URL", "").strip(),
        source_date_epoch=env.get("SOURCE_DATE_EPOCH", "").strip() or None,
    )
