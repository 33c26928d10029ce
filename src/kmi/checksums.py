"""Read one file's digest out of an upstream checksum file, in each upstream's format."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

from kmi.errors import VerificationError

HEX_LENGTH = {"sha256": 64, "sha512": 128}
BSD_LINE = re.compile(r"^(?P<algo>[A-Z0-9-]+) \((?P<name>.+)\) = (?P<hex>[0-9a-fA-F]+)$")
GNU_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]+)(?:\s+\*?(?P<name>.+))?$")


def _lines(text: str) -> Iterator[str]:
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


def _same_name(listed: str, wanted: str) -> bool:
    return listed.removeprefix("./").removeprefix("*") == wanted


def _bsd(text: str, filename: str, algorithm: str) -> list[str]:
    found = []
    for line in _lines(text):
        m = BSD_LINE.match(line)
        if (
            m
            and m["algo"].replace("-", "").lower() == algorithm
            and _same_name(m["name"], filename)
        ):
            found.append(m["hex"])
    return found


def _gnu(text: str, filename: str, algorithm: str) -> list[str]:
    found = []
    for line in _lines(text):
        m = GNU_LINE.match(line)
        if m and m["name"] is not None and _same_name(m["name"], filename):
            found.append(m["hex"])
    return found


def _single(text: str, filename: str, algorithm: str) -> list[str]:
    entries = []
    for line in _lines(text):
        m = GNU_LINE.match(line) or BSD_LINE.match(line)
        if m is None:
            continue
        name = m["name"]
        if name is None or _same_name(name, filename):
            entries.append(m["hex"])
    return entries


def _scan(node: Any, filename: str, algorithm: str) -> tuple[bool, list[str], list[str]]:
    """(names the file, digests in the subtree, answers): the answer is the digests of the
    innermost object whose subtree both names the file and holds digests. Covers
    releases.json, simplestreams and per-image manifests with "<algo>:<hex|base64>"."""
    if isinstance(node, str):
        prefixed = (
            [_decode_prefixed(node[len(algorithm) + 1 :], algorithm)]
            if node.startswith(algorithm + ":")
            else []
        )
        return node == filename or node.endswith("/" + filename), prefixed, []
    children = list(node.values()) if isinstance(node, dict) else node
    if not isinstance(children, list):
        return False, [], []
    names = False
    digests: list[str] = []
    answers: list[str] = []
    for child in children:
        n, d, a = _scan(child, filename, algorithm)
        names, digests, answers = names or n, digests + d, answers + a
    if isinstance(node, dict) and isinstance(node.get(algorithm), str):
        digests.append(node[algorithm])
    if not answers and names and digests and isinstance(node, dict):
        answers = digests
    return names, digests if not answers else [], answers


def _decode_prefixed(value: str, algorithm: str) -> str:
    if len(value) == HEX_LENGTH[algorithm]:
        return value
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value


def _json(text: str, filename: str, algorithm: str) -> list[str]:
    try:
        return _scan(json.loads(text), filename, algorithm)[2]
    except ValueError:
        return []


PARSERS = {"bsd": _bsd, "gnu": _gnu, "single": _single, "json": _json}


def find_digest(text: str, fmt: str, filename: str, algorithm: str, source: str) -> str:
    """The lowercase hex digest of `filename` in a checksum file, or a VerificationError
    naming `source` (the checksum file's URL) when it is absent, malformed or ambiguous."""
    found = {h.lower() for h in PARSERS[fmt](text, filename, algorithm)}
    if not found:
        raise VerificationError(f"{source}: no {algorithm} digest for {filename} ({fmt} format)")
    if len(found) > 1:
        raise VerificationError(f"{source}: several different digests for {filename}")
    digest = found.pop()
    if len(digest) != HEX_LENGTH[algorithm] or not re.fullmatch(r"[0-9a-f]+", digest):
        raise VerificationError(f"{source}: malformed {algorithm} digest for {filename}")
    return digest
