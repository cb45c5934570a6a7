"""Settings: one frozen object built from command-line flags and ``CLAUDE_SERVER_*`` variables.

Nothing else in the package reads ``os.environ`` for configuration; the CLI's child
environment is built from the environment passed in here.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from claude_server.claude.command import PERMISSION_MODES
from claude_server.compat.models import DEFAULT_MODELS, parse_model_setting

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


# The argument groups of --help, in this order.
GROUPS = (
    ("server", "where it listens and keeps its data"),
    ("security", "who may use it and what they may ask for"),
    ("limits", "timeouts, sizes, concurrency, rates and budgets"),
    ("Claude Code CLI", "the CLI the server runs, and its environment"),
    ("sessions", None),
    ("compatible APIs", "the OpenAI- and Anthropic-compatible endpoints"),
    ("logging", None),
)

OPTIONS: tuple[Option, ...] = (
    Option("host", "--host", "CLAUDE_SERVER_HOST", "127.0.0.1", str, "address to listen on", "server"),
    Option("port", "--port", "CLAUDE_SERVER_PORT", 3000, _port, "port to listen on, 0 for any free one", "server"),
    Option(
        "data_dir",
        "--data-dir",
        "CLAUDE_SERVER_DATA_DIR",
        "",
        str,
        "directory for the database and the workspaces, unless --db or --workspace-root say otherwise",
        "server",
        default_text="$XDG_DATA_HOME/claude-server, else ~/.local/share/claude-server",
    ),
    Option(
        "db_path",
        "--db",
        "CLAUDE_SERVER_DB",
        "",
        str,
        "SQLite database file",
        "server",
        default_text="<data dir>/sessions.db",
    ),
    Option(
        "workspace_root",
        "--workspace-root",
        "CLAUDE_SERVER_WORKSPACE_ROOT",
        "",
        str,
        "directory that holds the session workspaces",
        "server",
        default_text="<data dir>/workspace",
    ),
    Option(
        "api_keys",
        "--api-keys",
        "CLAUDE_SERVER_API_KEYS",
        (),
        _csv,
        "operator (admin) API keys, comma-separated; more keys with `claude-server keys create`",
        "security",
        default_text="none",
    ),
    Option(
        "insecure_no_auth",
        "--insecure-no-auth",
        "CLAUDE_SERVER_INSECURE_NO_AUTH",
        False,
        _bool,
        "allow listening on a non-loopback address without any API key",
        "security",
    ),
    Option(
        "health_auth",
        "--health-auth",
        "CLAUDE_SERVER_HEALTH_AUTH",
        False,
        _bool,
        "require a key for /health",
        "security",
    ),
    Option(
        "cors_origins",
        "--cors-origins",
        "CLAUDE_SERVER_CORS_ORIGINS",
        ("*",),
        _csv,
        "comma-separated allowed origins",
        "security",
    ),
    Option(
        "allow_skip_permissions",
        "--allow-skip-permissions",
        "CLAUDE_SERVER_ALLOW_SKIP_PERMISSIONS",
        True,
        _bool,
        "allow dangerously-skip-permissions and permission_mode bypassPermissions",
        "security",
    ),
    Option(
        "permission_modes",
        "--permission-modes",
        "CLAUDE_SERVER_PERMISSION_MODES",
        (),
        _permission_modes,
        "permission modes requests may ask for, comma-separated",
        "security",
        default_text="all",
    ),
    Option(
        "turn_timeout_s",
        "--turn-timeout",
        "CLAUDE_SERVER_TURN_TIMEOUT",
        3600.0,
        _seconds,
        "seconds a turn may run in total",
        "limits",
        default_text="3600",
    ),
    Option(
        "inactivity_timeout_s",
        "--inactivity-timeout",
        "CLAUDE_SERVER_INACTIVITY_TIMEOUT",
        600.0,
        _seconds,
        "seconds a turn may go without printing a line",
        "limits",
        default_text="600",
    ),
    Option(
        "max_body_bytes",
        "--max-body-size",
        "CLAUDE_SERVER_MAX_BODY_SIZE",
        16 * MIB,
        _size,
        "largest request body accepted (bytes; K/M/G suffixes allowed)",
        "limits",
        default_text="16M",
    ),
    Option(
        "max_prompt_bytes",
        "--max-prompt-size",
        "CLAUDE_SERVER_MAX_PROMPT_SIZE",
        4 * MIB,
        _size,
        "largest prompt accepted (bytes, UTF-8; K/M/G suffixes allowed)",
        "limits",
        default_text="4M",
    ),
    Option(
        "max_upload_bytes",
        "--max-upload-size",
        "CLAUDE_SERVER_MAX_UPLOAD_SIZE",
        100 * MIB,
        _size,
        "largest file accepted by the files API (bytes; K/M/G suffixes allowed)",
        "limits",
        default_text="100M",
    ),
    Option(
        "max_concurrent",
        "--max-concurrent",
        "CLAUDE_SERVER_MAX_CONCURRENT",
        4,
        _positive_int,
        "CLI processes running at once",
        "limits",
    ),
    Option(
        "max_queue",
        "--max-queue",
        "CLAUDE_SERVER_MAX_QUEUE",
        100,
        _non_negative_int,
        "turns waiting for a slot",
        "limits",
    ),
    Option(
        "queue_timeout_s",
        "--queue-timeout",
        "CLAUDE_SERVER_QUEUE_TIMEOUT",
        60.0,
        _seconds,
        "seconds a turn may wait for a slot",
        "limits",
        default_text="60",
    ),
    Option(
        "rate_limit_per_min",
        "--rate-limit-per-min",
        "CLAUDE_SERVER_RATE_LIMIT_PER_MIN",
        0,
        _non_negative_int,
        "turns each key may start per minute, in bursts of as many (0: no limit)",
        "limits",
    ),
    Option(
        "daily_budget_usd",
        "--daily-budget-usd",
        "CLAUDE_SERVER_DAILY_BUDGET_USD",
        0.0,
        _non_negative_float,
        "default daily budget of every key in USD, days in UTC (0: none)",
        "limits",
        default_text="0",
    ),
    Option(
        "claude_bin",
        "--claude-bin",
        "CLAUDE_SERVER_CLAUDE_BIN",
        "claude",
        str,
        "Claude Code CLI (a name on PATH, or a path; a relative path is taken from the directory the server starts in)",
        "Claude Code CLI",
    ),
    Option(
        "config_dir",
        "--claude-config-dir",
        "CLAUDE_SERVER_CLAUDE_CONFIG_DIR",
        "",
        str,
        "Claude configuration directory the server manages and starts the CLI with",
        "Claude Code CLI",
        default_text="the CLI's own, $CLAUDE_CONFIG_DIR or $HOME/.claude",
    ),
    Option(
        "child_env",
        "--child-env",
        "CLAUDE_SERVER_CHILD_ENV",
        (),
        _csv,
        "extra environment variables passed to the CLI (comma-separated; NAME or PREFIX*)",
        "Claude Code CLI",
        default_text="none",
    ),
    Option(
        "session_retention_days",
        "--session-retention-days",
        "CLAUDE_SERVER_SESSION_RETENTION_DAYS",
        30.0,
        _non_negative_float,
        "purge sessions unused for this many days (0 keeps them forever)",
        "sessions",
        default_text="30",
    ),
    Option(
        "compat_models",
        "--compat-models",
        "CLAUDE_SERVER_COMPAT_MODELS",
        DEFAULT_MODELS,
        _models,
        "models of the OpenAI/Anthropic-compatible API as alias=cli_model, comma-separated "
        "(an empty cli_model runs the CLI's default)",
        "compatible APIs",
    ),
    Option(
        "compat_system_prompt_mode",
        "--compat-system-prompt-mode",
        "CLAUDE_SERVER_COMPAT_SYSTEM_PROMPT_MODE",
        "append",
        _system_prompt_mode,
        "what a compatible request's system message does: append (to Claude Code's) or replace",
        "compatible APIs",
    ),
    Option(
        "compat_tool_trace",
        "--compat-tool-trace",
        "CLAUDE_SERVER_COMPAT_TOOL_TRACE",
        False,
        _bool,
        "show Claude Code's tool calls as short lines in compatible answers",
        "compatible APIs",
    ),
    Option(
        "log_format",
        "--log-format",
        "CLAUDE_SERVER_LOG_FORMAT",
        "text",
        _choice(*LOG_FORMATS),
        "text or json",
        "logging",
    ),
    Option(
        "log_level",
        "--log-level",
        "CLAUDE_SERVER_LOG_LEVEL",
        "INFO",
        _choice(*LOG_LEVELS, upper=True),
        "DEBUG, INFO, WARNING or ERROR",
        "logging",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, fixed at start."""

    host: str = "127.0.0.1"
    port: int = 3000
    data_dir: str = ""  # "": $XDG_DATA_HOME/claude-server (see data_dir_path)
    db_path: str = ""  # "": <data dir>/sessions.db
    workspace_root: str = ""  # "": <data dir>/workspace
    config_dir: str = ""
    claude_bin: str = "claude"
    turn_timeout_s: float = 3600.0
    inactivity_timeout_s: float = 600.0
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 16 * MIB
    child_env: tuple[str, ...] = ()
    session_retention_days: float = 30.0
    max_upload_bytes: int = 100 * MIB
    api_keys: tuple[str, ...] = ()
    insecure_no_auth: bool = False
    health_auth: bool = False
    max_concurrent: int = 4
    max_queue: int = 100
    queue_timeout_s: float = 60.0
    rate_limit_per_min: int = 0
    daily_budget_usd: float = 0.0
    allow_skip_permissions: bool = True
    permission_modes: tuple[str, ...] = ()
    max_prompt_bytes: int = 4 * MIB
    compat_models: tuple[str, ...] = DEFAULT_MODELS
    compat_system_prompt_mode: str = "append"
    compat_tool_trace: bool = False
    log_format: str = "text"
    log_level: str = "INFO"
    # The environment the CLI's own environment is filtered from (see claude.environment).
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.config_dir:
            # Every CLI process (turns and the version probe) gets its environment filtered
            # from ``environ``, so setting the variable here is what points them all at the
            # managed directory. Absolute: the CLI runs in the session's workspace.
            managed = str(Path(self.config_dir).expanduser().resolve())
            object.__setattr__(self, "environ", {**self.environ, "CLAUDE_CONFIG_DIR": managed})

    @property
    def home(self) -> Path:
        """The home directory of ``environ`` (the server's user's, unless a test says otherwise)."""
        return Path(self.environ.get("HOME") or Path.home())

    @property
    def data_dir_path(self) -> Path:
        """Where the database and the workspaces go unless set one by one: the data directory
        given, else ``$XDG_DATA_HOME/claude-server``, else ``~/.local/share/claude-server``
        (not the directory the server happens to start in)."""
        if self.data_dir:
            given = Path(self.data_dir)
            # A shell expands ~ only at the start of a word: not in --data-dir=~/x, nor in a quoted variable.
            if given.parts and given.parts[0] == "~":
                given = self.home.joinpath(*given.parts[1:])
            return given.resolve()
        xdg = self.environ.get("XDG_DATA_HOME", "")
        # The XDG base directory spec: a relative $XDG_DATA_HOME is invalid and ignored.
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else self.home / ".local" / "share"
        return base / DATA_DIR_NAME

    @property
    def workspace_root_path(self) -> Path:
        return Path(self.workspace_root).resolve() if self.workspace_root else self.data_dir_path / "workspace"

    @property
    def db_file(self) -> Path:
        return Path(self.db_path).resolve() if self.db_path else self.data_dir_path / "sessions.db"

    @property
    def claude_config_dir(self) -> Path:
        """Where the CLI keeps its configuration and transcripts (``projects/``): the managed
        directory when one is set (``__post_init__`` put it in ``environ``), else the CLI's own."""
        configured = self.environ.get("CLAUDE_CONFIG_DIR")
        if configured:
            return Path(configured)
        return self.home / ".claude"


def _help(opt: Option) -> str:
    if opt.default_text is not None:
        default = opt.default_text
    elif isinstance(opt.default, bool):
        default = "true" if opt.default else "false"
    elif isinstance(opt.default, tuple):
        default = ",".join(opt.default)
    else:
        default = str(opt.default)
    return f"{opt.help} (env {opt.env}" + (f"; default: {default})" if default else ")")


# What --help shows as a flag's value, where the setting's name would say it less well.
_METAVARS = {
    "data_dir": "DIR",
    "db_path": "FILE",
    "workspace_root": "DIR",
    "config_dir": "DIR",
    "claude_bin": "PATH",
    "api_keys": "KEYS",
    "cors_origins": "ORIGINS",
    "permission_modes": "MODES",
    "child_env": "NAMES",
    "daily_budget_usd": "USD",
    "session_retention_days": "DAYS",
    "compat_models": "MODELS",
    "compat_system_prompt_mode": "MODE",
    "log_format": "FORMAT",
    "log_level": "LEVEL",
}


def _metavar(opt: Option) -> str:
    by_kind = {_port: "PORT", _seconds: "SECONDS", _size: "SIZE", _positive_int: "N", _non_negative_int: "N"}
    return _METAVARS.get(opt.name) or by_kind.get(opt.parse) or opt.name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting, in the argument groups of ``GROUPS``. A flag not given leaves
    no attribute at all (SUPPRESS), so the environment can fill in and a subcommand's parser
    never overwrites the main one's. A boolean's flag alone means true (``nargs="?"``); see
    ``attach_boolean_values`` for ``--flag false`` and a subcommand after a bare flag."""
    groups = {title: parser.add_argument_group(title, description) for title, description in GROUPS}
    for opt in OPTIONS:
        group = groups[opt.group]
        if opt.boolean:
            group.add_argument(
                opt.flag,
                dest=opt.name,
                nargs="?",
                const="true",
                default=argparse.SUPPRESS,
                metavar="BOOL",
                help=_help(opt),
            )
            continue
        group.add_argument(opt.flag, dest=opt.name, default=argparse.SUPPRESS, metavar=_metavar(opt), help=_help(opt))


BOOLEAN_FLAGS = frozenset(opt.flag for opt in OPTIONS if opt.boolean)


def attach_boolean_values(argv: Sequence[str], commands: Collection[str] = ()) -> list[str]:
    """``argv`` with each boolean flag in the ``--flag=value`` form argparse cannot get wrong.

    Without this, ``nargs="?"`` would take whatever follows a bare flag as its value: the
    ``serve`` of ``--insecure-no-auth serve``. So a flag followed by nothing, an option or one
    of ``commands`` becomes ``--flag=true``; followed by any other word it takes that word as
    its value (``--health-auth false``; ``--health-auth maybe`` is then refused by ``load``
    as not a boolean, not taken for a command). Nothing after ``--`` is touched.
    """
    out: list[str] = []
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            return [*out, arg, *rest]
        if arg in BOOLEAN_FLAGS:
            takes_next = rest and not rest[0].startswith("-") and rest[0] not in commands
            arg = f"{arg}={rest.pop(0) if takes_next else 'true'}"
        out.append(arg)
    return out


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings: a flag wins over its variable, which wins over the default. A bad
    value is a ConfigError that names the flag or the variable it came from, what the
    setting must be and the value: ``--port must be a number between 1 and 65535, got 'abc'``."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = getattr(args, opt.name, None) if args is not None else None
        source = opt.flag
        if raw is None and opt.env in env and env[opt.env] != "":
            raw, source = env[opt.env], opt.env
        if raw is None:
            continue
        # A subcommand's own typed flag may share a setting's name (keys create --daily-budget-usd).
        raw = raw if isinstance(raw, str) else str(raw)
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source} {exc}, got {raw!r}") from None
    return Settings(environ=env, **values)
