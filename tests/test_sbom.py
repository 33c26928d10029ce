"""The SBOM's parsers, each on its package database's own format, and the SPDX 2.3
document, validated by spdx-tools (pyspdxtools), the SPDX project's own validator."""

from __future__ import annotations

import io
import json
import sqlite3
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

from kmi import sbom

STATUS = """\
Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b7

Package: libgone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libncursesw6
Status: install ok installed
Architecture: amd64
Source: ncurses
Version: 6.4-4
Description: shared libraries for terminal handling
 a continuation line: ignored
"""
BASH_COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: bash

Files: *
Copyright: 1987-2022 Free Software Foundation, Inc.
License: GPL-3+

Files: debian/*
License: GPL-2+
"""
NCURSES_COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
License: X11 and something-else
 the licence's text
"""


def test_dpkg_packages_take_the_licence_of_files_star() -> None:
    found = sbom.dpkg_packages(STATUS, {"bash": BASH_COPYRIGHT, "ncurses": NCURSES_COPYRIGHT})
    assert [(p.name, p.version, p.arch, p.declared, p.license) for p in found] == [
        ("bash", "5.2.15-2+b7", "amd64", "GPL-3+", "GPL-3.0-or-later"),
        # the source package's copyright file; a name kmi does not know: not asserted
        ("libncursesw6", "6.4-4", "amd64", "X11 and something-else", "NOASSERTION"),
    ]


def test_licences_become_spdx_only_when_every_identifier_is_known() -> None:
    assert sbom.spdx_expression("GPL-2+ or Artistic", debian=True) == (
        "GPL-2.0-or-later OR Artistic-1.0-Perl"
    )
    assert sbom.spdx_expression("(MIT OR Apache-2.0) AND BSD-3-Clause") == (
        "(MIT OR Apache-2.0) AND BSD-3-Clause"
    )
    assert sbom.spdx_expression("GPLv2+") is None  # rpm's older short names: not asserted
    assert sbom.spdx_expression("") is None


def test_apk_installed_database() -> None:
    installed = (
        "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\n\n"
        "P:busybox\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\n"
    )
    assert [(p.name, p.version, p.arch, p.license) for p in sbom.apk_packages(installed)] == [
        ("musl", "1.2.5-r0", "x86_64", "MIT"),
        ("busybox", "1.36.1-r29", "x86_64", "GPL-2.0-only"),
    ]


def test_pacman_local_descriptions(tmp_path: Path) -> None:
    tar = tmp_path / "pacman.tar"
    desc = b"%NAME%\nzlib\n\n%VERSION%\n1:1.3.1-2\n\n%ARCH%\nx86_64\n\n%LICENSE%\nZlib\n\n"
    with tarfile.open(tar, "w") as archive:
        info = tarfile.TarInfo("./zlib-1:1.3.1-2/desc")
        info.size = len(desc)
        archive.addfile(info, io.BytesIO(desc))
    found = sbom.pacman_packages(tar)
    assert [(p.name, p.version, p.arch, p.license) for p in found] == [
        ("zlib", "1:1.3.1-2", "x86_64", "Zlib")
    ]


def _header(tags: dict[int, str | int]) -> bytes:
    """An rpm header blob as rpmdb.sqlite stores it (index entries, then the data store)."""
    index, store = b"", b""
    for tag, value in tags.items():
        if isinstance(value, int):
            store += b"\0" * (-len(store) % 4)
            index += struct.pack(">IIII", tag, 4, len(store), 1)
            store += struct.pack(">I", value)
        else:
            index += struct.pack(">IIII", tag, 6, len(store), 1)
            store += value.encode() + b"\0"
    return struct.pack(">II", len(tags), len(store)) + index + store


def test_rpm_sqlite_database(tmp_path: Path) -> None:
    database = tmp_path / "rpmdb.sqlite"
    connection = sqlite3.connect(database)
    connection.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
    rows: list[dict[int, str | int]] = [
        {1000: "bash", 1001: "5.2.26", 1002: "3.fc40", 1022: "x86_64", 1014: "GPL-3.0-or-later"},
        {1000: "shadow-utils", 1003: 2, 1001: "4.15.1", 1002: "1.fc40", 1022: "x86_64",
         1014: "BSD-3-Clause AND GPL-2.0-or-later"},
        {1000: "gpg-pubkey", 1001: "a15b79cc", 1002: "63d04c2c"},  # a key, not a package
    ]  # fmt: skip
    for row in rows:
        connection.execute("INSERT INTO Packages (blob) VALUES (?)", (_header(row),))
    connection.commit()
    connection.close()
    found = sbom.rpm_packages(database)
    assert [(p.name, p.version, p.arch, p.license) for p in found] == [
        ("bash", "5.2.26-3.fc40", "x86_64", "GPL-3.0-or-later"),
        ("shadow-utils", "2:4.15.1-1.fc40", "x86_64", "BSD-3-Clause AND GPL-2.0-or-later"),
    ]


def test_the_document_validates_with_spdx_tools(tmp_path: Path) -> None:
    packages = sbom.dpkg_packages(STATUS, {"bash": BASH_COPYRIGHT, "ncurses": NCURSES_COPYRIGHT})
    doc = sbom.document(
        "fixture-12-amd64",
        "https://spdx.org/spdxdocs/kmi/fixture-12-amd64-0123456789ab",
        "2026-01-01T00:00:00Z",
        "debian",
        packages,
        "kmi-0.1.0",
    )
    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(doc))
    checked = subprocess.run(
        [str(Path(sys.executable).with_name("pyspdxtools")), "-i", str(path)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    refs = [p["externalRefs"][0]["referenceLocator"] for p in doc["packages"][1:]]
    assert refs == [
        "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64",
        "pkg:deb/debian/libncursesw6@6.4-4?arch=amd64",
    ]
    assert doc["packages"][2]["licenseComments"] == (
        "declared by the distribution: X11 and something-else"
    )
    # what the validator refuses, it refuses (a Debian short name is not an SPDX id)
    doc["packages"][1]["licenseDeclared"] = "GPL-2+"
    path.write_text(json.dumps(doc))
    refused = subprocess.run(
        [str(Path(sys.executable).with_name("pyspdxtools")), "-i", str(path)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "GPL-2+" in refused.stdout + refused.stderr
