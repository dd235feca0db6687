"""Expected failures: each carries one readable line and the exit code the CLI returns."""

from __future__ import annotations


class DetectorError(Exception):
    """Something the user can fix (a broker to start, a setting to change): no traceback."""

    exit_code = 1


class UsageError(DetectorError, ValueError):
    """A wrong argument or setting."""

    exit_code = 2


class MissingExtra(UsageError):
    """A command needs an optional extra that is not installed: the line says which one, so
    that ``pip install .`` without extras ends in the install command, not a traceback."""

    def __init__(self, what: str, module: str, extra: str, alternative: str = ""):
        super().__init__(f"{what} needs {module}: pip install 'trend-detector[{extra}]'"
                         + (f" ({alternative})" if alternative else ""))
