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
    )
