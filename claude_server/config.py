"""Settings: one frozen object built from command-line flags and ``CLAUDE_SERVER_*`` variables.

Nothing else in the package reads ``os.environ`` for configuration; the CLI's child
environment is built from the environment passed in here.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from claude_server.claude.command import PERMISSION_MODES
from claude_server.compat.models import DEFAULT_MODELS, parse_model_setting

T = TypeVar("T", int, float)

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
    switch: bool = False  # a flag without a value (--insecure-no-auth); its variable takes true/false


def _at_least(convert: Callable[[str], T], zero_ok: bool) -> Callable[[str], T]:
    """A parser for numbers above 0 (or from 0 when ``zero_ok``)."""

    def parse(text: str) -> T:
        value = convert(text)
        if value < 0 or (value == 0 and not zero_ok):
            raise ValueError("must be 0 or more" if zero_ok else "must be greater than 0")
        return value

    return parse


_positive_float = _at_least(float, zero_ok=False)
_non_negative_float = _at_least(float, zero_ok=True)
_positive_int = _at_least(int, zero_ok=False)
_non_negative_int = _at_least(int, zero_ok=True)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


def _permission_modes(text: str) -> tuple[str, ...]:
    modes = _csv(text)
    unknown = [m for m in modes if m not in PERMISSION_MODES]
    if unknown:
        raise ValueError(f"unknown permission mode(s) {', '.join(unknown)}; choose from {', '.join(PERMISSION_MODES)}")
    return modes


def _system_prompt_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("append", "replace"):
        raise ValueError("use append (--append-system-prompt) or replace (--system-prompt)")
    return mode


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
        "config_dir",
        "--claude-config-dir",
        "CLAUDE_SERVER_CLAUDE_CONFIG_DIR",
        "",
        str,
        "Claude configuration directory the server manages and starts the CLI with "
        "(default: the CLI's own, $CLAUDE_CONFIG_DIR or $HOME/.claude)",
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
        (),
        _csv,
        "origins (scheme://host[:port]) whose pages may call the server, comma-separated; "
        "* for any, which needs an API key (default: none)",
    ),
    Option(
        "allowed_hosts",
        "--allowed-hosts",
        "CLAUDE_SERVER_ALLOWED_HOSTS",
        (),
        _csv,
        "more names the server answers to in Host besides loopback, IP addresses and its own names, "
        "comma-separated (.example.com: it and its subdomains; *: any, behind a proxy that rewrites Host)",
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
        "api_keys",
        "--api-keys",
        "CLAUDE_SERVER_API_KEYS",
        (),
        _csv,
        "operator (admin) API keys, comma-separated; more keys with `claude-server keys create`",
    ),
    Option(
        "insecure_no_auth",
        "--insecure-no-auth",
        "CLAUDE_SERVER_INSECURE_NO_AUTH",
        False,
        _bool,
        "allow listening on a non-loopback address without any API key",
        switch=True,
    ),
    Option("health_auth", "--health-auth", "CLAUDE_SERVER_HEALTH_AUTH", False, _bool, "require a key for /health"),
    Option(
        "max_concurrent",
        "--max-concurrent",
        "CLAUDE_SERVER_MAX_CONCURRENT",
        4,
        _positive_int,
        "CLI processes running at once",
    ),
    Option("max_queue", "--max-queue", "CLAUDE_SERVER_MAX_QUEUE", 100, _non_negative_int, "turns waiting for a slot"),
    Option(
        "queue_timeout_s",
        "--queue-timeout",
        "CLAUDE_SERVER_QUEUE_TIMEOUT",
        60.0,
        _positive_float,
        "seconds a turn may wait for a slot",
    ),
    Option(
        "rate_limit_per_min",
        "--rate-limit-per-min",
        "CLAUDE_SERVER_RATE_LIMIT_PER_MIN",
        0,
        _non_negative_int,
        "turns each key may start per minute, in bursts of as many (0: no limit)",
    ),
    Option(
        "daily_budget_usd",
        "--daily-budget-usd",
        "CLAUDE_SERVER_DAILY_BUDGET_USD",
        0.0,
        _non_negative_float,
        "default daily budget of every key in USD, days in UTC (0: none)",
    ),
    Option(
        "allow_skip_permissions",
        "--allow-skip-permissions",
        "CLAUDE_SERVER_ALLOW_SKIP_PERMISSIONS",
        True,
        _bool,
        "allow dangerously-skip-permissions and permission_mode bypassPermissions",
    ),
    Option(
        "permission_modes",
        "--permission-modes",
        "CLAUDE_SERVER_PERMISSION_MODES",
        (),
        _permission_modes,
        "permission modes requests may ask for, comma-separated (default: all)",
    ),
    Option(
        "max_prompt_bytes",
        "--max-prompt-size",
        "CLAUDE_SERVER_MAX_PROMPT_SIZE",
        4 * MIB,
        _size,
        "largest prompt accepted (bytes, UTF-8; K/M/G suffixes allowed)",
    ),
    Option(
        "compat_models",
        "--compat-models",
        "CLAUDE_SERVER_COMPAT_MODELS",
        DEFAULT_MODELS,
        parse_model_setting,
        "models of the OpenAI/Anthropic-compatible API as alias=cli_model, comma-separated "
        "(an empty cli_model runs the CLI's default)",
    ),
    Option(
        "compat_system_prompt_mode",
        "--compat-system-prompt-mode",
        "CLAUDE_SERVER_COMPAT_SYSTEM_PROMPT_MODE",
        "append",
        _system_prompt_mode,
        "what a compatible request's system message does: append (to Claude Code's) or replace",
    ),
    Option(
        "compat_tool_trace",
        "--compat-tool-trace",
        "CLAUDE_SERVER_COMPAT_TOOL_TRACE",
        False,
        _bool,
        "show Claude Code's tool calls as short lines in compatible answers",
    ),
    Option(
        "session_retention_days",
        "--session-retention-days",
        "CLAUDE_SERVER_SESSION_RETENTION_DAYS",
        30.0,
        _non_negative_float,
        "purge sessions unused for this many days (0 keeps them forever)",
    ),
    Option(
        "max_upload_bytes",
        "--max-upload-size",
        "CLAUDE_SERVER_MAX_UPLOAD_SIZE",
        100 * MIB,
        _size,
        "largest file accepted by the files API (bytes; K/M/G suffixes allowed)",
    ),
    Option(
        "header_timeout_s",
        "--header-timeout",
        "CLAUDE_SERVER_HEADER_TIMEOUT",
        15.0,
        _positive_float,
        "seconds a connection may take to send a request's headers, from when it opens or the request begins",
    ),
    Option(
        "body_idle_timeout_s",
        "--body-idle-timeout",
        "CLAUDE_SERVER_BODY_IDLE_TIMEOUT",
        30.0,
        _positive_float,
        "seconds a request body may go without a byte arriving",
    ),
    Option(
        "body_timeout_s",
        "--body-timeout",
        "CLAUDE_SERVER_BODY_TIMEOUT",
        60.0,
        _positive_float,
        "seconds a request body may take, plus the time its bytes earn at --body-min-rate",
    ),
    Option(
        "body_min_rate_bytes_per_s",
        "--body-min-rate",
        "CLAUDE_SERVER_BODY_MIN_RATE",
        16 * 1024,
        _rate,
        "bytes per second that earn a body more time past --body-timeout (K/M suffixes; 0: none)",
    ),
    Option(
        "max_connections",
        "--max-connections",
        "CLAUDE_SERVER_MAX_CONNECTIONS",
        4096,
        _positive_int,
        "open connections at most (lowered to what the file descriptor limit allows)",
    ),
    Option(
        "max_connections_per_client",
        "--max-connections-per-client",
        "CLAUDE_SERVER_MAX_CONNECTIONS_PER_CLIENT",
        256,
        _non_negative_int,
        "open connections per client address (IPv6: per /64) at most (0: no limit)",
    ),
    Option(
        "per_client_exempt",
        "--per-client-exempt",
        "CLAUDE_SERVER_PER_CLIENT_EXEMPT",
        ("127.0.0.0/8", "::1"),
        _networks,
        "client addresses or networks --max-connections-per-client does not apply to, comma-separated "
        "(a local proxy or Open WebUI speaks for many users; none: every client)",
    ),
    Option("log_format", "--log-format", "CLAUDE_SERVER_LOG_FORMAT", "text", str.lower, "text or json"),
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
    config_dir: str = ""
    claude_bin: str = "claude"
    turn_timeout_s: float = 3600.0
    inactivity_timeout_s: float = 600.0
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
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
    header_timeout_s: float = 15.0
    body_idle_timeout_s: float = 30.0
    body_timeout_s: float = 60.0
    body_min_rate_bytes_per_s: int = 16 * 1024
    max_connections: int = 4096
    max_connections_per_client: int = 256
    per_client_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1")
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
    def workspace_root_path(self) -> Path:
        return Path(self.workspace_root).resolve()

    @property
    def db_file(self) -> Path:
        return Path(self.db_path).resolve()

    @property
    def claude_config_dir(self) -> Path:
        """Where the CLI keeps its configuration and transcripts (``projects/``): the managed
        directory when one is set (``__post_init__`` put it in ``environ``), else the CLI's own."""
        configured = self.environ.get("CLAUDE_CONFIG_DIR")
        if configured:
            return Path(configured)
        return Path(self.environ.get("HOME") or Path.home()) / ".claude"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting. A flag not given leaves no attribute at all (SUPPRESS), so
    the environment can fill in and a subcommand's parser never overwrites the main one's."""
    for opt in OPTIONS:
        default = ",".join(opt.default) if isinstance(opt.default, tuple) else opt.default
        if opt.switch:
            parser.add_argument(
                opt.flag,
                dest=opt.name,
                action="store_const",
                const="true",
                default=argparse.SUPPRESS,
                help=f"{opt.help} (env {opt.env}=true)",
            )
            continue
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
        raise ConfigError(
            f"CLAUDE_SERVER_LOG_LEVEL / --log-level {values['log_level']!r}: use DEBUG, INFO, WARNING or ERROR"
        )
    if values.get("log_format", "text") not in ("text", "json"):
        raise ConfigError(f"CLAUDE_SERVER_LOG_FORMAT / --log-format {values['log_format']!r}: use text or json")
    return Settings(environ=env, **values)
