"""For the benchmarks: one `doit` run of kmi's dodo.py, timed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DODO = Path(__file__).resolve().parents[3] / "dodo.py"


def timed_doit(env: dict[str, str], *tasks: str) -> tuple[float, str]:
    """(wall seconds, its output) of `doit TASKS`; a failed run ends the benchmark with
    what doit printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(DODO), *tasks],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"doit {' '.join(tasks)} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started, done.stdout
