"""A real HTTP server on loopback serving a mirror tree: `GET /<host>/<path>`.

It answers Range requests (206, If-Range with ETags), HEAD, lists directories the way
nginx's autoindex does, logs every request, and injects faults on request: a connection
cut after N bytes, or an error status for the next N requests of a path.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    sent: int  # body bytes sent


@dataclass
class Faults:
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, once
    statuses: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer
    retry_after: str | None = None


class MirrorServer:
    """Serve `root` on 127.0.0.1 at a free port until stop()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults = Faults()
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._active = 0
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MirrorServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def busy(self, delta: int) -> None:
        with self._idle:
            self._active += delta
            self._idle.notify_all()

    def settled(self) -> list[Request]:
        """The log once no request is in flight: a client may see a response before the
        server thread has logged it."""
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=10)
        return list(self.log)

    def requests_for(self, suffix: str, method: str = "GET") -> list[Request]:
        return [r for r in self.settled() if r.path.endswith(suffix) and r.method == method]

    def bytes_sent(self, suffix: str) -> int:
        return sum(r.sent for r in self.requests_for(suffix))


class _Handler(BaseHTTPRequestHandler):
    server_state: MirrorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _finish(self, status: int, sent: int = 0) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server_state.record(
            Request(self.command, path, self.headers.get("Range"), status, sent)
        )

    def _error(self, status: int) -> None:
        self.send_response(status)
        if status in (429, 503) and self.server_state.faults.retry_after is not None:
            self.send_header("Retry-After", self.server_state.faults.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._finish(status)

    def _serve(self, body: bool) -> None:
        self.server_state.busy(+1)
        try:
            self._answer(body)
        finally:
            self.server_state.busy(-1)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        faults = self.server_state.faults
        queued = faults.statuses.get(path)
        if queued:
            self._error(queued.pop(0))
            return
        target = (self.server_state.root / path.lstrip("/")).resolve()
        if not str(target).startswith(str(self.server_state.root.resolve())):
            self._error(403)
        elif target.is_dir() and (target / "index.html").is_file() and path.endswith("/"):
            self._file(target / "index.html", path, body)  # as nginx's `index` does
        elif target.is_dir():
            self._listing(target, path, body)
        elif target.is_file():
            self._file(target, path, body)
        else:
            self._error(404)

    def _listing(self, directory: Path, path: str, body: bool) -> None:
        if not path.endswith("/"):
            self.send_response(301)
            self.send_header("Location", path + "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._finish(301)
            return
        rows = ['<a href="../">../</a>']
        for entry in sorted(directory.iterdir()):
            name = entry.name + ("/" if entry.is_dir() else "")
            rows.append(f'<a href="{quote(name)}">{html.escape(name)}</a>')
        page = ("<html><body><pre>\n" + "\n".join(rows) + "\n</pre></body></html>\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if body:
            self.wfile.write(page)
        self._finish(200, len(page) if body else 0)

    def _file(self, file: Path, path: str, body: bool) -> None:
        stat = file.stat()
        size, etag = stat.st_size, f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        m = RANGE.match(wanted or "")
        if m and (if_range is None or if_range == etag):
            start = int(m[1])
            end = int(m[2]) if m[2] else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._finish(416)
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            self._finish(status)
            return
        cut = self.server_state.faults.cut_after.pop(path, None)
        sent = self._send(file, start, length if cut is None else min(cut, length))
        self._finish(status, sent)
        if cut is not None:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)

    def _send(self, file: Path, start: int, count: int) -> int:
        sent = 0
        with file.open("rb") as src:
            src.seek(start)
            while sent < count:
                chunk = src.read(min(1 << 16, count - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        return sent
