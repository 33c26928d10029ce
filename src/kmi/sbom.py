"""What is installed in a final disk, as an SPDX 2.3 JSON document.

The package databases are copied out of the image by one read-only guestfish session
(libguestfs reads any arch's filesystem, so this needs no host of the image's arch) and
parsed here: dpkg's status file (licences from the packages' machine-readable
`/usr/share/doc/<package>/copyright`), apk's `installed` database, pacman's `local/*/desc`,
and rpm's SQLite database (the header blobs' NAME, EPOCH, VERSION, RELEASE, ARCH and LICENSE
tags). A licence goes in as an SPDX expression only when every identifier in it is one kmi
knows from the SPDX licence list; otherwise `NOASSERTION`, with what the distribution
declared kept in the package's `licenseComments`.
"""

from __future__ import annotations

import re
import sqlite3
import struct
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPDX_VERSION = "SPDX-2.3"
NO_ASSERTION = "NOASSERTION"

# guestfish lines (read-only, -i) that copy the databases that exist into {out}; `-` lines
# may fail (a database the image does not have)
COPY_OUT = """\
-download /var/lib/dpkg/status {out}/dpkg-status
-tar-out /usr/share/doc {out}/doc.tar "excludes:*.gz *.html *.txt *.md *.pdf"
-download /lib/apk/db/installed {out}/apk-installed
-tar-out /var/lib/pacman/local {out}/pacman.tar
-download /var/lib/rpm/rpmdb.sqlite {out}/rpmdb.sqlite
-download /usr/lib/sysimage/rpm/rpmdb.sqlite {out}/sysimage-rpmdb.sqlite
"""

# Identifiers of the SPDX License List (https://spdx.org/licenses/) that distributions'
# package metadata names most; anything else is kept as declared, not asserted.
KNOWN = frozenset(
    [
        "0BSD",
        "AFL-2.1",
        "AGPL-3.0-only",
        "AGPL-3.0-or-later",
        "Apache-1.1",
        "Apache-2.0",
        "Artistic-1.0",
        "Artistic-1.0-Perl",
        "Artistic-2.0",
        "BSD-1-Clause",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "BSD-4-Clause",
        "BSL-1.0",
        "bzip2-1.0.6",
        "CC-BY-3.0",
        "CC-BY-4.0",
        "CC-BY-SA-3.0",
        "CC-BY-SA-4.0",
        "CC0-1.0",
        "CDDL-1.0",
        "curl",
        "EPL-1.0",
        "EPL-2.0",
        "FSFAP",
        "FSFUL",
        "FSFULLR",
        "FTL",
        "GFDL-1.1-or-later",
        "GFDL-1.2-or-later",
        "GFDL-1.3-or-later",
        "GPL-1.0-or-later",
        "GPL-2.0-only",
        "GPL-2.0-or-later",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "HPND",
        "IJG",
        "ISC",
        "LGPL-2.0-only",
        "LGPL-2.0-or-later",
        "LGPL-2.1-only",
        "LGPL-2.1-or-later",
        "LGPL-3.0-only",
        "LGPL-3.0-or-later",
        "Libpng",
        "libtiff",
        "MIT",
        "MIT-0",
        "MPL-1.1",
        "MPL-2.0",
        "NCSA",
        "OFL-1.1",
        "OpenSSL",
        "PHP-3.01",
        "PSF-2.0",
        "Python-2.0",
        "Ruby",
        "Sleepycat",
        "Unicode-DFS-2016",
        "Unlicense",
        "Vim",
        "W3C",
        "WTFPL",
        "X11",
        "Zlib",
        "ZPL-2.1",
    ]
)
# Debian's short names (DEP-5) for some of them
DEBIAN_NAMES = {
    "GPL-1+": "GPL-1.0-or-later",
    "GPL-2": "GPL-2.0-only",
    "GPL-2+": "GPL-2.0-or-later",
    "GPL-3": "GPL-3.0-only",
    "GPL-3+": "GPL-3.0-or-later",
    "LGPL-2": "LGPL-2.0-only",
    "LGPL-2+": "LGPL-2.0-or-later",
    "LGPL-2.1": "LGPL-2.1-only",
    "LGPL-2.1+": "LGPL-2.1-or-later",
    "LGPL-3": "LGPL-3.0-only",
    "LGPL-3+": "LGPL-3.0-or-later",
    "AGPL-3": "AGPL-3.0-only",
    "AGPL-3+": "AGPL-3.0-or-later",
    "Expat": "MIT",
    "BSD-2-clause": "BSD-2-Clause",
    "BSD-3-clause": "BSD-3-Clause",
    "BSD-4-clause": "BSD-4-Clause",
    "Artistic": "Artistic-1.0-Perl",
    "MPL-2.0": "MPL-2.0",
    "Apache-2.0": "Apache-2.0",
    "Zlib": "Zlib",
    "ISC": "ISC",
    "CC0-1.0": "CC0-1.0",
}
OPERATORS = {"AND", "OR", "WITH"}


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    kind: str  # deb, rpm, apk, alpm (the purl types)
    declared: str = ""  # the licence as the distribution's metadata states it

    @property
    def license(self) -> str:
        """An SPDX expression kmi can assert, or NOASSERTION."""
        return spdx_expression(self.declared, debian=self.kind == "deb") or NO_ASSERTION


def spdx_expression(declared: str, debian: bool = False) -> str | None:
    """`declared` as an SPDX expression when every identifier in it is a known SPDX id
    (Debian's short names mapped); None otherwise."""
    text = declared.strip()
    if not text:
        return None
    if debian:  # Debian writes "GPL-2+ or Artistic"; SPDX wants upper-case operators
        text = re.sub(r"\b(and|or)\b", lambda m: m.group(1).upper(), text)
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    out = []
    for token in tokens:
        if token in ("(", ")") or token in OPERATORS:
            out.append(token)
            continue
        name = DEBIAN_NAMES.get(token, token) if debian else token
        if name not in KNOWN:
            return None
        out.append(name)
    joined = " ".join(out).replace("( ", "(").replace(" )", ")")
    return joined or None


# --- dpkg -------------------------------------------------------------------------------------


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """Debian control-file paragraphs: field -> value (continuation lines joined)."""
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += "\n" + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if fields:
            yield fields


def dpkg_packages(status: str, copyrights: dict[str, str]) -> list[Package]:
    """Installed packages from dpkg's status file; `copyrights` maps a package to its
    copyright file's text."""
    found = []
    for fields in _stanzas(status):
        if not fields.get("Status", "").endswith(" installed") or "Package" not in fields:
            continue
        name = fields["Package"]
        source = fields.get("Source", "").split(" ")[0]
        text = copyrights.get(name) or copyrights.get(source, "")
        found.append(
            Package(
                name, fields.get("Version", ""), fields.get("Architecture", ""), "deb", _dep5(text)
            )
        )
    return found


def _dep5(text: str) -> str:
    """The licence of `Files: *` in a machine-readable (DEP-5) copyright file; "" if none."""
    if not text.startswith("Format:"):
        return ""
    for fields in _stanzas(text):
        if fields.get("Files", "").split() == ["*"] and "License" in fields:
            return fields["License"].splitlines()[0].strip()
    return ""


def copyright_files(tar: Path) -> dict[str, str]:
    """package -> text of `./<package>/copyright` in a tar of /usr/share/doc."""
    found: dict[str, str] = {}
    with tarfile.open(tar) as archive:
        for member in archive:
            parts = member.name.removeprefix("./").split("/")
            if len(parts) == 2 and parts[1] == "copyright" and member.isfile():
                data = archive.extractfile(member)
                if data is not None:
                    found[parts[0]] = data.read(1 << 20).decode("utf-8", errors="replace")
    return found


# --- apk, pacman ------------------------------------------------------------------------------


def apk_packages(installed: str) -> list[Package]:
    """Alpine's /lib/apk/db/installed: one paragraph per package, one-letter keys."""
    found = []
    for block in re.split(r"\n\s*\n", installed):
        fields = dict(line.split(":", 1) for line in block.splitlines() if line[1:2] == ":")
        if "P" in fields:
            found.append(
                Package(
                    fields["P"],
                    fields.get("V", ""),
                    fields.get("A", ""),
                    "apk",
                    fields.get("L", ""),
                )
            )
    return found


def pacman_packages(local: Path) -> list[Package]:
    """Arch's /var/lib/pacman/local (as a tar): each package's `desc`, `%KEY%` sections."""
    found = []
    with tarfile.open(local) as archive:
        for member in archive:
            if not member.name.endswith("/desc") or not member.isfile():
                continue
            data = archive.extractfile(member)
            if data is None:
                continue
            sections: dict[str, list[str]] = {}
            current = ""
            for line in data.read().decode("utf-8", errors="replace").splitlines():
                if line.startswith("%") and line.endswith("%"):
                    current = line.strip("%")
                    sections[current] = []
                elif line and current:
                    sections[current].append(line)
            if "NAME" in sections:
                declared = " AND ".join(sections.get("LICENSE", []))
                found.append(
                    Package(
                        sections["NAME"][0],
                        (sections.get("VERSION") or [""])[0],
                        (sections.get("ARCH") or [""])[0],
                        "alpm",
                        declared,
                    )
                )
    return found


# --- rpm --------------------------------------------------------------------------------------

NAME, VERSION, RELEASE, EPOCH, LICENSE, ARCH = 1000, 1001, 1002, 1003, 1014, 1022
STRING, INT32, I18NSTRING = 6, 4, 9


def rpm_header(blob: bytes) -> dict[int, Any]:
    """The tags kmi reads from one rpm header blob (as rpmdb.sqlite stores it: the index
    count and data length, then 16-byte index entries, then the data)."""
    count, length = struct.unpack(">II", blob[:8])
    store = 8 + 16 * count
    if store + length > len(blob):
        raise ValueError("a truncated rpm header")
    found: dict[int, Any] = {}
    for n in range(count):
        tag, kind, offset, _ = struct.unpack(">IIII", blob[8 + 16 * n : 24 + 16 * n])
        if tag not in (NAME, VERSION, RELEASE, EPOCH, LICENSE, ARCH) or offset >= length:
            continue
        at = store + offset
        if kind in (STRING, I18NSTRING):
            end = blob.index(b"\0", at)
            found[tag] = blob[at:end].decode("utf-8", errors="replace")
        elif kind == INT32:
            found[tag] = struct.unpack(">I", blob[at : at + 4])[0]
    return found


def rpm_packages(database: Path) -> list[Package]:
    """Installed packages from an rpm SQLite database (`Packages` table, one header blob a row)."""
    found = []
    connection = sqlite3.connect(f"file:{database}?mode=ro&immutable=1", uri=True)
    try:
        rows = connection.execute("SELECT blob FROM Packages").fetchall()
    finally:
        connection.close()
    for (blob,) in rows:
        try:
            tags = rpm_header(bytes(blob))
        except (ValueError, struct.error):
            continue
        if NAME not in tags or tags[NAME] == "gpg-pubkey":
            continue
        version = f"{tags.get(VERSION, '')}-{tags.get(RELEASE, '')}"
        if EPOCH in tags:
            version = f"{tags[EPOCH]}:{version}"
        found.append(Package(tags[NAME], version, tags.get(ARCH, ""), "rpm", tags.get(LICENSE, "")))
    return found


def packages_in(folder: Path) -> list[Package]:
    """Every package whose database COPY_OUT brought into `folder`."""
    found: list[Package] = []
    if (folder / "dpkg-status").exists():
        doc = folder / "doc.tar"
        copyrights = copyright_files(doc) if doc.exists() else {}
        found += dpkg_packages((folder / "dpkg-status").read_text(errors="replace"), copyrights)
    if (folder / "apk-installed").exists():
        found += apk_packages((folder / "apk-installed").read_text(errors="replace"))
    if (folder / "pacman.tar").exists():
        found += pacman_packages(folder / "pacman.tar")
    for name in ("rpmdb.sqlite", "sysimage-rpmdb.sqlite"):
        if (folder / name).exists() and not any(p.kind == "rpm" for p in found):
            found += rpm_packages(folder / name)
    return sorted(found, key=lambda p: (p.name, p.arch, p.version))


# --- the document -----------------------------------------------------------------------------


def _spdx_id(package: Package, taken: set[str]) -> str:
    base = "SPDXRef-Package-" + re.sub(
        r"[^A-Za-z0-9.-]", "-", f"{package.kind}-{package.name}-{package.arch}"
    )
    ident, n = base, 2
    while ident in taken:
        ident, n = f"{base}-{n}", n + 1
    taken.add(ident)
    return ident


def purl(package: Package, namespace: str) -> str:
    """The package URL (purl) of a distribution package."""
    version = package.version.replace("%", "%25").replace(":", "%3A").replace("+", "%2B")
    arch = f"?arch={package.arch}" if package.arch else ""
    return f"pkg:{package.kind}/{namespace}/{package.name}@{version}{arch}"


def document(
    name: str,
    namespace: str,
    created: str,
    distribution: str,
    packages: Iterable[Package],
    tool: str,
) -> dict[str, Any]:
    """The SPDX 2.3 document: the disk as the described package, containing each installed
    package. `created` is the image's own creation time, so the same disk gives the same
    document."""
    taken: set[str] = set()
    disk_id = "SPDXRef-Disk"
    described = {
        "SPDXID": disk_id,
        "name": name,
        "downloadLocation": NO_ASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NO_ASSERTION,
        "licenseDeclared": NO_ASSERTION,
        "copyrightText": NO_ASSERTION,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
    }
    entries: list[dict[str, Any]] = [described]
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": disk_id,
        }
    ]
    for package in packages:
        ident = _spdx_id(package, taken)
        entry: dict[str, Any] = {
            "SPDXID": ident,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": NO_ASSERTION,
            "filesAnalyzed": False,
            "licenseConcluded": NO_ASSERTION,
            "licenseDeclared": package.license,
            "copyrightText": NO_ASSERTION,
            "primaryPackagePurpose": "LIBRARY" if package.name.startswith("lib") else "APPLICATION",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl(package, distribution),
                }
            ],
        }
        if package.declared and package.license == NO_ASSERTION:
            entry["licenseComments"] = f"declared by the distribution: {package.declared}"
        entries.append(entry)
        relationships.append(
            {"spdxElementId": disk_id, "relationshipType": "CONTAINS", "relatedSpdxElement": ident}
        )
    return {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": namespace,
        "creationInfo": {"created": created, "creators": [f"Tool: {tool}"]},
        "documentDescribes": [disk_id],
        "packages": entries,
        "relationships": relationships,
    }
