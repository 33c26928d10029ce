"""URL and file-name templates of the catalogue: `{version}`, `{uarch}`, `{release}`, ...

Only `{lowercase_word}` is a placeholder, so regular expressions keep their `{8}` and `{1,3}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")

# What each kind of template may refer to; checked when the catalogue loads.
VERSION_VARS = frozenset({"flavor", "version", "name", "arch", "uarch"})
RELEASE_VARS = VERSION_VARS | {"release"}
FILE_VARS = RELEASE_VARS | {"dir", "file", "url"}
SIGNATURE_VARS = FILE_VARS | {"checksum_url"}


def placeholders(template: str) -> set[str]:
    """The placeholder names a template uses."""
    return set(PLACEHOLDER.findall(template))


def unknown_placeholders(template: str, allowed: frozenset[str]) -> str | None:
    """An error message naming placeholders outside `allowed`, or None."""
    bad = sorted(placeholders(template) - allowed)
    if not bad:
        return None
    names = ", ".join("{" + b + "}" for b in bad)
    return f"unknown placeholder {names} (allowed: {', '.join(sorted(allowed))})"


def render(template: str, values: Mapping[str, str], *, regex: bool = False) -> str:
    """Fill the placeholders; in a regex template the values are escaped."""

    def fill(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        return re.escape(value) if regex else value

    return PLACEHOLDER.sub(fill, template)
