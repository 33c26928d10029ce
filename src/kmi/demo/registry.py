"""A real registry on loopback for the demo, the tests and the benchmarks: Debian's
`docker-registry` (the CNCF distribution registry) with its storage in a folder."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

from kmi.errors import KmiError

CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
{auth}"""

HTPASSWD_AUTH = """\
auth:
  htpasswd:
    realm: kmi-test
    path: {path}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


ACCESS = re.compile(r'^\S+ - - \[[^]]*\] "(\w+) (/v2/\S*)')  # one request in the access log


class RegistryServer:
    """`docker-registry serve` on 127.0.0.1:<free port>; its log is kept for the tests,
    which count requests in it."""

    def __init__(self, folder: Path, htpasswd: Path | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.log = folder / "registry.log"
        self.htpasswd = htpasswd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryServer:
        program = shutil.which("docker-registry") or shutil.which("registry")
        if program is None:
            raise KmiError("the test registry needs docker-registry (Debian package)")
        self.folder.mkdir(parents=True, exist_ok=True)
        auth = HTPASSWD_AUTH.format(path=self.htpasswd) if self.htpasswd else ""
        config = self.folder / "config.yml"
        config.write_text(CONFIG.format(root=self.folder / "storage", port=self.port, auth=auth))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [program, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://{self.host}/v2/", timeout=1)
                return self
            except requests.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise KmiError(
                        f"docker-registry did not start; see {self.log}:\n"
                        + self.log.read_text()[-2000:]
                    ) from None
                time.sleep(0.1)

    def requests_since(self, start: int, prefix: str) -> tuple[int, int]:
        """(requests under /v2/<prefix>/ in the access log since its line `start`, the
        number of lines now): what one step of a benchmark asked of the registry."""
        lines = self.log.read_text(errors="replace").splitlines()
        hits = sum(
            1
            for line in lines[start:]
            if (m := ACCESS.match(line)) is not None and m.group(2).startswith(f"/v2/{prefix}/")
        )
        return hits, len(lines)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
