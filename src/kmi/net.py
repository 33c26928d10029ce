"""HTTP for upstream files: mirrors, retries with backoff, resumable streamed downloads."""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from kmi import __version__, recording
from kmi.errors import TransferError
from kmi.files import feed
from kmi.progress import Progress
from kmi.settings import Settings

CHUNK = 1 << 20
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
MAX_BACKOFF = 60.0
MAX_TEXT = 64 << 20  # index pages and checksum files; anything larger is not one


class Transient(Exception):
    """A failure worth retrying; carries the reason and an optional Retry-After."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _RangeRefused(Transient):
    """The server refused to resume; the next attempt starts the file over."""


def retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_to_datetime(value)
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def retrying(what: str, attempt: Callable[[], Any], retries: int, backoff: float) -> Any:
    """Call `attempt` until it succeeds; a Transient failure is retried `retries` times,
    waiting `backoff * 2**n` seconds (or what Retry-After says), then becomes TransferError."""
    tries = retries + 1
    for n in range(tries):
        try:
            return attempt()
        except Transient as err:
            if n + 1 == tries:
                raise TransferError(f"{what}: {err} (gave up after {tries} attempts)") from None
            delay = err.retry_after
            if delay is None:
                delay = backoff * 2**n
            time.sleep(min(delay, MAX_BACKOFF))
    raise AssertionError("unreachable")


@dataclass
class Downloaded:
    hexdigest: str
    size: int


class Http:
    """All upstream HTTP goes through here, so mirrors and retries apply everywhere."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"kmi/{__version__}"

    def resolve(self, url: str) -> str:
        """`https://HOST/PATH` -> `<KMI_MIRROR>/HOST/PATH` when a mirror is set."""
        if not self.settings.mirror:
            return url
        parts = urlsplit(url)
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.settings.mirror}/{parts.netloc}{parts.path}{query}"

    def describe(self, url: str) -> str:
        resolved = self.resolve(url)
        return url if resolved == url else f"{url} (via mirror {resolved})"

    def _retrying(self, url: str, attempt: Callable[[], Any]) -> Any:
        return retrying(
            self.describe(url), attempt, self.settings.http_retries, self.settings.http_backoff
        )

    @contextmanager
    def _get(
        self, url: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> Iterator[requests.Response]:
        try:
            response = self.session.request(
                method,
                self.resolve(url),
                headers=headers or {},
                stream=True,
                timeout=self.settings.http_timeout,
                allow_redirects=True,
            )
        except (requests.ConnectionError, requests.Timeout) as err:
            raise Transient(f"connection failed ({type(err).__name__})") from None
        try:
            if response.status_code == 416 and "Range" in (headers or {}):
                raise _RangeRefused("HTTP 416 for a resumed range")
            if response.status_code in TRANSIENT_STATUS:
                raise Transient(f"HTTP {response.status_code}", retry_after(response))
            if response.status_code >= 400:
                raise TransferError(
                    f"{self.describe(url)}: HTTP {response.status_code}", response.status_code
                )
            yield response
        finally:
            response.close()

    def text(self, url: str) -> str:
        """A small upstream document (index page, checksum file, JSON), as text."""
        return self.content(url).decode("utf-8", errors="replace")

    def content(self, url: str) -> bytes:
        def attempt() -> bytes:
            with self._get(url) as response:
                data = bytearray()
                try:
                    for chunk in response.iter_content(CHUNK):
                        data += chunk
                        if len(data) > MAX_TEXT:
                            raise TransferError(f"{self.describe(url)}: larger than 64 MiB")
                except (
                    requests.ConnectionError,
                    requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                ) as err:
                    raise Transient(f"transfer cut ({type(err).__name__})") from None
                return bytes(data)

        result: bytes = self._retrying(url, attempt)
        self._record(recording.keep, url, result)
        return result

    def size(self, url: str) -> int | None:
        """The upstream file's size from a HEAD request, when the server says."""

        def attempt() -> int | None:
            with self._get(url, method="HEAD") as response:
                length = response.headers.get("Content-Length")
                return int(length) if length and length.isdigit() else None

        found: int | None = self._retrying(url, attempt)
        if found is not None:
            self._record(recording.keep_size, url, found)
        return found

    def _record(self, how: Callable[[Path, str, Any], None], url: str, what: Any) -> None:
        """KMI_RECORD: keep what was fetched, mirror-shaped (see kmi.recording)."""
        if self.settings.record is None:
            return
        try:
            how(self.settings.record, url, what)
        except OSError as err:
            raise TransferError(
                f"KMI_RECORD={self.settings.record}: cannot keep {url}: {err.strerror}"
            ) from None

    def download(
        self,
        url: str,
        part: Path,
        algorithm: str,
        progress: Progress,
        expected_size: int | None = None,
    ) -> Downloaded:
        """Stream `url` into `part`, hashing as it goes. A `part` left by a cut transfer is
        resumed with an HTTP Range request; if the server cannot resume, it starts over."""
        state = _PartState(part, algorithm)
        progress.resume_from(state.size)
        if expected_size is not None and state.size > expected_size:
            state.restart()

        def attempt() -> Downloaded:
            if expected_size is not None and state.size == expected_size:
                return Downloaded(state.hasher.hexdigest(), state.size)
            headers = {**state.resume_headers(), "Accept-Encoding": "identity"}
            try:
                with self._get(url, headers) as response:
                    self._stream(response, state, progress)
            except _RangeRefused:
                state.restart()
                raise
            return Downloaded(state.hasher.hexdigest(), state.size)

        done: Downloaded = self._retrying(url, attempt)
        state.forget_validator()
        progress.finish()
        return done

    @staticmethod
    def _stream(response: requests.Response, state: _PartState, progress: Progress) -> None:
        if not state.accept(response):
            progress.resume_from(0)
        try:
            # read1 hands over whatever arrived, so a cut loses no received byte
            with state.part.open("ab") as out:
                while chunk := response.raw.read1(CHUNK):
                    out.write(chunk)
                    state.add(chunk)
                    progress.advance(len(chunk))
        except (
            requests.ConnectionError,
            requests.Timeout,
            urllib3.exceptions.HTTPError,
            requests.exceptions.ChunkedEncodingError,
        ) as err:
            raise Transient(f"transfer cut at {state.size} bytes ({type(err).__name__})") from None
        expected = state.expected_total
        if expected is not None and state.size < expected:
            raise Transient(f"transfer cut at {state.size} of {expected} bytes")


class _PartState:
    """A partial file, its running hash, and the validator that makes resuming safe."""

    def __init__(self, part: Path, algorithm: str) -> None:
        self.part = part
        self.meta = part.with_name(part.name + ".json")
        self.hasher = hashlib.new(algorithm)
        self.size = 0
        self.expected_total: int | None = None
        part.parent.mkdir(parents=True, exist_ok=True)
        if part.exists():
            self.size = feed(self.hasher, part)

    def resume_headers(self) -> dict[str, str]:
        if not self.size:
            return {}
        headers = {"Range": f"bytes={self.size}-"}
        validator = self._validator()
        if validator:
            headers["If-Range"] = validator
        return headers

    def _validator(self) -> str | None:
        with suppress(OSError, ValueError, AttributeError, RecursionError):
            value = json.loads(self.meta.read_text()).get("validator")
            return value if isinstance(value, str) else None
        return None

    def accept(self, response: requests.Response) -> bool:
        """Take the response's framing; False when it restarts the file from zero."""
        had = self.size
        resumed = (
            response.status_code == 206
            and self.size > 0
            and response.headers.get("Content-Range", "").startswith(f"bytes {self.size}-")
        )
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if not resumed:
            self.restart()
        self.expected_total = None if remaining is None else self.size + remaining
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if validator and not resumed:
            self.meta.write_text(json.dumps({"validator": validator}))
        return resumed or had == 0

    def restart(self) -> None:
        self.part.write_bytes(b"")
        self.hasher = hashlib.new(self.hasher.name)
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.hasher.update(chunk)
        self.size += len(chunk)

    def forget_validator(self) -> None:
        self.meta.unlink(missing_ok=True)
