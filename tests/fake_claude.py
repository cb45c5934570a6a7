#!/usr/bin/env python3
"""A fake ``claude`` CLI for the fast tests: prints scripted stream-json and misbehaves on demand.

It speaks like ``claude -p --verbose --output-format stream-json``: it reads the prompt from
stdin, prints an ``init`` line, an ``assistant`` line echoing the prompt, and a ``result``
line, then exits 0. Sessions persist as files under ``$HOME/.claude/projects/<cwd>/`` like
the real CLI's, so ``--resume`` and ``--fork-session`` behave as measured (CLI-FACTS.md).

Directives anywhere in the prompt change what it does (all can be combined):

``@lines=N``          N assistant lines instead of one
``@slow=S``           sleep S seconds before each assistant line
``@huge=BYTES``       one assistant line carrying a text of BYTES characters
``@flood=BYTES``      assistant lines of ``@linesize`` (default 1024) bytes up to BYTES, fast
``@nonjson``          a non-JSON line on stdout before init
``@stderr=BYTES``     that much noise on stderr before init
``@exit=N``           exit with N right after init, without a result
``@die-before-init``  print an error on stderr and exit 2 before init
``@sleep=S``          stay silent S seconds after init
``@delay-init=S``     stay silent S seconds before init (a CLI that is slow to start)
``@ignore-term``      ignore SIGTERM
``@grandchild``       right after init, start a process in a session of its own (as the CLI
                      starts Bash tools) that sleeps for a minute, and print an assistant
                      line ``started pid=<n>``
``@hang-after-result`` never exit after the result
``@unknown``          a line of a type no CLI has printed yet, before the answer
``@as-root``          behave as when run as root (refuse --dangerously-skip-permissions
                      unless IS_SANDBOX=1), whoever runs it
``@partial``         with --include-partial-messages, stream each answer as the real CLI
                      does: ``stream_event`` lines (message_start, content_block_start,
                      8-character text deltas, ...) around the full ``assistant`` line,
                      which then carries the API message id (order as recorded in
                      reference/stream-json/05-partial-messages.jsonl)

``@api-error=N``      end with the result the real CLI prints after the API answered N (401,
                      429, 500, ...) and it gave up, as recorded in tests/data/stream-json/11-*

Like the real CLI, it has no credentials unless ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``
or ``CLAUDE_CODE_OAUTH_TOKEN`` is set or ``<config dir>/.credentials.json`` exists: then a
turn prints init and ends with the "Not logged in" result (08-not-logged-in.jsonl), exit 1,
and ``claude auth status`` says ``{"loggedIn": false, ...}``. Each turn costs $0.001, and
``total_cost_usd`` is the session's running total (as measured: a resumed session's total
grows by each turn, a fork starts from its parent's); ``model_usage_since_last_result``
carries the turn's own.

The init line also carries ``fake_argv`` and ``fake_env`` (the environment's names) so
tests can see exactly how the server started it.

As the real CLI does: ``--agent=<name>`` of neither a built-in agent nor a file
``<config dir>/agents/<name>.md`` prints "not found" and exits 1; each ``--mcp-config=<file>``
is read (a missing file exits 1) and its servers are listed in the init line's ``mcp_servers``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

VERSION = "9.9.9 (Fake Claude Code)"


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def directive(prompt: str, name: str, default: str | None = None) -> str | None:
    m = re.search(rf"@{re.escape(name)}(?:=(\S+))?", prompt)
    if not m:
        return default
    return m.group(1) if m.group(1) is not None else ""


def flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def transcript_dir(cwd: str) -> Path:
    home = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path(os.environ["HOME"]) / ".claude")
    return home / "projects" / re.sub(r"[^A-Za-z0-9]", "-", cwd)


BUILTIN_AGENTS = ("claude", "Explore", "general-purpose", "Plan", "statusline-setup")


def config_dir() -> Path:
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path(os.environ["HOME"]) / ".claude")


def mcp_servers(argv: list[str]) -> list[dict] | None:
    """The servers of every --mcp-config file (None without any); exits 1 as the CLI does."""
    files = [a.split("=", 1)[1] for a in argv if a.startswith("--mcp-config=")]
    if not files:
        return None
    servers = []
    for name in files:
        try:
            config = json.loads(Path(name).read_text())
        except FileNotFoundError:
            print(f"Error: Invalid MCP configuration:\nMCP config file not found: {name}", file=sys.stderr)
            sys.exit(1)
        servers += [{"name": n, "status": "connected", "source": "dynamic"} for n in config["mcpServers"]]
    return servers


def find_transcript(session_id: str) -> Path | None:
    home = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path(os.environ["HOME"]) / ".claude")
    for path in (home / "projects").glob(f"*/{session_id}.jsonl"):
        return path
    return None


CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
TURN_COST_USD = 0.001


def logged_in() -> bool:
    if any(os.environ.get(name, "").strip() for name in CREDENTIAL_VARIABLES):
        return True
    return (config_dir() / ".credentials.json").is_file()


def synthetic_error(session_id: str, text: str, status: int | None, reason: str = "api_error") -> None:
    """The synthetic assistant line and the is_error result the CLI ends a failed turn with."""
    message = {"model": "<synthetic>", "role": "assistant", "content": [{"type": "text", "text": text}]}
    out({"type": "assistant", "message": message, "session_id": session_id, "error": "unknown"})
    out(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "api_error_status": status,
            "duration_ms": 3,
            "num_turns": 1,
            "result": text,
            "stop_reason": "stop_sequence",
            "session_id": session_id,
            "total_cost_usd": 0,
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "modelUsage": {},
            "terminal_reason": reason,
        }
    )


API_ERRORS = {
    401: "Invalid API key · Fix external API key",
    429: "API Error: Request rejected (429) · rate limited",
    500: "API Error: 500 Internal server error. This is a server-side issue, usually temporary",
    529: "API Error: 529 Overloaded. This is a server-side issue, usually temporary",
}


def main() -> int:
    argv = sys.argv[1:]
    if "--version" in argv or "-v" in argv:
        print(VERSION)
        return 0
    if argv[:2] == ["auth", "status"]:
        print(json.dumps({"loggedIn": logged_in(), "authMethod": "api_key" if logged_in() else "none"}))
        return 0 if logged_in() else 1
    if "-p" not in argv or "stream-json" not in " ".join(argv) or "--verbose" not in argv:
        print("fake claude: expected -p --verbose --output-format stream-json", file=sys.stderr)
        return 64
    prompt = sys.stdin.read()
    as_root = os.geteuid() == 0 or directive(prompt, "as-root") is not None
    if "--dangerously-skip-permissions" in argv and as_root and os.environ.get("IS_SANDBOX") != "1":
        print(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
            file=sys.stderr,
        )
        return 1

    if directive(prompt, "ignore-term") is not None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if directive(prompt, "nonjson") is not None:
        sys.stdout.write("this is not json\n")
        sys.stdout.flush()
    noise = directive(prompt, "stderr")
    if noise:
        sys.stderr.write(("noise " * (int(noise) // 6 + 1))[: int(noise)] + "\n")
        sys.stderr.flush()
    if directive(prompt, "die-before-init") is not None:
        print("fatal: the fake CLI died before init", file=sys.stderr)
        return 2

    delay_init = directive(prompt, "delay-init")
    if delay_init:
        time.sleep(float(delay_init))

    agent = flag_value(argv, "--agent")
    if agent is not None and agent not in BUILTIN_AGENTS and not (config_dir() / "agents" / f"{agent}.md").is_file():
        print(f"--agent '{agent}' not found.", file=sys.stderr)
        return 1
    servers = mcp_servers(argv)

    cwd = os.getcwd()
    resume = flag_value(argv, "--resume")
    history: list[str] = []
    if resume:
        old = find_transcript(resume)
        if old is None:
            print(f"No conversation found with session ID: {resume}", file=sys.stderr)
            return 1
        history = old.read_text().splitlines()
        session_id = str(uuid.uuid4()) if "--fork-session" in argv else resume
    else:
        session_id = str(uuid.uuid4())

    # The transcript is written before init, so a session whose init was seen can resume.
    history.append(prompt)
    tdir = transcript_dir(cwd)
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / f"{session_id}.jsonl").write_text("\n".join(history) + "\n")
    init = {
        "type": "system",
        "subtype": "init",
        "cwd": cwd,
        "session_id": session_id,
        "tools": ["Bash", "Edit", "Read"],
        "model": flag_value(argv, "--model") or "fake-model",
        "permissionMode": flag_value(argv, "--permission-mode") or "default",
        "claude_code_version": VERSION.split()[0],
        "fake_argv": argv,
        "fake_env": sorted(os.environ),
    }
    if servers is not None:
        init["mcp_servers"] = servers
    out(init)

    code = directive(prompt, "exit")
    if code is not None:
        return int(code)
    if not logged_in():
        synthetic_error(session_id, "Not logged in · Please run /login", None)
        return 1
    api_error = directive(prompt, "api-error")
    if api_error:
        status = int(api_error)
        synthetic_error(session_id, API_ERRORS.get(status, f"API Error: {status}"), status)
        return 1

    partial = directive(prompt, "partial") is not None and "--include-partial-messages" in argv

    def stream_event(event: dict) -> None:
        out({"type": "stream_event", "event": event, "session_id": session_id, "parent_tool_use_id": None})

    def assistant(text: str) -> None:
        message: dict = {"role": "assistant", "content": [{"type": "text", "text": text}]}
        if partial:
            message = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", **message}
            start = {**message, "content": [], "usage": {"input_tokens": 10, "output_tokens": 1}}
            stream_event({"type": "message_start", "message": start})
            stream_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            for i in range(0, len(text), 8):
                delta = {"type": "text_delta", "text": text[i : i + 8]}
                stream_event({"type": "content_block_delta", "index": 0, "delta": delta})
        out({"type": "assistant", "message": message, "session_id": session_id})
        if partial:
            stream_event({"type": "content_block_stop", "index": 0})
            delta = {"stop_reason": "end_turn", "stop_sequence": None}
            stream_event({"type": "message_delta", "delta": delta, "usage": {"output_tokens": 12}})
            stream_event({"type": "message_stop"})

    if directive(prompt, "grandchild") is not None:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assistant(f"started pid={child.pid}")
    sleep = directive(prompt, "sleep")
    if sleep:
        time.sleep(float(sleep))

    if directive(prompt, "unknown") is not None:
        out({"type": "brand_new_type", "subtype": "surprise", "session_id": session_id})
    text = f"fake answer {len(history)}: {prompt.strip()}"
    huge = directive(prompt, "huge")
    flood = directive(prompt, "flood")
    if huge:
        assistant("h" * int(huge))
    elif flood:
        size = int(directive(prompt, "linesize") or 1024)
        template = json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": ""}]}})
        pad = max(0, size - len(template) - 1)
        line = (template.replace('"text": ""', '"text": "' + "f" * pad + '"') + "\n").encode()
        total = int(flood)
        written = 0
        block = line * max(1, (1 << 20) // len(line))
        stdout = sys.stdout.buffer
        while written < total:
            stdout.write(block)
            written += len(block)
        stdout.flush()
    else:
        slow = float(directive(prompt, "slow") or 0)
        for i in range(int(directive(prompt, "lines") or 1)):
            if slow:
                time.sleep(slow)
            assistant(text if i == 0 else f"line {i}")

    out(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": text,
            "session_id": session_id,
            # The session's running total: one turn's cost for each prompt in its history.
            "total_cost_usd": round(TURN_COST_USD * len(history), 6),
            "usage": {"input_tokens": 10, "output_tokens": 12},
            "modelUsage": {"fake-model": {"inputTokens": 10 * len(history), "costUSD": TURN_COST_USD * len(history)}},
            "model_usage_since_last_result": {"fake-model": {"inputTokens": 10, "costUSD": TURN_COST_USD}},
            "num_turns": 1,
            "duration_ms": 5,
        }
    )
    if directive(prompt, "hang-after-result") is not None:
        time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
