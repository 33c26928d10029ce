"""Progress of long transfers: a bar on a terminal, a few plain lines in CI logs."""

from __future__ import annotations

import multiprocessing
import sys
import time
from typing import TextIO

BAR_WIDTH = 30
BAR_INTERVAL = 0.2  # seconds between redraws
LINE_STEPS = 4  # plain lines at 25%, 50%, 75% and 100%


def say(line: str) -> None:
    """One line on stdout in a single write: lines of parallel tasks (doit -n) never mix."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Reports `done` of `total` bytes for one labelled transfer."""

    def __init__(
        self, label: str, total: int | None, mode: str = "auto", stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            # a redrawn bar garbles the terminal when parallel tasks (doit -n) share it
            alone = multiprocessing.parent_process() is None
            mode = "bar" if self.stream.isatty() and alone else "lines"
        self.mode, self.label, self.total = mode, label, total
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._next_step = 1

    def resume_from(self, done: int) -> None:
        self.done = done
        if done:
            self._say(f"{self.label}: resuming at {human(done)}")

    def advance(self, count: int) -> None:
        self.done += count
        if self.mode == "bar":
            now = time.monotonic()
            if now - self._last_draw >= BAR_INTERVAL:
                self._last_draw = now
                self._draw()
        elif self.mode == "lines" and self.total:
            while (
                self._next_step < LINE_STEPS
                and self.done * LINE_STEPS >= self.total * self._next_step
            ):
                self._say(
                    f"{self.label}: {100 * self._next_step // LINE_STEPS}% of {human(self.total)}"
                )
                self._next_step += 1

    def finish(self) -> None:
        seconds = max(time.monotonic() - self.started, 1e-6)
        if self.mode == "bar":
            self._draw()
            self.stream.write("\n")
        if self.mode != "off":
            self._say(
                f"{self.label}: {human(self.done)} in {seconds:.1f} s "
                f"({human(self.done / seconds)}/s)"
            )

    def _draw(self) -> None:
        if self.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * self.done // self.total)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            text = f"\r{self.label} [{bar}] {human(self.done)}/{human(self.total)}"
        else:
            text = f"\r{self.label} {human(self.done)}"
        self.stream.write(text)
        self.stream.flush()

    def _say(self, line: str) -> None:
        if self.mode == "off":
            return
        if self.mode == "bar":
            self.stream.write("\r")
        self.stream.write(line + "\n")
        self.stream.flush()
