"""build/results.json: the latest publish outcome of every image, and the summary table
printed at the end of a run (of that run's entries only). Tasks, also parallel ones, add
their entries under a file lock; each entry names the run that wrote it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmi.files import exclusive, write_if_changed
from kmi.progress import human

COLUMNS = ("image", "status", "digest", "sent", "tags / error")


def read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(path: Path, run: str, entry: Mapping[str, Any]) -> None:
    """Add or replace one image's entry for run `run`."""
    with exclusive(path.with_name(f".{path.name}.guard")):
        data = read_results(path)
        found = data.get("images")
        images: dict[str, Any] = found if isinstance(found, dict) else {}
        images[entry["image"]] = {**entry, "run": run}
        data = {"run": run, "images": images}
        write_if_changed(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def summary(path: Path, run: str) -> str:
    """The table of this run's entries, or '' when the run published nothing."""
    data = read_results(path)
    mine = {k: v for k, v in (data.get("images") or {}).items() if v.get("run") == run}
    if not mine:
        return ""
    rows = [COLUMNS]
    for name in sorted(mine):
        e = mine[name]
        detail = e.get("error") or ", ".join(e.get("tags", []))
        digest = e.get("digest", "")[:19]
        rows.append((name, e.get("status", ""), digest, human(e.get("bytes_sent", 0)), detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    return "\n".join(lines) + f"\n(written to {path})\n"
