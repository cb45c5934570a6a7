"""What the server knows of its CLI before any turn: where it is, which version it is, and
whether it has credentials it can use (without making a model call)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The CLI version this release was tested with (package.json pins it for `make setup`).
TESTED_CLI_VERSION = "2.1.330"
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")

# Variables that give the CLI credentials of their own (an API key, a token, or a cloud
# provider's, whose own credentials the CLI then reads from the environment as usual).
CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
PROVIDER_SWITCHES = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")


def install_hint() -> str:
    return (
        f"Install it with `npm install -g @anthropic-ai/claude-code@{TESTED_CLI_VERSION}` (or `make setup` in "
        "the claude-server repository), or point --claude-bin / CLAUDE_SERVER_CLAUDE_BIN at it."
    )


@dataclass(frozen=True)
class CliInfo:
    """What ``<claude-bin> --version`` said at start."""

    bin: str
    path: str | None
    version: str | None
    error: str | None

    @property
    def found(self) -> bool:
        return self.path is not None and self.version is not None

    @property
    def version_number(self) -> str | None:
        found = _VERSION_RE.search(self.version or "")
        return found.group(0) if found else None

    @property
    def version_warning(self) -> str | None:
        """Why this CLI may behave unlike the one the server was tested with, or None."""
        number = self.version_number
        if number is None or number == TESTED_CLI_VERSION:
            return None
        return (
            f"Claude Code CLI {number} is not the version this server was tested with ({TESTED_CLI_VERSION}); "
            f"install that one with `npm install -g @anthropic-ai/claude-code@{TESTED_CLI_VERSION}`"
        )

    def public(self) -> dict[str, object]:
        return {
            "found": self.found,
            "version": self.version,
            "path": self.path,
            "error": self.error,
            "tested_version": TESTED_CLI_VERSION,
            "warning": self.version_warning,
        }


def resolve_bin(claude_bin: str, path_env: str | None, cwd: str | None = None) -> str | None:
    """The CLI's absolute path: a name is looked up on PATH, a path (relative ones against
    the directory the server started in) is taken as it is. Absolute, because the CLI is
    started inside a session's workspace."""
    if os.sep in claude_bin:
        candidate = os.path.join(cwd or os.getcwd(), os.path.expanduser(claude_bin))
        return os.path.abspath(candidate) if shutil.which(candidate) else None
    found = shutil.which(claude_bin, path=path_env)
    return os.path.abspath(found) if found else None


async def run_cli(path: str, args: list[str], env: Mapping[str, str], timeout_s: float) -> tuple[int, bytes, bytes]:
    """Run the CLI with ``args`` to its end: (exit code, stdout, stderr). TimeoutError once
    ``timeout_s`` passed (the process is killed); OSError when it cannot be run."""
    proc = await asyncio.create_subprocess_exec(
        path,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def probe_cli(claude_bin: str, env: Mapping[str, str], timeout_s: float = 30.0) -> CliInfo:
    """Find the CLI (on the child's PATH, or as a path) and ask it for its version."""
    path = resolve_bin(claude_bin, env.get("PATH"))
    if path is None:
        where = "at that path" if os.sep in claude_bin else "on PATH"
        return CliInfo(claude_bin, None, None, f"{claude_bin!r} not found {where}")
    try:
        code, out, err = await run_cli(path, ["--version"], env, timeout_s)
    except TimeoutError:
        return CliInfo(claude_bin, path, None, f"{path} --version did not answer within {timeout_s:.0f}s")
    except OSError as exc:
        return CliInfo(claude_bin, path, None, f"{path} could not be run: {exc}")
    if code != 0:
        detail = (err or out).decode(errors="replace").strip()[-500:]
        return CliInfo(claude_bin, path, None, f"{path} --version exited with {code}: {detail}")
    return CliInfo(claude_bin, path, out.decode(errors="replace").strip(), None)


@dataclass(frozen=True)
class Credentials:
    """Whether the CLI has credentials, and where they come from (or why it has none)."""

    found: bool
    source: str

    def public(self) -> dict[str, object]:
        return {"found": self.found, "source": self.source}


def _json_file(path: Path) -> object:
    try:
        with path.open("rb") as fh:
            return json.loads(fh.read(1024 * 1024))
    except (OSError, ValueError):
        return None


def find_credentials(env: Mapping[str, str]) -> Credentials:
    """Credentials the CLI started with ``env`` can use, read as the CLI reads them
    (docs/cli-behaviour.md): a key or token in its environment, a cloud provider switched
    on, a subscription login in ``<config dir>/.credentials.json`` (with the
    ``user:inference`` scope), an ``apiKeyHelper`` in ``settings.json``, or a key stored
    in ``.claude.json``. The fallback for a CLI without ``claude auth status``; blocking
    (reads small files)."""
    for name in CREDENTIAL_VARIABLES:
        if env.get(name, "").strip():
            return Credentials(True, f"{name} in the environment")
    for name in PROVIDER_SWITCHES:
        if env.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return Credentials(True, f"{name} in the environment")
    home = Path(env.get("HOME") or Path.home())
    configured = env.get("CLAUDE_CONFIG_DIR")
    config_dir = Path(configured) if configured else home / ".claude"
    credentials = config_dir / ".credentials.json"
    stored = _json_file(credentials)
    login = stored.get("claudeAiOauth") if isinstance(stored, dict) else None
    if isinstance(login, dict) and login.get("accessToken"):
        scopes = login.get("scopes")
        if not isinstance(scopes, list) or "user:inference" in scopes:
            return Credentials(True, f"a Claude login ({credentials})")
    settings = _json_file(config_dir / "settings.json")
    if isinstance(settings, dict) and isinstance(settings.get("apiKeyHelper"), str):
        return Credentials(True, f"apiKeyHelper in {config_dir / 'settings.json'}")
    state_file = config_dir / ".claude.json" if configured else home / ".claude.json"
    state = _json_file(state_file)
    if isinstance(state, dict) and isinstance(state.get("primaryApiKey"), str) and state["primaryApiKey"]:
        return Credentials(True, f"an API key stored in {state_file}")
    return Credentials(False, NO_CREDENTIALS.format(where=credentials))


NO_CREDENTIALS = (
    "Claude Code has no credentials: neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN is in the server's "
    "environment and the CLI is not logged in ({where}); every turn would fail with 'Not logged in'"
)


async def probe_credentials(cli_path: str | None, env: Mapping[str, str], timeout_s: float = 15.0) -> Credentials:
    """Whether the CLI has credentials, by ``claude auth status`` (0.2-1 s, no model call,
    measured on 2.1.330), else by reading where the CLI keeps them. It tells whether
    credentials are there, not whether they work: only a turn can show that."""
    if cli_path is not None:
        try:
            _, out, _ = await run_cli(cli_path, ["auth", "status"], env, timeout_s)
            status = json.loads(out) if out.strip().startswith(b"{") else None
        except (OSError, ValueError, TimeoutError):
            status = None
        if isinstance(status, dict) and isinstance(status.get("loggedIn"), bool):
            if not status["loggedIn"]:
                where = status.get("configDirectory") or "its configuration directory"
                return Credentials(False, NO_CREDENTIALS.format(where=where))
            how = [str(status[k]) for k in ("authMethod", "apiKeySource", "apiProvider") if status.get(k)]
            return Credentials(True, "claude auth status: " + ", ".join(how))
    return await asyncio.to_thread(find_credentials, env)


class CredentialCheck:
    """The last answer of ``probe_credentials``, asked again once it is too old."""

    def __init__(self) -> None:
        self.last: Credentials | None = None
        self._at = 0.0

    async def get(self, cli_path: str | None, env: Mapping[str, str], max_age_s: float) -> Credentials:
        now = time.monotonic()
        if self.last is None or now - self._at > max_age_s:
            self.last = await probe_credentials(cli_path, env)
            self._at = now
        return self.last
