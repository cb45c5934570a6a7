"""Settings: one frozen object built from command-line flags and ``CLAUDE_SERVER_*`` variables.

Nothing else in the package reads ``os.environ`` for configuration; the CLI's child
environment is built from the environment passed in here.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_server.compat.models import DEFAULT_MODELS
from claude_server.settings_file import file_of, read_settings_file
from claude_server.settings_options import GROUPS
from claude_server.settings_options import OPTIONS as SERVER_OPTIONS
from claude_server.settings_replicas import REPLICA_OPTIONS
from claude_server.settings_values import (
    DATA_DIR_NAME,
    MIB,
    ConfigError,
    Option,
    _non_negative_int,
    _port,
    _positive_int,
    _seconds,
    _seconds_or_off,
    _size,
)

# Every setting (the replica settings live in a module of their own).
OPTIONS = SERVER_OPTIONS + REPLICA_OPTIONS

__all__ = ["GROUPS", "ConfigError", "MIB", "OPTIONS", "Settings", "add_arguments", "attach_boolean_values", "load"]


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
    config_file: str = ""
    providers_file: str = ""
    turn_timeout_s: float = 3600.0
    inactivity_timeout_s: float = 600.0
    warm_idle_timeout_s: float = 300.0
    max_warm: int = 8
    permission_timeout_s: float = 600.0
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
    max_tasks_queued: int = 1000
    max_batch: int = 10
    task_retry_interrupted: bool = True
    spawn_retries: int = 2
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    webhook_timeout_s: float = 10.0
    webhook_retries: int = 5
    webhook_allow_private: bool = False
    replica_id: str = ""  # "": <host name>:<port> (see replica_name)
    advertise_url: str = ""  # "": http://<host>:<port>
    lease_seconds: float = 30.0
    # The settings a flag or a variable gave: a settings file (and its reload) does not change them.
    pinned: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    # The environment the CLI's own environment is filtered from (see claude.environment).
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.config_dir:
            # Every CLI process (turns and the version probe) gets its environment filtered
            # from ``environ``, so setting the variable here is what points them all at the
            # managed directory. Absolute: the CLI runs in the session's workspace.
            managed = str(Path(self.config_dir).expanduser().resolve())
            object.__setattr__(self, "environ", {**self.environ, "CLAUDE_CONFIG_DIR": managed})

    def update(self, changes: Mapping[str, Any]) -> None:
        """Change settings of a running server (a reload; see ``reload.RELOADABLE``): the one
        place these frozen settings change, so that whatever reads them at the time of use
        (routes, the key check) sees the new values."""
        for name, value in changes.items():
            object.__setattr__(self, name, value)

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
        """The SQLite file (meaningless when ``db_is_url``)."""
        return Path(self.db_path).resolve() if self.db_path else self.data_dir_path / "sessions.db"

    @property
    def replica_name(self) -> str:
        """This server's name among replicas: the one set, else host name and port."""
        return self.replica_id or f"{socket.gethostname()}:{self.port}"

    @property
    def replica_url(self) -> str:
        """Where other replicas reach this one: the URL set, else ``http://<host>:<port>``
        (the host name when it listens on every address)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = socket.gethostname() if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def db_is_url(self) -> bool:
        """Whether the database is PostgreSQL (a ``postgresql://`` or ``postgres://`` URL)."""
        return self.db_path.startswith(("postgresql://", "postgres://"))

    @property
    def database(self) -> Path | str:
        """What the store opens: the URL as given, else the SQLite file."""
        return self.db_path if self.db_is_url else self.db_file

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
    "db_path": "FILE|URL",
    "workspace_root": "DIR",
    "config_dir": "DIR",
    "claude_bin": "PATH",
    "providers_file": "FILE",
    "config_file": "FILE",
    "api_keys": "KEYS",
    "cors_origins": "ORIGINS",
    "allowed_hosts": "HOSTS",
    "permission_modes": "MODES",
    "child_env": "NAMES",
    "daily_budget_usd": "USD",
    "session_retention_days": "DAYS",
    "compat_models": "MODELS",
    "compat_system_prompt_mode": "MODE",
    "log_format": "FORMAT",
    "log_level": "LEVEL",
    "webhook_url": "URL",
    "webhook_secret": "SECRET",
}


def _metavar(opt: Option) -> str:
    by_kind = {
        _port: "PORT",
        _seconds: "SECONDS",
        _seconds_or_off: "SECONDS",
        _size: "SIZE",
        _positive_int: "N",
        _non_negative_int: "N",
    }
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
    """Build Settings: a flag wins over its variable, which wins over the settings file
    (``--config-file``), which wins over the default. A bad value is a ConfigError that names
    the flag, the variable or the file's key it came from, what the setting must be and the
    value: ``--port must be a number between 1 and 65535, got 'abc'``."""
    env = dict(os.environ if environ is None else environ)
    path = file_of(getattr(args, "config_file", None), env)
    from_file = read_settings_file(path, OPTIONS) if path is not None else {}
    values: dict[str, Any] = {}
    pinned = set()
    for opt in OPTIONS:
        raw = getattr(args, opt.name, None) if args is not None else None
        source = opt.flag
        if raw is None and opt.env in env and env[opt.env] != "":
            raw, source = env[opt.env], opt.env
        if raw is not None:
            pinned.add(opt.name)
        elif opt.name in from_file:
            raw, source = from_file[opt.name]
        if raw is None:
            continue
        # A subcommand's own typed flag may share a setting's name (keys create --daily-budget-usd).
        raw = raw if isinstance(raw, str) else str(raw)
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source} {exc}, got {raw!r}") from None
    return Settings(environ=env, pinned=frozenset(pinned), **values)
