"""Expected failures: each carries one readable line and the exit code the CLI returns."""

from __future__ import annotations


class DetectorError(Exception):
    """Something the user can fix (a broker to start, a setting to change): no traceback."""

    exit_code = 1


class UsageError(DetectorError, ValueError):
    """A wrong argument or setting."""

    exit_code = 2
