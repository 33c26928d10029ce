"""build/results.json: the latest boot test of every target and publish outcome of every
image, and the summary tables printed at the end of a run (of that run's entries only).
Tasks, also parallel ones, add their entries under a file lock; each entry names the run
that wrote it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmi.files import exclusive, write_if_changed
from kmi.progress import human

COLUMNS = ("image", "status", "digest", "sent", "tags / error")
CHECKS = ("boot", "cloud-init", "agent", "ssh")
TEST_COLUMNS = ("target", "arch", "accel", "up after", "took", *CHECKS)


def read_results(path: Path) -> dict[str, Any]:
    """The results so far; a damaged or hand-edited file keeps only what is well formed (it is
    kmi's own output, rewritten by the next entry, so a run never stops on it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    kept: dict[str, Any] = {"run": data["run"]} if isinstance(data.get("run"), str) else {}
    for section in ("images", "tests", "criteria"):
        entries = data.get(section)
        if isinstance(entries, dict):
            kept[section] = {k: v for k, v in entries.items() if isinstance(v, dict)}
    return kept


def record(path: Path, run: str, entry: Mapping[str, Any], section: str = "images") -> None:
    """Add or replace one entry (an image's publish, a target's test or its verify:T
    criteria) for run `run`."""
    name = entry["target"] if section in ("tests", "criteria") else entry["image"]
    with exclusive(path.with_name(f".{path.name}.guard")):
        data = read_results(path)
        found = data.get(section)
        entries: dict[str, Any] = found if isinstance(found, dict) else {}
        entries[name] = {**entry, "run": run}
        data = {**data, "run": run, section: entries}
        write_if_changed(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last one is left ragged."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]


def _seconds(value: Any) -> str:
    return f"{value:.0f} s" if isinstance(value, int | float) else "-"


def _mark(check: Any) -> str:
    if not isinstance(check, dict) or check.get("passed") is None:
        return "-"
    return "ok" if check["passed"] else "FAILED"


def test_rows(entries: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The test table: target, arch, accel, seconds to the first answer, total, each check."""
    rows: list[tuple[str, ...]] = [TEST_COLUMNS]
    for name in sorted(entries):
        e = entries[name]
        checks = e.get("checks") if isinstance(e.get("checks"), dict) else {}
        rows.append(
            (
                name,
                str(e.get("arch", "")),
                str(e.get("accel", "")),
                _seconds(e.get("boot_seconds")),
                _seconds(e.get("seconds")),
                *(_mark(checks.get(c)) for c in CHECKS),
            )
        )
    return rows


def _of_run(path: Path, run: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """This run's test entries and publish entries."""
    data = read_results(path)
    tested = {k: v for k, v in (data.get("tests") or {}).items() if v.get("run") == run}
    mine = {k: v for k, v in (data.get("images") or {}).items() if v.get("run") == run}
    return tested, mine


def summary(path: Path, run: str) -> str:
    """The tables of this run's entries, or '' when the run tested and published nothing."""
    tested, mine = _of_run(path, run)
    lines = _table(test_rows(tested)) if tested else []
    if lines and mine:
        lines.append("")
    if mine:
        lines += _table(_publish_rows(mine))
    if not lines:
        return ""
    return "\n".join(lines) + f"\n(written to {path})\n"


def _publish_rows(mine: Mapping[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [COLUMNS]
    for name in sorted(mine):
        e = mine[name]
        detail = str(e.get("error") or ", ".join(map(str, e.get("tags") or [])))
        digest = str(e.get("digest", ""))[:19]
        sent = e.get("bytes_sent")
        size = human(sent) if isinstance(sent, int) else "-"
        rows.append((name, str(e.get("status", "")), digest, size, detail))
    return rows


def _markdown(rows: list[tuple[str, ...]]) -> list[str]:
    cells = [[c.replace("|", "\\|") for c in row] for row in rows]
    head = "| " + " | ".join(cells[0]) + " |"
    rule = "|" + "|".join(" --- " for _ in cells[0]) + "|"
    return [head, rule, *("| " + " | ".join(row) + " |" for row in cells[1:])]


def job_summary(path: Path, run: str, command: str, failures: list[tuple[str, str]]) -> str:
    """This run in Markdown for a CI job's summary page (GitHub's GITHUB_STEP_SUMMARY): what
    failed and why (each failure's first line), then this run's test and publish tables;
    '' when the run had none of these."""
    tested, mine = _of_run(path, run)
    if not (failures or tested or mine):
        return ""
    lines = [f"### kmi: `{command}`", ""]
    if failures:
        lines += [f"- **FAILED** `{task}`: {why}" for task, why in failures] + [""]
    if tested:
        lines += [*_markdown(test_rows(tested)), ""]
    if mine:
        lines += [*_markdown(_publish_rows(mine)), ""]
    return "\n".join(lines) + "\n"
