"""The settings file (``--config-file``, ``CLAUDE_SERVER_CONFIG_FILE``): settings in TOML,
below flags and environment variables, and read again on a reload.

Each key is a setting's variable without ``CLAUDE_SERVER_``, in lower case, with the same
values as the variable (``max_concurrent = 8``, ``permission_modes = ["default", "plan"]``,
``allow_skip_permissions = false``, ``queue_timeout = "90"``)::

    rate_limit_per_min = 30
    daily_budget_usd = 5
    log_level = "DEBUG"

An unknown key or a bad value refuses the file with one line naming the file and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from claude_server.settings_values import ConfigError, Option

PREFIX = "CLAUDE_SERVER_"
FILE_VARIABLE = "CLAUDE_SERVER_CONFIG_FILE"


def _text(value: Any) -> str:
    """A TOML value as the text its variable would hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("must be a string, a number, a boolean or a list of them")


def read_settings_file(path: Path, options: tuple[Option, ...]) -> dict[str, tuple[str, str]]:
    """``{option name: (text, where)}`` of the file; ConfigError when it cannot be used."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    by_key = {opt.env.removeprefix(PREFIX).lower(): opt for opt in options}
    found: dict[str, tuple[str, str]] = {}
    for key, value in data.items():
        opt = by_key.get(key)
        if opt is None or opt.env == FILE_VARIABLE:
            raise ConfigError(f"{path}: {key} is not a setting (keys are the variables without CLAUDE_SERVER_)")
        try:
            found[opt.name] = (_text(value), f"{path}: {key}")
        except ValueError as exc:
            raise ConfigError(f"{path}: {key} {exc}") from None
    return found


def file_of(args_value: Any, environ: Mapping[str, str]) -> Path | None:
    raw = args_value if args_value else environ.get(FILE_VARIABLE, "")
    return Path(str(raw)).expanduser() if raw else None
