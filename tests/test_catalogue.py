"""The catalogue: the real one loads and covers what it must; every error is reported with
its file and path, all at once, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kmi import catalogue_reference
from kmi.catalogue import load_catalogue, targets_of
from kmi.errors import CatalogueError
from tests.conftest import REPO

REQUIRED = {
    "fedora",
    "centos-stream",
    "almalinux",
    "rocky",
    "ubuntu",
    "debian",
    "opensuse-leap",
    "alpine",
    "archlinux",
}

GOOD = """\
name: demo
description: A demo flavor.
homepage: https://example.org/
license: MIT
tier: preview
versions:
  - version: "1"
upstream:
  arches: {amd64: x86_64}
  discovery:
    kind: listing
    index: https://example.org/{version}/
    match: 'demo-{version}-(?P<release>[0-9]{8})\\.{uarch}\\.qcow2'
  checksum: {url: "{dir}/SHA256SUMS", format: gnu, algorithm: sha256}
  signature: {kind: none, why: the demo publishes no signature}
containerdisk: {user: demo}
"""

UNSIGNED = "signature: {kind: none, why: the demo publishes no signature}"

# The versions each flavor maintains as of December 2026 (shared/reference/upstreams.md), and
# its arches; Fedora and Alpine also follow new versions with `track`.
CURRENT = {
    "almalinux": (["10", "9"], {"amd64", "arm64", "s390x"}),
    "alpine": (["3.24", "3.23"], {"amd64", "arm64"}),
    "amazonlinux": (["2023"], {"amd64"}),
    "archlinux": (["rolling"], {"amd64"}),
    "centos-stream": (["10", "9"], {"amd64", "arm64", "s390x"}),
    "debian": (["13", "12"], {"amd64", "arm64"}),
    "fedora": (["44", "43"], {"amd64", "arm64", "s390x"}),
    "opensuse-leap": (["16.0"], {"amd64", "arm64", "s390x"}),
    "rocky": (["10", "9"], {"amd64", "arm64", "s390x"}),
    "ubuntu": (["26.04", "24.04"], {"amd64", "arm64", "s390x"}),
}


def test_real_catalogue_covers_required_flavors() -> None:
    catalogue = load_catalogue(REPO / "distros")
    names = {f.name for f in catalogue.flavors}
    assert names >= REQUIRED
    for flavor in catalogue.flavors:
        arches = {str(t.arch) for t in targets_of(flavor)}
        assert ([v.version for v in flavor.versions], arches) == CURRENT[flavor.name]
        assert flavor.containerdisk.user


def write(tmp_path: Path, name: str, text: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def problems(directory: Path) -> list[str]:
    with pytest.raises(CatalogueError) as err:
        load_catalogue(directory)
    return [p.replace(str(directory) + "/", "") for p in err.value.problems]


def test_good_file_loads(tmp_path: Path) -> None:
    flavor = load_catalogue(write(tmp_path, "demo", GOOD)).flavor("demo")
    assert [t.name for t in targets_of(flavor)] == ["demo-1-amd64"]
    assert flavor.sysprep.operations == ("defaults",)


def test_every_problem_reported_at_once_with_paths(tmp_path: Path) -> None:
    bad = (
        GOOD.replace("tier: preview", "tier: gold")
        .replace('  - version: "1"', "  - version: 1\n    colour: red")
        .replace("{amd64: x86_64}", "{amd64: x86_64, riscv: riscv64}")
        .replace("format: gnu", "format: md5")
    )
    write(tmp_path, "demo", bad)
    write(
        tmp_path,
        "other",
        GOOD.replace("name: demo", "name: other").replace(
            "https://example.org/{version}/", "https://example.org/{release}/"
        ),
    )
    assert problems(tmp_path) == [
        "demo.yaml: .tier: expected one of 'planned', 'preview', 'proposed', 'stable', got 'gold'",
        "demo.yaml: .versions[0].colour: unknown key (known keys: arches, latest, name, version)",
        "demo.yaml: .versions[0].version: expected a string, got 1 (quote it: '1')",
        "demo.yaml: .upstream.arches.riscv: expected one of 'amd64', 'arm64', 's390x', got 'riscv'",
        "demo.yaml: .upstream.checksum.format: expected one of 'bsd', 'gnu', 'single', "
        "'json', got 'md5'",
        "other.yaml: .upstream.discovery.index: unknown placeholder {release} "
        "(allowed: arch, flavor, name, uarch, version)",
    ]


def test_missing_keys_bad_regex_and_cross_checks(tmp_path: Path) -> None:
    bad = (
        GOOD.replace("homepage: https://example.org/\n", "")
        .replace("(?P<release>[0-9]{8})", "([0-9]{8}")
        .replace("kind: listing", "kind: dated-folders")
        .replace(UNSIGNED, "signature: {kind: detached}")
    )
    assert problems(write(tmp_path, "demo", bad)) == [
        "demo.yaml: .homepage: required key is missing",
        "demo.yaml: .upstream.discovery.match: not a valid regular expression: "
        "missing ), unterminated subpattern",
    ]
    bad = (
        GOOD.replace("kind: listing", "kind: dated-folders")
        .replace(UNSIGNED, "signature: {kind: detached}")
        .replace('version: "1"', 'version: "1"\n  - version: "1"')
    )
    assert problems(write(tmp_path, "demo", bad)) == [
        "demo.yaml: .versions[1].version: '1' is listed twice",
        "demo.yaml: .upstream.discovery.folder: required when kind is dated-folders",
        "demo.yaml: .upstream.discovery.file: required when kind is dated-folders",
        "demo.yaml: .upstream.signature.url: required when kind is detached",
    ]


def test_name_must_match_file_and_fingerprints_are_checked(tmp_path: Path) -> None:
    bad = GOOD.replace(UNSIGNED, "signature: {kind: clearsigned, fingerprints: [abc]}")
    assert problems(write(tmp_path, "wrong", bad)) == [
        "wrong.yaml: .upstream.signature.fingerprints: not a 40-digit uppercase hex "
        "fingerprint: 'abc'",
    ]
    assert problems(write(tmp_path / "b", "wrong", GOOD)) == [
        "wrong.yaml: .name: 'demo' does not match the file name 'wrong.yaml'",
    ]


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "demo", GOOD + "  - [unclosed\n")) == [
        "demo.yaml:17: invalid YAML: did not find expected key",
    ]


def test_doit_prints_catalogue_errors_without_traceback(tmp_path: Path) -> None:
    write(tmp_path, "demo", GOOD.replace("tier: preview", "tier: gold"))
    env = {
        "KMI_CATALOGUE": str(tmp_path),
        "KMI_CACHE_DIR": str(tmp_path / "cache"),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "list"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        "ERROR: the catalogue has problems:\n"
        f"{tmp_path}/demo.yaml: .tier: expected one of 'planned', 'preview', 'proposed', "
        "'stable', got 'gold'\n"
    )


def test_docs_reference_is_generated_from_the_code() -> None:
    document = (REPO / "docs" / "catalogue.md").read_text()
    assert catalogue_reference.updated(document) == document, (
        "docs/catalogue.md is stale: run python -m kmi.catalogue_reference docs/catalogue.md"
    )


def test_docs_complete_example_is_a_valid_flavor(tmp_path: Path) -> None:
    document = (REPO / "docs" / "catalogue.md").read_text()
    example = document.split("```yaml\n", 1)[1].split("```", 1)[0]
    flavor = load_catalogue(write(tmp_path, "fedora", example)).flavor("fedora")
    assert flavor.customize.files[0].path == "/etc/motd"
    assert [t.name for t in targets_of(flavor)][:2] == ["fedora-44-amd64", "fedora-44-arm64"]


def test_unsigned_needs_a_reason_and_keys_are_never_fetched(tmp_path: Path) -> None:
    bad = GOOD.replace(UNSIGNED, "signature: {kind: none}")
    assert problems(write(tmp_path, "demo", bad)) == [
        "demo.yaml: .upstream.signature.why: required when kind is none: say why upstream is "
        "treated as unsigned (users are told)"
    ]
    fetched = GOOD.replace(
        UNSIGNED,
        "signature: {kind: clearsigned, keys: [https://example.org/KEYS.asc, /etc/key.asc], "
        "per_version: {'1': [abc]}}",
    )
    assert problems(write(tmp_path, "demo", fetched)) == [
        "demo.yaml: .upstream.signature.keys: 'https://example.org/KEYS.asc': keys are read "
        "from the repository, never fetched; keep the key file beside the catalogue (e.g. "
        "keys/<flavor>.asc) and give its path",
        "demo.yaml: .upstream.signature.per_version: not a 40-digit uppercase hex "
        "fingerprint: 'abc'",
    ]
