"""No input file crashes kmi: catalogue files, the lock, receipts, results and settings are
fuzzed (random deletions, wrong types, unknown keys, invalid YAML/JSON, bytes that are not
UTF-8, huge values, deep nesting); every case must end in success or in located one-line
errors, never in another exception. KMI_FUZZ_SEED picks another seed; each test prints how
many cases it tried."""

from __future__ import annotations

import json
import os
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmi import receipts, results
from kmi.catalogue import load_flavor
from kmi.errors import KmiError, LockError
from kmi.lock import parse_lock
from kmi.settings import load_settings
from tests.conftest import REPO, Project

SEED = int(os.environ.get("KMI_FUZZ_SEED", "20261202"))
CASES = 60  # per seed file and kind of mutation

LOCK = {
    "format": 1,
    "targets": {
        "debian-13-amd64": {
            "flavor": "debian",
            "url": "https://cloud.debian.org/images/cloud/trixie/20261001-2000/"
            "debian-13-genericcloud-amd64-20261001-2000.qcow2",
            "digest": "sha512:" + "ab" * 64,
            "size": 123456,
            "release": "20261001-2000",
            "found": "2026-10-02T01:02:03Z",
            "checksum_url": "https://cloud.debian.org/images/cloud/trixie/20261001-2000/SHA512SUMS",
            "signed_by": "unsigned",
            "source": "0123456789abcdef",
        },
        "fedora-44-amd64": {
            "flavor": "fedora",
            "url": "https://download.fedoraproject.org/pub/fedora/linux/releases/44/Cloud/"
            "x86_64/images/Fedora-Cloud-Base-Generic-44-1.7.x86_64.qcow2",
            "digest": "sha256:" + "cd" * 32,
            "size": None,
            "release": "1.7",
            "found": "2026-10-02T01:02:03Z",
            "checksum_url": "https://download.fedoraproject.org/CHECKSUM",
            "signed_by": "36F612DCF27F7D1A48A835E4DBFCF71C6D9F90A6",
        },
    },
    "versions": {"fedora": ["44", "43"]},
}
RECEIPT = {"key": "a" * 64, "digest": "sha256:" + "b" * 64, "annotations": {"a": "b"}}
RESULTS = {
    "run": "R",
    "images": {"debian-13": {"run": "R", "status": "pushed", "tags": ["13"], "bytes_sent": 9}},
    "tests": {"debian-13-amd64": {"run": "R", "arch": "amd64", "checks": {"boot": {}}}},
}
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    10**40,
    1.5,
    float("nan"),
    "",
    "x" * 200_000,
    "\u202e\u0000\udcff"[:2],
    [],
    [[[]]],
    {},
    {"k": "v"},
    "../../etc/passwd",
]


def mutations(rng: random.Random, text: bytes) -> Iterator[tuple[str, bytes]]:
    """Byte-level damage: deletions, truncation, foreign bytes, a huge line."""
    for _ in range(CASES):
        cut = rng.randrange(len(text) + 1)
        yield "truncated", text[:cut]
        start = rng.randrange(len(text) + 1)
        yield "deleted", text[:start] + text[start + rng.randrange(1, 40) :]
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        yield "not UTF-8", text[:start] + b"\xff" + noise + text[start:]
        yield "random", bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    yield "huge", text + b"\n" + b"a" * (2 << 20)
    yield "empty", b""
    yield "deep", b"[" * 50_000 + b"]" * 50_000


def tree_mutations(rng: random.Random, data: Any) -> Iterator[tuple[str, Any]]:
    """Structure-level damage: keys deleted, values of wrong types, unknown keys."""
    for _ in range(CASES):
        for how in ("delete", "retype", "unknown"):
            copy = json.loads(json.dumps(data))
            node, key = _pick(rng, copy)
            if node is None:
                continue
            if how == "delete" and isinstance(node, dict):
                del node[key]
            elif how == "retype":
                node[key] = rng.choice(ODD_VALUES)
            elif isinstance(node, dict):
                node["".join(rng.choices(string.ascii_lowercase, k=6))] = rng.choice(ODD_VALUES)
            yield how, copy


def _pick(rng: random.Random, data: Any) -> tuple[Any, Any]:
    """A random container in `data` and one of its keys (or indexes)."""
    node: Any = None
    key: Any = None
    current = data
    for _ in range(rng.randrange(1, 6)):
        if isinstance(current, dict) and current:
            node, key = current, rng.choice(list(current))
        elif isinstance(current, list) and current:
            node, key = current, rng.randrange(len(current))
        else:
            break
        current = node[key]
    return node, key


def report(capsys: pytest.CaptureFixture[str], kind: str, count: int) -> None:
    with capsys.disabled():
        print(f"\nfuzz: {count} {kind} cases, seed {SEED}, no traceback")


def located(problems: list[str], path: Path) -> None:
    assert problems, "an error with no message"
    for line in problems:
        assert line.startswith(str(path)), line
        assert "\n" not in line and "Traceback" not in line


def test_fuzzed_catalogue_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED)
    count = 0
    for source in sorted((REPO / "distros").glob("*.yaml")):
        text = source.read_bytes()
        path = tmp_path / source.name
        cases = [*mutations(rng, text)]
        data = yaml.safe_load(text)
        for how, tree in tree_mutations(rng, data):
            cases.append((how, yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "replace")))
        cases.append(("alias bomb", b'a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n'))
        for how, case in cases:
            path.write_bytes(case)
            flavor, problems = load_flavor(path)
            assert (flavor is None) == bool(problems), how
            if problems:
                located(problems, path)
            count += 1
    report(capsys, "catalogue", count)
    assert count > 3000


def test_fuzzed_lock_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED + 1)
    path = tmp_path / "lock.json"
    text = json.dumps(LOCK, indent=2).encode()
    cases = [*mutations(rng, text)]
    cases += [(how, json.dumps(tree).encode()) for how, tree in tree_mutations(rng, LOCK)]
    md5 = json.loads(text)
    md5["targets"]["debian-13-amd64"]["digest"] = "md5:" + "0" * 32
    cases.append(("md5", json.dumps(md5).encode()))
    accepted = 0
    for how, case in cases:
        try:
            parse_lock(case, path)
            accepted += 1
        except LockError as err:
            located(err.problems, path)
            assert how != "md5" or ".digest: expected 'sha256:<64 hex>'" in str(err)
    report(capsys, "lock", len(cases))
    assert 0 < accepted < len(cases)


def _survives(env: dict[str, str], root: Path) -> None:
    try:
        load_settings(env, root)
    except KmiError as err:
        assert "\n" not in str(err)


def test_fuzzed_receipts_and_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED + 2)
    receipt, found = tmp_path / "build.json", tmp_path / "results.json"
    count = 0
    for source, path in ((RECEIPT, receipt), (RESULTS, found)):
        text = json.dumps(source).encode()
        cases = [*mutations(rng, text)]
        cases += [(how, json.dumps(tree).encode()) for how, tree in tree_mutations(rng, source)]
        for _, case in cases:
            path.write_bytes(case)
            assert isinstance(receipts.key_of(path), str | None)  # a damaged key: stale
            for kind in (receipts.Manifest, receipts.Publish, receipts.Build, receipts.Test):
                typed = receipts.read(path, kind)  # None, or every field of its type
                assert typed is None or isinstance(typed, kind)
            results.summary(path, "R")
            results.record(path, "R2", {"image": "x", "status": "pushed"})
            assert "x" in results.read_results(path)["images"]
            count += 1
    report(capsys, "receipt and results", count)


SETTINGS = [
    "KMI_MIRROR",
    "KMI_LOCKED",
    "KMI_HTTP_RETRIES",
    "KMI_HTTP_BACKOFF",
    "KMI_HTTP_TIMEOUT",
    "KMI_PROGRESS",
    "KMI_ACCEL",
    "KMI_REGISTRY",
    "KMI_REGISTRY_INSECURE",
    "KMI_LAYER_COMPRESSION",
    "KMI_INDEX_ARCHES",
    "KMI_ENGINE",
    "KMI_TEST_TIMEOUT",
    "KMI_TEST_MEMORY",
    "KMI_GUESTFS_TIMEOUT",
    "KMI_UNTESTED_TIERS",
    "KMI_CI_RUNNERS",
    "KMI_REQUIRE_SIGNED",
    "KMI_RECORD",
    "KMI_CACHE_URL",
]
WORDS = ["", "1", "0", "-1", "inf", "nan", "1e999", "yes", "x=1", "amd64=", "=", ",", " "]


def test_fuzzed_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED + 3)
    count = 0
    for name in SETTINGS:
        for _ in range(CASES):
            value = rng.choice(
                [
                    rng.choice(WORDS),
                    "".join(rng.choices(string.printable, k=rng.randrange(12))),
                    "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(8))),
                ]
            )
            _survives({name: value}, tmp_path)
            count += 1
    report(capsys, "settings", count)


def test_damaged_files_through_doit_are_one_error(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same, end to end: doit loads the damaged file and prints ERROR, no traceback."""
    rng = random.Random(SEED + 4)
    lock, debian = project.catalogue / "lock.json", project.catalogue / "debian.yaml"
    good = debian.read_bytes()
    cases = [
        (lock, b'{"format": 1, "targets": {"debian-13-amd64": {"digest": 5}}}'),
        (lock, b"\xff\xfe{"),
        (lock, json.dumps(LOCK).encode()[: rng.randrange(20, 200)]),
        (debian, good.replace(b"name: debian", b"name: [debian")),
        (debian, b"\xc3\x28" + good),
        (debian, good + b"\nextra: &a [1]\nmore: *a\n"),
    ]
    for path, case in cases:
        path.write_bytes(case)
        run = project.doit("list", KMI_HTTP_RETRIES=rng.choice(["nan", "3"]))
        assert run.code != 0 and "Traceback" not in run.out, run.out
        assert run.out.startswith("ERROR: "), run.out
        assert str(path) in run.out or "KMI_HTTP_RETRIES" in run.out, run.out
        path.unlink()
        debian.write_bytes(good)
    report(capsys, "doit list", len(cases))
