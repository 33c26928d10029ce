"""Checks of single catalogue values (kmi.catalogue's fields name them): each returns None
for a good value, else what is wrong with it."""

from __future__ import annotations

import re
from pathlib import Path

from kmi import schema, templates

NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
OCTAL = re.compile(r"^0?[0-7]{3,4}$")


def name(value: str) -> str | None:
    return None if NAME.match(value) else "use lowercase letters, digits, '.' and '-'"


def url_template(allowed: frozenset[str], optional: bool = False) -> schema.Check:
    def check(value: str) -> str | None:
        if value == "":
            # an optional URL's need depends on other keys; checked in _cross_checks
            return None if optional else "must not be empty"
        relative = value.startswith(("{dir}", "{url}", "{checksum_url}"))
        if not value.startswith(("https://", "http://")) and not relative:
            return f"expected an http(s) URL or one starting with {{dir}} or {{url}}, got {value!r}"
        return templates.unknown_placeholders(value, allowed)

    return check


def regex_template(allowed: frozenset[str], group: str) -> schema.Check:
    def check(value: str) -> str | None:
        if value == "":
            return None
        problem = templates.unknown_placeholders(value, allowed)
        if problem:
            return problem
        try:
            pattern = re.compile(templates.render(value, dict.fromkeys(allowed, "x"), regex=True))
        except re.error as err:
            return f"not a valid regular expression: {err.msg}"
        if group not in pattern.groupindex:
            return f"the pattern needs a named group (?P<{group}>...)"
        return None

    return check


def fingerprints(values: tuple[str, ...]) -> str | None:
    bad = [v for v in values if not FINGERPRINT.match(v)]
    return f"not a 40-digit uppercase hex fingerprint: {bad[0]!r}" if bad else None


def key_files(values: tuple[str, ...]) -> str | None:
    fetched = [v for v in values if "://" in v]
    if fetched:
        return (
            f"{fetched[0]!r}: keys are read from the repository, never fetched; keep the key "
            "file beside the catalogue (e.g. keys/<flavor>.asc) and give its path"
        )
    absolute = [v for v in values if v.startswith("/") or v == ""]
    return f"{absolute[0]!r}: give a path relative to the catalogue folder" if absolute else None


def guest_path(value: str) -> str | None:
    return None if value.startswith("/") else f"expected an absolute guest path, got {value!r}"


def relative_path(value: str) -> str | None:
    parts = Path(value).parts
    if not value or value.startswith("/") or ".." in parts:
        return f"expected a path inside the catalogue folder, got {value!r}"
    return None


def octal(value: str) -> str | None:
    return None if OCTAL.match(value) else f"expected an octal mode such as '0644', got {value!r}"


def placeholders(allowed: frozenset[str]) -> schema.Check:
    return lambda value: templates.unknown_placeholders(value, allowed) if value else None
