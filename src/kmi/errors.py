"""User-facing errors: each carries one line that says what is wrong and what to do.

Anything that is not a KmiError is an internal bug and keeps its traceback.
"""

from __future__ import annotations


class KmiError(Exception):
    """A problem the user can fix: bad input, a missing tool, an upstream that misbehaves."""


class InputError(KmiError):
    """Every problem found in an input file, each as `file: .path.to.key: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class CatalogueError(InputError):
    """Every problem found in the catalogue."""


class LockError(InputError):
    """Every problem found in a lock file (`file: .targets.<T>.<key>: message`)."""


class VerificationError(KmiError):
    """Bytes, a checksum file or a signature that does not verify."""


class TransferError(KmiError):
    """An HTTP transfer that failed after its retries; `status` is the last HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
