"""The one place that maps CLI flags and environment variables onto settings, and checks values.

Every field ``x_y`` of a settings class is the option ``--x-y`` and the environment variable
``<PREFIX>_X_Y`` (``DETECTOR_`` or ``PRODUCER_``); the command line wins over the environment,
the environment over the default. Nested settings (``kafka``, ``mapping``) share the prefix.
The README's configuration tables are generated from the classes (``python -m detector
config``), so the documentation cannot drift from the code. The classes themselves live beside
this module, one per thing they configure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any, TypeVar

from detector.errors import UsageError

T = TypeVar("T")


class ConfigError(UsageError):
    """A wrong setting; the message is one readable line naming the option."""


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default where it has one and the text does not say
    it already: a person reading ``--help`` sees what happens without the option."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        none = action.default is None or action.default is False  # no value: a flag not given
        if none or action.default == argparse.SUPPRESS or "(default" in text:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse that reports a wrong argument in one line (no usage dump) and exits 2, and
    takes no abbreviation of an option."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        # A prefix of an option is not that option: --bootstrap-server is a typo, and with
        # abbreviations a new option could silently change what an old command line means.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None,
        empty_ok: bool = False, shown: str | None = None) -> Any:
    """A settings field with its documentation (and allowed values) attached.

    ``empty_ok``: an empty environment variable is a value (``""``: none), not "unset";
    for paths where empty says that the input has no such field. ``shown``: the default as
    the documentation gives it, where the field's own is resolved later (``None`` at first).
    """
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "empty_ok": empty_ok, "shown": shown})


def shown_default(f: dataclasses.Field[Any]) -> str:
    """A field's default as ``--help`` and the README's tables give it; "" for none."""
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    if f.default in (None, (), ""):
        return ""
    return str(f.default).lower() if isinstance(f.default, bool) else str(f.default)



REPLICATION_HELP = ("Replication factor of the topics this program creates (-1: the broker's "
                    "default.replication.factor); below min.insync.replicas + 1 a warning "
                    "says one broker down stops writes.")


def replication(value: int) -> None:
    if value != -1 and value < 1:
        raise ConfigError(f"--replication-factor must be -1 (the broker's default) or at "
                          f"least 1, not {value}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(name: str, text: str) -> float:
    """``30s``, ``15m``, ``24h``, ``7d`` or a bare number of seconds, as seconds."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')}: {text!r} is not a duration such as "
                          "30s, 15m, 24h or 7d") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"--{name.replace('_', '-')} must be a finite duration >= 0")
    return value



def port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"--metrics-port {value} is not a port number")




def positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be positive (got {value})")


def not_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"--{name.replace('_', '-')} must not be negative (got {value})")


# --- the mapping of flags and environment onto settings ----------------------------------


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _base_type(hint: Any) -> type:
    """``int | None`` -> ``int``; ``tuple[str, ...]`` -> ``tuple``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _env_name(prefix: str, name: str) -> str:
    return f"{prefix}_{name.upper()}"


def _convert(text: str, kind: type, where: str) -> Any:
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if kind is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {text!r}") from None


def add_options(parser: argparse.ArgumentParser, cls: type, prefix: str) -> None:
    """Add ``--x-y`` for every (nested) field of ``cls``; defaults are resolved later."""
    for f, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            add_options(parser, hint, prefix)
            continue
        kind = _base_type(hint)
        flag = "--" + f.name.replace("_", "-")
        default = shown_default(f)
        help_text = (f"{f.metadata['help']} [env {_env_name(prefix, f.name)}"
                     + (f"; default {default}]" if default else "]"))
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif kind is tuple:
            parser.add_argument(flag, action="append", default=None, metavar="NAME",
                                help=help_text)
        else:
            parser.add_argument(flag, type=str, default=None, metavar=kind.__name__.upper(),
                                help=help_text)


def build(cls: type[T], args: argparse.Namespace, prefix: str,
          environ: Mapping[str, str] | None = None) -> T:
    """The settings from parsed flags, then the environment, then defaults. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            values[f.name] = build(hint, args, prefix, environ)
            continue
        kind = _base_type(hint)
        flag = "--" + f.name.replace("_", "-")
        env = _env_name(prefix, f.name)
        given = getattr(args, f.name, None)
        if given is not None:
            value = (given if isinstance(given, bool) else tuple(given) if kind is tuple
                     else _convert(given, kind, flag))
        elif environ.get(env, "") != "" or (env in environ and f.metadata["empty_ok"]):
            value = _convert(environ[env], kind, env)
        else:
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{flag}: {value!r} is not one of {', '.join(choices)}")
        values[f.name] = value
    return cls(**values)


def markdown_table(cls: type, prefix: str) -> str:
    """The README's configuration table for one program."""
    rows = ["| option | environment variable | default | meaning |", "|---|---|---|---|"]
    for f, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            rows += markdown_table(hint, prefix).splitlines()[2:]
            continue
        default = shown_default(f)
        default = f"`{default}`" if default else ""
        choices = f.metadata.get("choices")
        extra = f" One of {', '.join(choices)}." if choices else ""
        flag = f.name.replace("_", "-")
        env = _env_name(prefix, f.name)
        rows.append(f"| `--{flag}` | `{env}` | {default} | {f.metadata['help']}{extra} |")
    return "\n".join(rows)
