"""Where images go, `host[:port][/prefix]`: parsed once, with the settings (no HTTP here)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from kmi.errors import KmiError

HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?$|^\[[0-9a-fA-F:]+\](:[0-9]+)?$")
PATH = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Registry:
    """Where images go: `host[:port][/prefix]`, e.g. `quay.io/containerdisks`."""

    host: str
    prefix: str
    scheme: str

    @classmethod
    def parse(cls, value: str, insecure: bool = False, name: str = "KMI_REGISTRY") -> Registry:
        text = value.strip().rstrip("/")
        if "://" in text:
            raise KmiError(
                f"{name}={value!r}: give host[:port]/path without a scheme; "
                "TLS is used unless the host is loopback or KMI_REGISTRY_INSECURE=1"
            )
        host, _, prefix = text.partition("/")
        if not HOST.match(host) or (prefix and not PATH.match(prefix)):
            raise KmiError(
                f"{name}={value!r}: expected host[:port][/path] with a lowercase path, "
                "e.g. quay.io/containerdisks or localhost:5000"
            )
        scheme = "http" if insecure or is_loopback(host) else "https"
        return cls(host, prefix, scheme)

    def repository(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def reference(self, name: str, tag: str) -> str:
        return f"{self.host}/{self.repository(name)}:{tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host
