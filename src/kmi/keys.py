"""Stage keys: a hash of everything that shapes a stage's output, stored in its receipt.

A stage is up to date when its receipt exists and holds the key computed now. Keys chain:
each includes the keys of its inputs, so a change upstream reaches everything downstream,
and a change to one flavor's settings reaches only that flavor's targets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kmi.files import write_if_changed

KEY_FORMAT = 1


T = TypeVar("T")


def stage_key(
    stage: str,
    config: Mapping[str, Any],
    tools: Mapping[str, str] | None = None,
    inputs: Sequence[str] = (),
) -> str:
    """The key of one stage output; `config` must be JSON-serialisable."""
    material = {
        "format": KEY_FORMAT,
        "stage": stage,
        "config": config,
        "tools": dict(tools or {}),
        "inputs": list(inputs),
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_receipt(path: Path) -> dict[str, Any] | None:
    """A receipt's content, or None when it is missing or unreadable (then: rebuild)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def receipt_field(path: Path, name: str, kind: type[T]) -> T | None:
    """One field of a receipt when it holds a value of `kind`; None for a missing, damaged or
    hand-edited receipt (the caller then rebuilds, or says what to run)."""
    data = read_receipt(path)
    value = data.get(name) if data else None
    return value if isinstance(value, kind) else None


def receipt_key(path: Path) -> str | None:
    return receipt_field(path, "key", str)


def is_current(path: Path, key: str) -> bool:
    """Whether the receipt at `path` records exactly `key`."""
    return receipt_key(path) == key


def write_receipt(path: Path, key: str, details: Mapping[str, Any]) -> None:
    """Write the receipt atomically; call it last, after the output is verified and in place."""
    text = json.dumps({"key": key, **details}, indent=2, sort_keys=True) + "\n"
    write_if_changed(path, text)
