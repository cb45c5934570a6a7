"""Every setting of the server: its flag, its ``CLAUDE_SERVER_*`` variable, its default, its
parser and its group in ``--help``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from claude_server.compat.models import DEFAULT_MODELS
from claude_server.settings_values import (
    LOG_FORMATS,
    LOG_LEVELS,
    MIB,
    _bool,
    _choice,
    _csv,
    _models,
    _networks,
    _non_negative_float,
    _non_negative_int,
    _permission_modes,
    _port,
    _positive_int,
    _rate,
    _seconds,
    _size,
    _system_prompt_mode,
)


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
        (),
        _csv,
        "origins (scheme://host[:port]) whose pages may call the server, comma-separated; "
        "* for any, which needs an API key",
        "security",
        default_text="none",
    ),
    Option(
        "allowed_hosts",
        "--allowed-hosts",
        "CLAUDE_SERVER_ALLOWED_HOSTS",
        (),
        _csv,
        "more names the server answers to in Host besides loopback, IP addresses and its own names, "
        "comma-separated (.example.com: it and its subdomains; *: any, behind a proxy that rewrites Host)",
        "security",
        default_text="none",
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
        "header_timeout_s",
        "--header-timeout",
        "CLAUDE_SERVER_HEADER_TIMEOUT",
        15.0,
        _seconds,
        "seconds a connection may take to send a request's headers, from when it opens or the request begins",
        "limits",
    ),
    Option(
        "body_idle_timeout_s",
        "--body-idle-timeout",
        "CLAUDE_SERVER_BODY_IDLE_TIMEOUT",
        30.0,
        _seconds,
        "seconds a request body may go without a byte arriving",
        "limits",
    ),
    Option(
        "body_timeout_s",
        "--body-timeout",
        "CLAUDE_SERVER_BODY_TIMEOUT",
        60.0,
        _seconds,
        "seconds a request body may take, plus the time its bytes earn at --body-min-rate",
        "limits",
    ),
    Option(
        "body_min_rate_bytes_per_s",
        "--body-min-rate",
        "CLAUDE_SERVER_BODY_MIN_RATE",
        16 * 1024,
        _rate,
        "bytes per second that earn a body more time past --body-timeout (K/M suffixes; 0: none)",
        "limits",
    ),
    Option(
        "max_connections",
        "--max-connections",
        "CLAUDE_SERVER_MAX_CONNECTIONS",
        4096,
        _positive_int,
        "open connections at most (lowered to what the file descriptor limit allows)",
        "limits",
    ),
    Option(
        "max_connections_per_client",
        "--max-connections-per-client",
        "CLAUDE_SERVER_MAX_CONNECTIONS_PER_CLIENT",
        256,
        _non_negative_int,
        "open connections per client address (IPv6: per /64) at most (0: no limit)",
        "limits",
    ),
    Option(
        "per_client_exempt",
        "--per-client-exempt",
        "CLAUDE_SERVER_PER_CLIENT_EXEMPT",
        ("127.0.0.0/8", "::1"),
        _networks,
        "client addresses or networks --max-connections-per-client does not apply to, comma-separated "
        "(a local proxy or Open WebUI speaks for many users; none: every client)",
        "limits",
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
