"""A client of qemu-guest-agent on the unix socket QEMU exposes its virtio-serial channel on."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kmi.errors import KmiError


class Agent:
    """A client of qemu-guest-agent on QEMU's unix socket (QGA's JSON protocol)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.path))
            self.sock = sock
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _reply(self, wait: float, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        sock = self._connect()
        end = time.monotonic() + wait
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                try:
                    message = json.loads(line.strip(b"\xff \r\t"))
                except ValueError:
                    continue
                if isinstance(message, dict) and want(message):
                    return message
            left = end - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                self.close()
                return None
            self.buffer += chunk

    def sync(self, wait: float) -> bool:
        """guest-sync-delimited with a fresh id: True once the agent echoes it."""
        ident = secrets.randbelow(1 << 30)
        request = {"execute": "guest-sync-delimited", "arguments": {"id": ident}}
        try:
            # 0xFF first: the agent drops any half-read request and resynchronises
            self._connect().sendall(b"\xff" + json.dumps(request).encode() + b"\n")
            return self._reply(wait, lambda m: m.get("return") == ident) is not None
        except OSError:
            self.close()
            return False

    def call(
        self, command: str, wait: float = 30.0, arguments: dict[str, Any] | None = None
    ) -> Any:
        """Run one command; its `return` value, or a KmiError with the agent's error."""
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        self._connect().sendall(json.dumps(request).encode() + b"\n")
        reply = self._reply(wait, lambda m: "return" in m or "error" in m)
        if reply is None:
            raise KmiError(f"{command}: no answer within {wait:.0f} s")
        if "error" in reply:
            raise KmiError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply["return"]
