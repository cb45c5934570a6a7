"""Settings: one frozen object built from command-line flags and ``CLAUDE_SERVER_*`` variables.

Nothing else in the package reads ``os.environ`` for configuration; the CLI's child
environment is built from the environment passed in here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Option:
    """One setting: its flag, its environment variable, its default and how to parse it."""

    name: str
    flag: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _size(text: str) -> int:
    """Bytes, with an optional K/M/G suffix (binary units): ``16M`` = 16 MiB."""
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    if text and text[-1] in units:
        factor = units[text[-1]]
        text = text[:-1]
    value = int(float(text) * factor)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


OPTIONS: tuple[Option, ...] = (
    Option("host", "--host", "CLAUDE_SERVER_HOST", "127.0.0.1", str, "address to listen on"),
    Option("port", "--port", "CLAUDE_SERVER_PORT", 3000, _port, "port to listen on"),
    Option("db_path", "--db", "CLAUDE_SERVER_DB", "./sessions.db", str, "SQLite database file"),
    Option(
        "workspace_root",
        "--workspace-root",
        "CLAUDE_SERVER_WORKSPACE_ROOT",
        "./workspace",
        str,
        "directory that holds the session workspaces",
    ),
    Option(
        "claude_bin",
        "--claude-bin",
        "CLAUDE_SERVER_CLAUDE_BIN",
        "claude",
        str,
        "Claude Code CLI (name on PATH or path)",
    ),
    Option(
        "turn_timeout_s",
        "--turn-timeout",
        "CLAUDE_SERVER_TURN_TIMEOUT",
        3600.0,
        _positive_float,
        "seconds a turn may run in total",
    ),
    Option(
        "inactivity_timeout_s",
        "--inactivity-timeout",
        "CLAUDE_SERVER_INACTIVITY_TIMEOUT",
        600.0,
        _positive_float,
        "seconds a turn may go without printing a line",
    ),
    Option(
        "cors_origins",
        "--cors-origins",
        "CLAUDE_SERVER_CORS_ORIGINS",
        ("*",),
        _csv,
        "comma-separated allowed origins",
    ),
    Option(
        "max_body_bytes",
        "--max-body-size",
        "CLAUDE_SERVER_MAX_BODY_SIZE",
        16 * MIB,
        _size,
        "largest request body accepted (bytes; K/M/G suffixes allowed)",
    ),
    Option(
        "child_env",
        "--child-env",
        "CLAUDE_SERVER_CHILD_ENV",
        (),
        _csv,
        "extra environment variables passed to the CLI (comma-separated; NAME or PREFIX*)",
    ),
    Option(
        "log_level",
        "--log-level",
        "CLAUDE_SERVER_LOG_LEVEL",
        "INFO",
        str.upper,
        "DEBUG, INFO, WARNING or ERROR",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, fixed at start."""

    host: str = "127.0.0.1"
    port: int = 3000
    db_path: str = "./sessions.db"
    workspace_root: str = "./workspace"
    claude_bin: str = "claude"
    turn_timeout_s: float = 3600.0
    inactivity_timeout_s: float = 600.0
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 16 * MIB
    child_env: tuple[str, ...] = ()
    session_retention_days: float = 30.0
    max_upload_bytes: int = 100 * MIB
    log_level: str = "INFO"
    # The environment the CLI's own environment is filtered from (see claude.environment).
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False, compare=False)

    @property
    def workspace_root_path(self) -> Path:
        return Path(self.workspace_root).resolve()

    @property
    def db_file(self) -> Path:
        return Path(self.db_path).resolve()

    @property
    def claude_config_dir(self) -> Path:
        """Where the CLI keeps its configuration and transcripts (``projects/``)."""
        configured = self.environ.get("CLAUDE_CONFIG_DIR")
        if configured:
            return Path(configured)
        return Path(self.environ.get("HOME") or Path.home()) / ".claude"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting. A flag not given leaves no attribute at all (SUPPRESS), so
    the environment can fill in and a subcommand's parser never overwrites the main one's."""
    for opt in OPTIONS:
        default = ",".join(opt.default) if isinstance(opt.default, tuple) else opt.default
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=argparse.SUPPRESS,
            metavar=opt.name.upper().removesuffix("_S"),
            help=f"{opt.help} (env {opt.env}, default {default!s})",
        )


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings: a flag wins over its variable, which wins over the default."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = getattr(args, opt.name, None) if args is not None else None
        source = opt.flag
        if raw is None and opt.env in env and env[opt.env] != "":
            raw, source = env[opt.env], opt.env
        if raw is None:
            continue
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None
    if values.get("log_level", "INFO") not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log level {values['log_level']!r}: use DEBUG, INFO, WARNING or ERROR")
    return Settings(environ=env, **values)
