"""Finding the builds upstream publishes, one function per way of publishing them.

Each finder returns every build of one target it can see; the caller sorts them newest
first by release id. Moving aliases (`latest`, `-latest` files, `release/`) never match
the catalogue's patterns, which require a dated or numbered release id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape
from urllib.parse import unquote, urljoin, urlsplit

from kmi import templates
from kmi.catalogue import Flavor, Target
from kmi.errors import KmiError
from kmi.net import Http
from kmi.releases import release_order

HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@dataclass(frozen=True)
class Build:
    """One upstream build of a target's image."""

    url: str
    release: str
    index_digest: str | None = None  # a digest the index itself states, cross-checked later
    size: int | None = None


def links(page: str, base: str) -> list[tuple[str, str]]:
    """(name, absolute URL) of every link in a directory listing that stays below `base`."""
    found = []
    for href in HREF.findall(page):
        absolute = urljoin(base, unescape(href))
        if not absolute.startswith(base) or absolute == base:
            continue
        path = urlsplit(absolute).path
        name = unquote(path.rstrip("/").rsplit("/", 1)[-1])
        found.append((name + "/" if path.endswith("/") else name, absolute))
    return found


def _pattern(template: str, target: Target) -> re.Pattern[str]:
    return re.compile(templates.render(template, target.template_values(), regex=True))


def _index_url(target: Target) -> str:
    return templates.render(target.flavor.upstream.discovery.index, target.template_values())


def find_listing(http: Http, target: Target) -> list[Build]:
    """Files in one directory listing whose names match the catalogue's pattern. When the
    listing is a moving folder (`latest/`), each file is pinned at its dated URL instead."""
    d = target.flavor.upstream.discovery
    index = _index_url(target)
    pattern = _pattern(d.match, target)
    builds = []
    for name, url in links(http.text(index), index):
        m = pattern.fullmatch(name)
        release = (m["release"] or "") if m else ""  # "": a fixed name, named by its digest
        if m and d.pin:
            values = {**target.template_values(), "release": release, "file": name}
            builds.append(Build(templates.render(d.pin, values), release))
        elif m:
            builds.append(Build(url, release))
    return builds


def find_dated_folders(http: Http, target: Target) -> list[Build]:
    """Build folders (`20250101-1234/`) in a listing, each holding the image by a fixed name."""
    d = target.flavor.upstream.discovery
    index = _index_url(target)
    pattern = _pattern(d.folder, target)
    builds = []
    for name, url in links(http.text(index), index):
        m = pattern.fullmatch(name)
        if m:
            values = {**target.template_values(), "release": m["release"]}
            builds.append(Build(url + templates.render(d.file, values), m["release"]))
    return builds


def _load_json(http: Http, url: str) -> object:
    try:
        return json.loads(http.text(url))
    except ValueError as err:
        raise KmiError(f"{http.describe(url)}: not valid JSON ({err})") from None


def _size(value: object) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def find_releases_json(http: Http, target: Target) -> list[Build]:
    """Entries of a releases.json (Fedora) that pass the filter and match the file pattern."""
    d = target.flavor.upstream.discovery
    index = _index_url(target)
    entries = _load_json(http, index)
    if not isinstance(entries, list):
        raise KmiError(f"{http.describe(index)}: expected a JSON list of releases")
    pattern = _pattern(d.match, target)
    builds = []
    for entry in entries:
        if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in d.filter.items()):
            continue
        link = entry.get("link")
        m = pattern.fullmatch(link.rsplit("/", 1)[-1]) if isinstance(link, str) else None
        if m and isinstance(link, str):
            sha = entry.get("sha256")
            builds.append(
                Build(
                    link,
                    m["release"],
                    sha if isinstance(sha, str) else None,
                    _size(entry.get("size")),
                )
            )
    return builds


def find_simplestreams(http: Http, target: Target) -> list[Build]:
    """Versions of one product in a simplestreams products:1.0 document (Ubuntu)."""
    d = target.flavor.upstream.discovery
    index = _index_url(target)
    product_id = templates.render(d.product, target.template_values())
    data = _load_json(http, index)
    products = data.get("products", {}) if isinstance(data, dict) else {}
    product = products.get(product_id)
    if not isinstance(product, dict):
        return []
    builds = []
    for release, version in product.get("versions", {}).items():
        items = version.get("items", {}) if isinstance(version, dict) else {}
        item = next((i for k, i in items.items() if d.item in (k, i.get("ftype"))), None)
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            builds.append(
                Build(
                    urljoin(d.base, item["path"]),
                    release,
                    item.get("sha256"),
                    _size(item.get("size")),
                )
            )
    return builds


FINDERS: dict[str, Callable[[Http, Target], list[Build]]] = {
    "listing": find_listing,
    "dated-folders": find_dated_folders,
    "releases-json": find_releases_json,
    "simplestreams": find_simplestreams,
}


def find_builds(http: Http, target: Target) -> list[Build]:
    """Every build of `target` upstream, newest first."""
    builds = FINDERS[target.flavor.upstream.discovery.kind](http, target)
    unique = {b.url: b for b in builds}.values()
    return sorted(unique, key=lambda b: release_order(b.release), reverse=True)


def find_versions(http: Http, flavor: Flavor) -> list[str]:
    """The newest versions a tracking policy keeps, newest first."""
    track = flavor.track
    assert track is not None
    values = {"flavor": flavor.name}
    index = templates.render(track.index, values)
    pattern = re.compile(templates.render(track.match, values, regex=True))
    if track.json_key:
        entries = _load_json(http, index)
        if not isinstance(entries, list):
            raise KmiError(f"{http.describe(index)}: expected a JSON list (track.json_key is set)")
        fields = [e.get(track.json_key) for e in entries if isinstance(e, dict)]
        matches = [pattern.fullmatch(v) for v in fields if isinstance(v, str)]
        found = {m["version"] for m in matches if m}
    else:
        found = {m["version"] for m in pattern.finditer(http.text(index))}
    return sorted(found, key=release_order, reverse=True)[: track.keep]
