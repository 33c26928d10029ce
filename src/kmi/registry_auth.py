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
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.auth

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
    from kmi import tools  # sh: only when a helper is named

    program = f"docker-credential-{name}"
    if shutil.which(program) is None:
        raise KmiError(f"{where} names the credential helper {program}, which is not installed")
    helper = tools.Tool(program, program, program, f"(named in {where})")
    done = tools.ask(helper, ["get"], 60.0, host.encode())
    if done.code != 0:
        return None  # the helper has nothing for this host (or did not answer)
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
    host: str,
    repository: str,
    env: Mapping[str, str] | None = None,
    given: Credentials | None = None,
) -> Credentials | None:
    """Credentials for `host` (and the repository path under it), or None for anonymous:
    `given` (KMI_REGISTRY_USER and KMI_REGISTRY_PASSWORD), else the auth files."""
    env = os.environ if env is None else env
    if given is not None:
        return given
    for path in auth_files(env):
        found = _from_file(path, host, repository)
        if found:
            return found
    return None


# --- answering a registry's 401 -------------------------------------------------------------

V2_PATH = re.compile(r"/v2/(?P<repository>.+?)/(?:manifests|blobs|tags)/")


def repository_of(url: str) -> str | None:
    """The repository an API URL is about (`/v2/<repository>/manifests/...`)."""
    found = V2_PATH.search(urlsplit(url).path)
    return found.group("repository") if found else None


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()


class RegistryAuth(requests.auth.AuthBase):
    """Logs in as a registry asks, as requests' own HTTPDigestAuth does: a 401's
    WWW-Authenticate challenge is answered with Basic credentials, or with a Bearer token
    for the repository's pull,push scope from the token service named in the challenge, and
    the request is sent once more. What it learned is kept per repository for the run.

    `token` fetches a token (the client's retries and timeouts apply to it); `credentials`
    finds the login for a repository (None: anonymous)."""

    def __init__(
        self,
        host: str,
        credentials: Callable[[str], Credentials | None],
        token: Callable[[str, dict[str, str], Credentials | None], str],
    ) -> None:
        self.host = host
        self.credentials = credentials
        self.token = token
        self.headers: dict[str, str] = {}  # repository -> Authorization value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        repository = repository_of(request.url or "")
        if repository is not None:
            if repository in self.headers:
                request.headers["Authorization"] = self.headers[repository]
            request.register_hook("response", self.handle_401)  # type: ignore[no-untyped-call]
        return request

    def login(self, repository: str, response: requests.Response) -> str:
        """The Authorization value that answers this 401."""
        scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
        creds = self.credentials(repository)
        where = f"{self.host}/{repository}"
        if scheme == "basic":
            if creds is None:
                raise KmiError(
                    f"{where}: the registry wants a login; set KMI_REGISTRY_USER and "
                    "KMI_REGISTRY_PASSWORD or log in with podman/skopeo/docker login"
                )
            return basic(creds)
        if scheme != "bearer" or "realm" not in params:
            raise KmiError(f"{where}: unsupported authentication challenge {scheme!r}")
        return "Bearer " + self.token(repository, params, creds)

    def handle_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        repository = repository_of(request.url or "")
        if (
            response.status_code != 401
            or repository is None
            or getattr(request, "kmi_retry", False)
        ):
            return response
        self.headers[repository] = self.login(repository, response)
        if request.body is not None and not isinstance(request.body, bytes | str):
            return response  # a streamed body cannot be sent again here: the caller resends
        response.close()
        again = request.copy()
        again.headers["Authorization"] = self.headers[repository]
        setattr(again, "kmi_retry", True)  # noqa: B010 - answered once; a second 401 stands
        sent: requests.Response = response.connection.send(again, **kwargs)
        sent.history.append(response)
        sent.request = again
        return sent
