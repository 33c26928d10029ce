"""Stage keys: a hash of everything that shapes a stage's output, stored in its receipt.

A stage is up to date when its receipt (kmi.receipts) holds the key computed now. Keys chain:
each includes the keys of its inputs, so a change upstream reaches everything downstream,
and a change to one flavor's settings reaches only that flavor's targets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

KEY_FORMAT = 1


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
