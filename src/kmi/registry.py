"""A client for the OCI distribution API: just what publishing containerdisks needs.

HEAD before every upload, cross-repository mounts, monolithic blob uploads streamed from
the layout (1 MiB writes), manifests by digest, tags last. Basic and Bearer-token auth
as registries ask for it (the WWW-Authenticate challenge), retries with backoff on
5xx/429/resets. TLS always, except for a registry on loopback or one marked insecure.
Credentials and tokens never appear in a message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urljoin

import requests
from requests.adapters import HTTPAdapter

from kmi import __version__
from kmi.errors import KmiError, TransferError
from kmi.net import TRANSIENT_STATUS, Transient, retry_after, retrying
from kmi.registry_auth import Credentials, RegistryAuth, basic, find_credentials
from kmi.registry_ref import Registry
from kmi.settings import Settings

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
BLOCK = 1 << 20  # socket writes of uploads; http.client's 8 KiB default costs CPU


class _BigWrites(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = BLOCK
        super().init_poolmanager(*args, **kwargs)


class _Body:
    """A file streamed as a request body, reporting progress; reopened on every attempt."""

    def __init__(self, path: Path, advance: Callable[[int], None]) -> None:
        self.path, self.advance = path, advance
        self.size = path.stat().st_size
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> _Body:
        self.handle = self.path.open("rb")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.handle is not None
        self.handle.close()

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        assert self.handle is not None
        data = self.handle.read(n)
        self.advance(len(data))
        return data


class Client:
    """One registry, with the credentials and tokens of one run."""

    def __init__(
        self,
        registry: Registry,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.registry = registry
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.env = env
        self.given = credentials
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"kmi/{__version__}"
        self.session.mount("http://", _BigWrites())
        self.session.mount("https://", _BigWrites())
        self.session.auth = RegistryAuth(registry.host, self._credentials_for, self._token)
        self._credentials: dict[str, Credentials | None] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def url(self, repository: str, tail: str) -> str:
        return f"{self.registry.scheme}://{self.registry.host}/v2/{repository}/{tail}"

    def _credentials_for(self, repository: str) -> Credentials | None:
        if repository not in self._credentials:
            self._credentials[repository] = find_credentials(
                self.registry.host, repository, self.env, self.given
            )
        return self._credentials[repository]

    def _token(self, repository: str, params: dict[str, str], creds: Credentials | None) -> str:
        query = {
            "service": params.get("service", ""),
            "scope": f"repository:{repository}:pull,push",
        }
        headers = {"Authorization": basic(creds)} if creds else {}
        realm = params["realm"]

        def attempt() -> str:
            try:
                response = self.session.get(
                    f"{realm}?{urlencode(query)}", headers=headers, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as err:
                raise Transient(f"token request failed ({type(err).__name__})") from None
            if response.status_code in TRANSIENT_STATUS:
                raise Transient(f"HTTP {response.status_code}", retry_after(response))
            if response.status_code in (401, 403):
                who = f"as {creds}" if creds else "anonymously"
                raise KmiError(
                    f"{self.registry.host}: the token service refused push to {repository} "
                    f"{who} (HTTP {response.status_code}); check the credentials"
                )
            try:
                data = response.json()
                return str(data.get("token") or data["access_token"])
            except (ValueError, KeyError):
                raise KmiError(f"{realm}: the token service answered without a token") from None

        token: str = retrying(f"token for {repository}", attempt, self.retries, self.backoff)
        return token

    def request(
        self,
        method: str,
        repository: str,
        url: str,
        ok: tuple[int, ...],
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One API call with auth, retries on transient failures, and `ok` statuses only."""
        what = f"{method} {url.split('?', 1)[0]}"
        result: requests.Response = retrying(
            what,
            lambda: self._attempt(method, repository, url, ok, headers, body, stream),
            self.retries,
            self.backoff,
        )
        return result

    def _attempt(
        self,
        method: str,
        repository: str,
        url: str,
        ok: tuple[int, ...],
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One try: a transient failure raises Transient for the caller's retry loop."""
        response = self._send(method, url, dict(headers or {}), body, stream)
        if response.status_code == 401 and body is not None:
            # RegistryAuth logged in but could not send a streamed body again: send it now
            response = self._send(method, url, dict(headers or {}), body, stream)
        if response.status_code in ok:
            return response
        if response.status_code in TRANSIENT_STATUS:
            raise Transient(f"HTTP {response.status_code}", retry_after(response))
        what = f"{method} {url.split('?', 1)[0]}"
        raise TransferError(
            f"{what}: HTTP {response.status_code}{_detail(response)}", response.status_code
        )

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Callable[[], Any] | None,
        stream: bool = False,
    ) -> requests.Response:
        try:
            if body is None:
                return self.session.request(
                    method,
                    url,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=True,
                    stream=stream,
                )
            with body() as data:
                return self.session.request(
                    method, url, headers=headers, data=data, timeout=self.timeout
                )
        except requests.exceptions.SSLError as err:
            raise KmiError(
                f"{url}: TLS failed ({err.__class__.__name__}); for a registry without TLS "
                "set KMI_REGISTRY_INSECURE=1"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as err:
            raise Transient(f"connection failed ({type(err).__name__})") from None

    # -- the API ----------------------------------------------------------------------------

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """What a tag (or digest) points at now, or None when the registry lacks it."""
        url = self.url(repository, f"manifests/{reference}")
        response = self.request("HEAD", repository, url, (200, 404), {"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        got = self.request("GET", repository, url, (200,), {"Accept": ACCEPT})
        return "sha256:" + hashlib.sha256(got.content).hexdigest()

    def tags(self, repository: str) -> list[str]:
        """Every tag of a repository ([] when it does not exist), page by page."""
        url: str | None = self.url(repository, "tags/list?n=1000")
        found: list[str] = []
        while url is not None:
            response = self.request("GET", repository, url, (200, 404))
            if response.status_code == 404:
                return found
            try:
                page = response.json().get("tags") or []
            except (ValueError, AttributeError):
                raise KmiError(f"{url}: the registry's tag list is not JSON") from None
            found += [t for t in page if isinstance(t, str)]
            following = response.links.get("next", {}).get("url")
            url = urljoin(url, following) if following else None
        return found

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (and every tag on it); gone already is fine."""
        url = self.url(repository, f"manifests/{digest}")
        try:
            self.request("DELETE", repository, url, (200, 202, 404))
        except TransferError as err:
            if err.status in (405, 403, 401):
                raise KmiError(
                    f"{self.registry.host}/{repository}: the registry refuses to delete "
                    f"{digest} (HTTP {err.status}): deletion is disabled there or the "
                    "credentials may not delete"
                ) from None
            raise

    def describe(self, repository: str, reference: str) -> tuple[str, int, str] | None:
        """(digest, size, media type) of a manifest, from one HEAD; None when it is missing."""
        url = self.url(repository, f"manifests/{reference}")
        response = self.request("HEAD", repository, url, (200, 404), {"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            size = int(response.headers.get("Content-Length", ""))
        except ValueError:
            size = -1
        if digest.startswith("sha256:") and size >= 0 and media_type:
            return digest, size, media_type
        data = self.get_manifest(repository, reference)  # a registry that says less on HEAD
        if data is None:
            return None
        try:
            found = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise KmiError(f"{url}: the registry returned a manifest that is not JSON") from None
        kind = found.get("mediaType") if isinstance(found, dict) else None
        return "sha256:" + hashlib.sha256(data).hexdigest(), len(data), str(kind or media_type)

    def get_manifest(self, repository: str, reference: str) -> bytes | None:
        """A manifest's bytes, or None when the registry lacks it."""
        url = self.url(repository, f"manifests/{reference}")
        response = self.request("GET", repository, url, (200, 404), {"Accept": ACCEPT})
        return None if response.status_code == 404 else response.content

    def get_blob(
        self, repository: str, digest: str, out: IO[bytes], advance: Callable[[int], None]
    ) -> tuple[int, str]:
        """Stream one blob into `out`; (size, sha256 hex) of what arrived, for the caller to
        check against what it expected. A broken transfer starts the blob again."""
        url = self.url(repository, f"blobs/{digest}")
        start = out.tell()

        def attempt() -> tuple[int, str]:
            out.seek(start)
            out.truncate()
            hasher, size = hashlib.sha256(), 0
            with self._attempt("GET", repository, url, (200,), stream=True) as response:
                try:
                    for block in response.iter_content(BLOCK):
                        hasher.update(block)
                        out.write(block)
                        size += len(block)
                        advance(len(block))
                except (requests.ConnectionError, requests.Timeout) as err:
                    raise Transient(f"transfer broke ({type(err).__name__})") from None
            return size, hasher.hexdigest()

        got: tuple[int, str] = retrying(
            f"download of {digest[:19]} from {repository}", attempt, self.retries, self.backoff
        )
        return got

    def has_blob(self, repository: str, digest: str) -> bool:
        url = self.url(repository, f"blobs/{digest}")
        return self.request("HEAD", repository, url, (200, 404)).status_code == 200

    def mount(self, repository: str, digest: str, source: str) -> bool:
        """Ask the registry to link a blob it holds in `source`; True when it did."""
        query = urlencode({"mount": digest, "from": source})
        url = self.url(repository, f"blobs/uploads/?{query}")
        response = self.request("POST", repository, url, (201, 202))
        if response.status_code == 202:
            self._cancel(repository, response)
        return response.status_code == 201

    def _cancel(self, repository: str, response: requests.Response) -> None:
        location = response.headers.get("Location")
        if location:
            url = urljoin(response.url, location)
            self.request("DELETE", repository, url, (202, 204, 404))

    def upload(
        self, repository: str, digest: str, path: Path, advance: Callable[[int], None]
    ) -> int:
        """Upload one blob (POST, then one PUT with the whole body); returns bytes sent."""
        size = path.stat().st_size
        sent = 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            advance(n)

        def attempt() -> None:
            # a failed upload session cannot be trusted: every try starts a new one
            start = self._attempt(
                "POST", repository, self.url(repository, "blobs/uploads/"), (202,)
            )
            location = start.headers.get("Location")
            if not location:
                raise TransferError(f"{self.registry.host}: upload started without a Location")
            url = urljoin(start.url, location)
            url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            self._attempt("PUT", repository, url, (201,), headers, lambda: _Body(path, counted))

        retrying(f"upload of {digest[:19]} to {repository}", attempt, self.retries, self.backoff)
        return sent

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> None:
        url = self.url(repository, f"manifests/{reference}")
        headers = {"Content-Type": media_type}
        self.request("PUT", repository, url, (201,), headers, lambda: nullcontext(data))


def _detail(response: requests.Response) -> str:
    """The registry's own error code and message, never headers (they may hold tokens)."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f" ({first.get('code', '')}: {first.get('message', '')})"
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def client_for(
    settings: Settings, registry: Registry, env: Mapping[str, str] | None = None
) -> Client:
    """The one way kmi makes a registry client (publish, the stage cache, buildx checks):
    the KMI_HTTP_* retries and timeouts, and the KMI_REGISTRY_USER login when set, else
    the auth files found from `env` (the process environment by default)."""
    given = (
        Credentials(settings.registry_user, settings.registry_password, "KMI_REGISTRY_USER")
        if settings.registry_user
        else None
    )
    return Client(
        registry,
        settings.http_retries,
        settings.http_backoff,
        settings.http_timeout,
        env=env,
        credentials=given,
    )
