"""Build the CLI's argv and environment. Pure functions, tested exhaustively.

Every CLI runs in its interactive mode (stream-json on stdin and stdout, the control
protocol of CLI-FACTS "Interactive mode"): the prompt is a user message written to its
stdin, so one process can serve turn after turn, ask for permissions, and be interrupted
without being killed."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

# The --permission-mode choices of the pinned CLI (`claude --help`), plus "default", which it
# also accepts and reports in its init line.
PermissionMode = Literal["acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan"]
PERMISSION_MODES: tuple[str, ...] = get_args(PermissionMode)

# The environment variable that marks every process of one CLI process: the CLI and,
# because they inherit it, its tools. It is set once, when the CLI starts; a warm CLI keeps
# it across the turns it serves. Processes are found by it, never by a pid alone.
PROCESS_MARKER = "CLAUDE_SERVER_PROCESS_ID"

# What the CLI may see of the server's environment. Everything else (the server's own
# CLAUDE_SERVER_* settings and keys, unrelated secrets) stays out.
ENV_ALLOW = (
    "PATH",
    "HOME",
    "LANG",
    "LC_*",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "ANTHROPIC_*",
    "CLAUDE_CODE_*",
    "CLAUDE_CONFIG_DIR",
    "IS_SANDBOX",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
)
# Set inside a Claude Code session; reported elsewhere to block nested runs.
ENV_DENY = ("CLAUDECODE", "CLAUDE_SERVER_*")


@dataclass(frozen=True)
class TurnOptions:
    """What one turn asks of the CLI. Validation happens at the HTTP edge."""

    prompt: str
    session_id: str | None = None
    skip_permissions: bool = False
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    model: str | None = None
    permission_mode: str | None = None
    max_turns: int | None = None
    system_prompt: str | None = None
    append_system_prompt: str | None = None
    fork_session: bool = False
    include_partial_messages: bool = False
    max_budget_usd: float | None = None
    agent: str | None = None
    # MCP config files (``{"mcpServers": {...}}``), one per configured server the turn enables.
    mcp_config: tuple[str, ...] = ()
    # Ask the client (over HTTP) about tool uses the permission mode and rules leave open.
    permission_prompt: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnOptions:
        """Back from ``to_json`` (JSON has lists where the options have tuples)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)

    def summary(self) -> dict[str, Any]:
        """The options as recorded with the turn (without the prompt, stored on its own)."""
        data = asdict(self)
        del data["prompt"]
        return {k: v for k, v in data.items() if v not in (None, False, ())}


# The options a running CLI cannot change: a turn asking for other ones needs a new process.
# ``model`` and ``permission_mode`` are not among them: the control protocol changes those.
# The system prompts are not either: the CLI reads them only when a session is created.
FIXED_AT_START = (
    "skip_permissions",
    "allowed_tools",
    "disallowed_tools",
    "max_turns",
    "max_budget_usd",
    "agent",
    "mcp_config",
    "include_partial_messages",
    "permission_prompt",
)


def fixed_at_start(opts: TurnOptions) -> tuple[Any, ...]:
    """What a CLI started for ``opts`` is fixed to, to compare with a later turn's."""
    return tuple(getattr(opts, name) for name in FIXED_AT_START)


def build_argv(claude_bin: str, opts: TurnOptions) -> list[str]:
    """The CLI's argv. The prompt is never in it: it is written to stdin as a user message
    (argv caps one argument at 128 KiB, and a prompt starting with '-' would be read as a
    flag). Values are joined to their flag with '=' so that a value starting with '-'
    cannot become a flag either."""
    argv = [claude_bin, "-p", "--verbose", "--input-format", "stream-json", "--output-format", "stream-json"]
    if opts.session_id:
        argv.append(f"--resume={opts.session_id}")
        if opts.fork_session:
            argv.append("--fork-session")
    if opts.skip_permissions:
        argv.append("--dangerously-skip-permissions")
    if opts.permission_mode:
        argv.append(f"--permission-mode={opts.permission_mode}")
    if opts.model:
        argv.append(f"--model={opts.model}")
    if opts.max_turns is not None:
        argv.append(f"--max-turns={opts.max_turns}")
    if opts.max_budget_usd is not None:
        argv.append(f"--max-budget-usd={opts.max_budget_usd}")
    if opts.system_prompt is not None:
        argv.append(f"--system-prompt={opts.system_prompt}")
    if opts.append_system_prompt is not None:
        argv.append(f"--append-system-prompt={opts.append_system_prompt}")
    if opts.agent is not None:
        argv.append(f"--agent={opts.agent}")
    # --mcp-config is variadic; repeating it with '=' adds each file (seen on the pinned CLI)
    # without a bare path ever standing where the CLI might read an argument.
    argv.extend(f"--mcp-config={path}" for path in opts.mcp_config)
    if opts.allowed_tools:
        # The CLI reads a comma- or space-separated list.
        argv.append("--allowedTools=" + ",".join(opts.allowed_tools))
    if opts.disallowed_tools:
        argv.append("--disallowedTools=" + ",".join(opts.disallowed_tools))
    if opts.include_partial_messages:
        argv.append("--include-partial-messages")
    if opts.permission_prompt:
        argv.append("--permission-prompt-tool=stdio")
    return argv


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def build_env(environ: Mapping[str, str], marker: str, extra_allowed: Iterable[str] = ()) -> dict[str, str]:
    """The CLI's environment: the server's, filtered through the allow-list, plus the
    process marker."""
    allowed = (*ENV_ALLOW, *extra_allowed)
    env = {k: v for k, v in environ.items() if _matches(k, allowed) and not _matches(k, ENV_DENY)}
    env[PROCESS_MARKER] = marker
    return env
