"""How a setting's text becomes its value: each parser raises ``ValueError`` saying what
the value must be ("must be a number between 1 and 65535"); ``config.load`` puts the flag or
variable the value came from in front of it and the value after it."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from claude_server.claude.command import PERMISSION_MODES
from claude_server.compat.models import parse_model_setting

T = TypeVar("T", int, float)

MIB = 1024 * 1024
# The highest TCP port; 0 is also accepted and means "any free port" (tests, demos).
MAX_PORT = 65535
BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
# The sub-directory of $XDG_DATA_HOME (or ~/.local/share) the data goes to by default.
DATA_DIR_NAME = "claude-server"


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def _number(convert: Callable[[str], T], text: str) -> T | None:
    """``text`` as a finite number, or None: ``int("1.5")``, ``float("nan")`` and ``1e999``
    must end in our message, not Python's (or in an OverflowError traceback)."""
    try:
        value = convert(text.strip())
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _at_least(convert: Callable[[str], T], zero_ok: bool, what: str) -> Callable[[str], T]:
    """A parser for numbers above 0 (or from 0 when ``zero_ok``); ``what`` names the kind."""
    message = f"must be {what}, 0 or more" if zero_ok else f"must be {what} greater than 0"

    def parse(text: str) -> T:
        value = _number(convert, text)
        if value is None or value < 0 or (value == 0 and not zero_ok):
            raise ValueError(message)
        return value

    return parse


_seconds = _at_least(float, zero_ok=False, what="a number of seconds")
_seconds_or_off = _at_least(float, zero_ok=True, what="a number of seconds")
_non_negative_float = _at_least(float, zero_ok=True, what="a number")
_positive_int = _at_least(int, zero_ok=False, what="a whole number")
_non_negative_int = _at_least(int, zero_ok=True, what="a whole number")


def _bool(text: str) -> bool:
    value = BOOL_WORDS.get(text.strip().lower())
    if value is None:
        raise ValueError("must be true or false (or 1/0, yes/no, on/off)")
    return value


def _choice(*choices: str, upper: bool = False) -> Callable[[str], str]:
    """A parser for one of ``choices``, case-insensitive."""
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}"

    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be {listed}")
        return value

    return parse


def _permission_modes(text: str) -> tuple[str, ...]:
    modes = _csv(text)
    unknown = [m for m in modes if m not in PERMISSION_MODES]
    if unknown:
        raise ValueError(
            f"must be permission modes from {', '.join(PERMISSION_MODES)} (comma-separated); "
            f"{', '.join(unknown)} is not one"
        )
    return modes


def _system_prompt_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("append", "replace"):
        raise ValueError("must be append (to Claude Code's system prompt) or replace (it)")
    return mode


def _models(text: str) -> tuple[str, ...]:
    try:
        return parse_model_setting(text)
    except ValueError as exc:
        raise ValueError(f"must be alias=cli_model pairs, comma-separated ({exc})") from None


def _port(text: str) -> int:
    value = _number(int, text)
    if value is None or not 0 <= value <= MAX_PORT:
        raise ValueError(f"must be a number between 1 and {MAX_PORT}")
    return value


def _size(text: str) -> int:
    """Bytes, with an optional K/M/G suffix (binary units): ``16M`` = 16 MiB."""
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    digits = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    if digits and digits[-1] in units:
        factor = units[digits[-1]]
        digits = digits[:-1]
    number = _number(float, digits)
    value = int(number * factor) if number is not None else 0
    if value <= 0:
        raise ValueError("must be a size in bytes greater than 0, such as 16M (K, M and G suffixes allowed)")
    return value


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _rate(text: str) -> int:
    """Bytes per second like ``_size`` (``16K``), or 0."""
    return 0 if text.strip() == "0" else _size(text)


def _networks(text: str) -> tuple[str, ...]:
    """Comma-separated addresses or networks (``127.0.0.0/8,::1``); ``none`` for none."""
    if text.strip().lower() == "none":
        return ()
    parts = _csv(text)
    for part in parts:
        ipaddress.ip_network(part, strict=False)  # ValueError names the bad one
    return tuple(parts)


def _http_url(text: str) -> str:
    """An http(s) URL with a host, or empty (none)."""
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host name")
    return text


@dataclass(frozen=True)
class Option:
    """One setting: its flag, its environment variable, its default and how to parse it.

    ``parse`` raises ``ValueError`` with what the value must be ("must be a number between 1
    and 65535"); ``load`` puts the flag or variable the value came from in front of it and the
    value itself after it. ``default_text`` is what ``--help`` shows as the default: None
    shows ``default`` itself, "" shows nothing (an empty default that says nothing).
    """

    name: str
    flag: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    group: str
    default_text: str | None = None

    @property
    def boolean(self) -> bool:
        """A true/false setting: the flag alone means true, ``--flag=false`` works too."""
        return self.parse is _bool
