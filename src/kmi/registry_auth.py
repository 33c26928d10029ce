"""Registry credentials, found where registry tools keep them; never printed.

Order: KMI_REGISTRY_USER/KMI_REGISTRY_PASSWORD, then the auth files podman, skopeo and
buildah use (REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
~/.config/containers/auth.json), then Docker's ($DOCKER_CONFIG/config.json or
~/.docker/config.json), where an entry may name a credential helper.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kmi.errors import KmiError


@dataclass(frozen=True)
class Credentials:
    username: str
    secret: str = field(repr=False)  # a password or an identity token
    where: str  # for messages: which file or variable they came from

    def __str__(self) -> str:
        return f"{self.username} (from {self.where})"


def auth_files(env: Mapping[str, str]) -> list[Path]:
    """The auth files to read, in order of precedence."""
    home = Path(env.get("HOME", "~")).expanduser()
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    files.append(config_home / "containers" / "auth.json")
    files.append(Path(env.get("DOCKER_CONFIG") or home / ".docker") / "config.json")
    return files


def _keys_for(host: str, repository: str) -> list[str]:
    """Entry names that may hold `host`'s credentials, most specific first."""
    keys = [f"{host}/{repository}"] if repository else []
    parts = repository.split("/")
    keys += [f"{host}/{'/'.join(parts[:n])}" for n in range(len(parts) - 1, 0, -1)]
    keys += [
        host,
        f"https://{host}",
        f"http://{host}",
        f"https://{host}/v1/",
        f"https://{host}/v2/",
    ]
    if host in {"docker.io", "registry-1.docker.io"}:
        keys.append("https://index.docker.io/v1/")
    return keys


def _from_entry(entry: object, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        return Credentials("<token>", str(entry["identitytoken"]), where)
    encoded = entry.get("auth")
    if not encoded:
        return None
    try:
        user, _, secret = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise KmiError(f"{where}: the entry's 'auth' is not base64 of user:password") from None
    return Credentials(user, secret, where)


def _helper(name: str, host: str, where: str) -> Credentials | None:
    program = f"docker-credential-{name}"
    try:
        done = subprocess.run([program, "get"], input=host, capture_output=True, text=True)
    except FileNotFoundError:
        raise KmiError(
            f"{where} names the credential helper {program}, which is not installed"
        ) from None
    if done.returncode != 0:
        return None  # the helper has nothing for this host
    try:
        data = json.loads(done.stdout)
        return Credentials(data["Username"], data["Secret"], f"{program} via {where}")
    except (ValueError, KeyError, TypeError):
        raise KmiError(f"{program} get: unexpected output (not the helper protocol)") from None


def _from_file(path: Path, host: str, repository: str) -> Credentials | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise KmiError(f"{path}: cannot read registry credentials ({err})") from None
    if not isinstance(data, dict):
        return None
    helpers = data.get("credHelpers") or {}
    auths = data.get("auths") or {}
    for key in _keys_for(host, repository):
        if key in helpers:
            return _helper(helpers[key], host, str(path))
        if key in auths:
            found = _from_entry(auths[key], str(path))
            if found:
                return found
    if data.get("credsStore"):
        return _helper(data["credsStore"], host, str(path))
    return None


def find_credentials(
    host: str, repository: str, env: Mapping[str, str] | None = None
) -> Credentials | None:
    """Credentials for `host` (and the repository path under it), or None for anonymous."""
    env = os.environ if env is None else env
    user, password = env.get("KMI_REGISTRY_USER", ""), env.get("KMI_REGISTRY_PASSWORD", "")
    if user or password:
        if not (user and password):
            raise KmiError("set both KMI_REGISTRY_USER and KMI_REGISTRY_PASSWORD, or neither")
        return Credentials(user, password, "KMI_REGISTRY_USER")
    for path in auth_files(env):
        found = _from_file(path, host, repository)
        if found:
            return found
    return None
