"""A recording proxy in front of the real test registry: counts the bytes clients send,
fails chosen paths with an HTTP status, and can hold a request until the test kills the
client (to cut a publish at a known point)."""

from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kmi.demo.registry import free_port

HOP = {"connection", "keep-alive", "transfer-encoding", "host"}


@dataclass
class Seen:
    method: str
    path: str
    sent: int  # request body bytes


@dataclass
class Rules:
    fail: re.Pattern[str] | None = None  # "METHOD path" matching this gets HTTP 500
    hold: re.Pattern[str] | None = None  # "METHOD path" matching this blocks forever
    held: threading.Event = field(default_factory=threading.Event)


class RegistryProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.seen: list[Seen] = []
        self.rules = Rules()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _forward(self) -> None:
                line = f"{self.command} {self.path}"
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append(Seen(self.command, self.path, len(body)))
                if proxy.rules.hold and proxy.rules.hold.search(line):
                    proxy.rules.held.set()
                    threading.Event().wait(600)
                if proxy.rules.fail and proxy.rules.fail.search(line):
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                conn.putrequest(self.command, self.path, skip_accept_encoding=True)
                for k, v in self.headers.items():  # repeated headers (Accept) kept apart
                    if k.lower() not in HOP and k.lower() != "content-length":
                        conn.putheader(k, v)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() in HOP or k.lower() == "content-length":
                        continue
                    if k.lower() == "location":
                        v = v.replace(proxy.upstream, proxy.host)
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def blob_bytes(self) -> int:
        """Bytes sent in blob uploads (POST/PATCH/PUT under /blobs/uploads/)."""
        return sum(s.sent for s in self.seen if "/blobs/uploads/" in s.path)

    def uploads(self) -> int:
        return sum(1 for s in self.seen if s.method == "PUT" and "/blobs/uploads/" in s.path)

    def reset(self) -> None:
        self.seen.clear()
        self.rules = Rules()
