#!/usr/bin/env python3
"""A fake ``claude`` CLI for the fast tests: prints scripted stream-json and misbehaves on demand.

It speaks like ``claude -p --verbose --output-format stream-json``: it reads the prompt from
stdin (the whole of it; for ``--input-format stream-json`` see "Interactive mode" below),
prints an ``init`` line, an ``assistant`` line echoing the prompt, and a ``result`` line, then
exits 0. Sessions persist as files under ``$HOME/.claude/projects/<cwd>/`` like
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
``@die-once=NAME``    the same, the first time a CLI sees it (a file NAME in $HOME remembers);
                      later CLIs run it normally (a CLI that fails its first start)
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
tests can see exactly how the server started it, ``fake_pid`` (its process id) and
``fake_turn_in_process`` (1, 2, ...) so they can tell whether two turns ran in one process.

Interactive mode (``--input-format stream-json``, as the Agent SDKs drive the real CLI; see
CLI-FACTS.md "Interactive mode"). stdin stays open and is read line by line, each line a JSON
object (a line that is not JSON: an error on stderr, exit 1; blank lines are skipped):

- ``{"type":"user","message":{"role":"user","content":<str or text blocks>},...}``: a turn with
  that text as its prompt, with the directives above and its own init ... result. Turns run one
  at a time in arrival order; one that arrives while a turn runs is queued, unless it has
  ``"priority":"now"``: then it interrupts the running turn and runs next.
- ``control_request`` ``initialize`` -> ``{"commands":[],"models":[],"account":{}}`` (plus
  ``pending_permission_requests`` and ``session_state: "requires_action"`` while a permission
  request waits); ``interrupt`` -> ``{"still_queued":[]}``, and a running turn ends at once with a
  user line ``[Request interrupted by user]`` and a result ``error_during_execution`` /
  ``terminal_reason: "aborted_streaming"`` (``@sleep``, ``@slow`` and pending permission
  requests are cut short; a pending request is withdrawn with a ``control_cancel_request``
  line); ``set_model`` / ``set_permission_mode`` -> ``{}``, seen in later inits; any other
  subtype -> ``{"subtype":"error",...,"error":"Unsupported control request subtype: <S>"}``.
- ``control_response``: the answer to a ``can_use_tool`` request; unknown ids are ignored.

Costs: each result's ``total_cost_usd`` and ``modelUsage`` are the session's running totals
(the turns of a resumed transcript plus every turn this process ran, interrupted ones too),
``usage`` and ``model_usage_since_last_result`` the turn's own: see ``cost_fields``. Results also
carry ``stop_reason``, ``terminal_reason`` and ``permission_denials`` in this mode. stdin EOF:
the running and queued turns finish, then exit 0. An ``@api-error=`` turn leaves the process up.

Directives for tools and the interactive mode (run in the order they appear in the prompt, after
``@sleep``, before the answer):

``@permission=T[,T...]`` a tool use of each tool T (several: a comma list, or the directive
                      repeated), input ``{"command":"echo fake > f.txt",...}`` whatever T is.
                      With ``--permission-prompt-tool stdio`` (interactive mode only) it asks
                      with a ``can_use_tool`` control request and waits without a timeout: allow
                      -> tool_result ``ran: <updatedInput.command>``; deny -> an is_error
                      tool_result with the message and ``denied: <message>`` in the answer; deny
                      with ``interrupt: true`` -> the turn ends (user line ``[Request interrupted
                      by user for tool use]``, ``terminal_reason: "aborted_tools"``). An allow
                      whose ``updatedPermissions`` has an ``addRules`` entry with behavior allow
                      lets later uses of those ``toolName``s in this process run without asking.
                      Without the prompt tool: a ``system/permission_denied`` line and the
                      "Claude requested permissions to use T, but you haven't granted it yet."
                      tool_result. bypassPermissions (flag or ``set_permission_mode``) or
                      ``--dangerously-skip-permissions``: runs without asking. After stdin EOF a
                      request is answered at once with a deny, as the real CLI does.
``@ask=Question_text`` an ``AskUserQuestion`` tool use (``_`` stands for a space), asked like a
                      permission even in bypassPermissions; an allow's ``updatedInput.answers``
                      gives the tool_result ``User has answered your questions: "<q>"="<label>".``
                      and an assistant line ``answered: <label>``; a deny as above.
``@die-after-result`` exit 3 right after the result (a warm process dying between turns)
``@hang-after-result`` in the interactive mode: do not exit on stdin EOF for 3600 s
``@die-at-next``      in the interactive mode: exit 3, printing nothing, when the next user
                      message arrives (a warm process that died just as a turn came)
``@exit=N``           also in the interactive mode: exit N right after that turn's init

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
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

VERSION = "9.9.9 (Fake Claude Code)"


# In the interactive mode a reader thread answers control requests while a turn prints.
OUT_LOCK = threading.Lock()


def out(obj: dict) -> None:
    raw(json.dumps(obj) + "\n")


def raw(text: str) -> None:
    with OUT_LOCK:
        sys.stdout.write(text)
        sys.stdout.flush()


def finish(code: int) -> NoReturn:
    """Exit at once: a daemon thread blocked on stdin would make a normal exit abort."""
    with OUT_LOCK:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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
TURN_INPUT_TOKENS = 10


def cost_fields(session_turns: int) -> dict:
    """The cost fields of a result, ``session_turns`` being the turns the session has had so far,
    this one included. The one place to change when the real CLI's semantics are measured: here
    ``total_cost_usd`` and ``modelUsage`` are the running totals, the rest the turn's own."""
    return {
        "total_cost_usd": round(TURN_COST_USD * session_turns, 6),
        "usage": {"input_tokens": TURN_INPUT_TOKENS, "output_tokens": 12},
        "modelUsage": {
            "fake-model": {"inputTokens": TURN_INPUT_TOKENS * session_turns, "costUSD": TURN_COST_USD * session_turns}
        },
        "model_usage_since_last_result": {"fake-model": {"inputTokens": TURN_INPUT_TOKENS, "costUSD": TURN_COST_USD}},
    }


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


INTERRUPTED = "[Request interrupted by user]"
INTERRUPTED_FOR_TOOL_USE = "[Request interrupted by user for tool use]"
# What the real CLI's tools see when stdin closes while a permission request waits.
STREAM_CLOSED = "Tool permission stream closed before response received"
FAKE_TOOL_INPUT = {"command": "echo fake > f.txt", "description": "write a file"}
POLL_S = 0.01


@dataclass
class Session:
    """What one process knows across its turns (one turn in the print mode)."""

    argv: list[str]
    cwd: str
    session_id: str
    history: list[str]
    servers: list[dict] | None
    model: str
    permission_mode: str
    interactive: bool = False
    prompt_tool: bool = False
    prior_turns: int = 0
    turns: int = 0
    remembered: set[str] = field(default_factory=set)
    denials: list[dict] = field(default_factory=list)
    hang_on_eof: bool = False
    die_at_next: bool = False

    @property
    def bypass(self) -> bool:
        return self.permission_mode == "bypassPermissions" or "--dangerously-skip-permissions" in self.argv


class Aborted(Exception):
    """The running turn ends now (an interrupt, a 'now' message, a deny with interrupt)."""

    def __init__(self, reason: str, text: str = INTERRUPTED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.text = text


@dataclass
class Pending:
    frame: dict
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict = field(default_factory=dict)


class Channel:
    """What a turn needs from stdin: waits that an interrupt cuts short, and permission answers.
    In the print mode nothing ever sets ``abort``, so its waits are plain sleeps."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.abort = threading.Event()
        self.pending: dict[str, Pending] = {}
        self.eof = False

    def sleep(self, seconds: float) -> None:
        if self.abort.wait(seconds):
            raise Aborted("aborted_streaming")

    def check(self) -> None:
        if self.abort.is_set():
            raise Aborted("aborted_streaming")

    def ask(self, request: dict) -> dict:
        """Print a can_use_tool request and wait for its answer, with no timeout (as the real CLI)."""
        rid = str(uuid.uuid4())
        pending = Pending({"type": "control_request", "request_id": rid, "request": request})
        with self.lock:
            if self.eof:
                return {"behavior": "deny", "message": STREAM_CLOSED}
            self.pending[rid] = pending
        out(pending.frame)
        while not pending.done.wait(POLL_S):
            if self.abort.is_set():
                with self.lock:
                    self.pending.pop(rid, None)
                out({"type": "control_cancel_request", "request_id": rid})
                raise Aborted("aborted_streaming")
        return pending.answer


def prelude(argv: list[str], prompt: str) -> int | None:
    """What a prompt's directives do before init; an exit code to stop with, or None."""
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
        raw("this is not json\n")
    noise = directive(prompt, "stderr")
    if noise:
        sys.stderr.write(("noise " * (int(noise) // 6 + 1))[: int(noise)] + "\n")
        sys.stderr.flush()
    if directive(prompt, "die-before-init") is not None:
        print("fatal: the fake CLI died before init", file=sys.stderr)
        return 2
    once = directive(prompt, "die-once")
    if once:
        flag = Path(os.environ["HOME"]) / f"die-once-{once}"
        if not flag.exists():
            flag.touch()
            print("fatal: the fake CLI died before init (once)", file=sys.stderr)
            return 2

    delay_init = directive(prompt, "delay-init")
    if delay_init:
        time.sleep(float(delay_init))
    return None


def open_session(argv: list[str], interactive: bool) -> Session | int:
    """The session a process serves (new, resumed or forked), or the exit code of a failed start."""
    agent = flag_value(argv, "--agent")
    if agent is not None and agent not in BUILTIN_AGENTS and not (config_dir() / "agents" / f"{agent}.md").is_file():
        print(f"--agent '{agent}' not found.", file=sys.stderr)
        return 1
    servers = mcp_servers(argv)

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
    return Session(
        argv=argv,
        cwd=os.getcwd(),
        session_id=session_id,
        history=history,
        servers=servers,
        model=flag_value(argv, "--model") or "fake-model",
        permission_mode=flag_value(argv, "--permission-mode") or "default",
        interactive=interactive,
        prompt_tool=interactive and flag_value(argv, "--permission-prompt-tool") == "stdio",
        prior_turns=len(history),
    )


class Turn:
    """One turn: init, what the prompt's directives ask for, the answer, the result."""

    def __init__(self, s: Session, prompt: str, ch: Channel) -> None:
        self.s = s
        self.prompt = prompt
        self.ch = ch
        self.partial = directive(prompt, "partial") is not None and "--include-partial-messages" in s.argv
        self.notes: list[str] = []

    def stream_event(self, event: dict) -> None:
        out({"type": "stream_event", "event": event, "session_id": self.s.session_id, "parent_tool_use_id": None})

    def assistant(self, text: str) -> None:
        message: dict = {"role": "assistant", "content": [{"type": "text", "text": text}]}
        if self.partial:
            message = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", **message}
            start = {**message, "content": [], "usage": {"input_tokens": 10, "output_tokens": 1}}
            self.stream_event({"type": "message_start", "message": start})
            block = {"type": "text", "text": ""}
            self.stream_event({"type": "content_block_start", "index": 0, "content_block": block})
            for i in range(0, len(text), 8):
                delta = {"type": "text_delta", "text": text[i : i + 8]}
                self.stream_event({"type": "content_block_delta", "index": 0, "delta": delta})
        out({"type": "assistant", "message": message, "session_id": self.s.session_id})
        if self.partial:
            self.stream_event({"type": "content_block_stop", "index": 0})
            delta = {"stop_reason": "end_turn", "stop_sequence": None}
            self.stream_event({"type": "message_delta", "delta": delta, "usage": {"output_tokens": 12}})
            self.stream_event({"type": "message_stop"})

    def user(self, content: list[dict]) -> None:
        message = {"role": "user", "content": content}
        out({"type": "user", "message": message, "parent_tool_use_id": None, "session_id": self.s.session_id})

    def tool_use(self, name: str, tool_input: dict) -> str:
        tool_use_id = f"toolu_{uuid.uuid4().hex[:24]}"
        block = {"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input}
        message = {"role": "assistant", "content": [block]}
        out({"type": "assistant", "message": message, "parent_tool_use_id": None, "session_id": self.s.session_id})
        return tool_use_id

    def tool_result(self, tool_use_id: str, content: str, is_error: bool = False) -> None:
        self.user([{"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error}])

    def refused(self, name: str, tool_use_id: str, tool_input: dict, message: str) -> None:
        """A tool use refused by the answer to its permission request (or for want of a way to ask)."""
        self.tool_result(tool_use_id, message, is_error=True)
        self.s.denials.append({"tool_name": name, "tool_use_id": tool_use_id, "tool_input": tool_input})

    def auto_denied(self, name: str, tool_use_id: str, tool_input: dict) -> None:
        message = f"Claude requested permissions to use {name}, but you haven't granted it yet."
        frame = {"type": "system", "subtype": "permission_denied", "tool_name": name, "tool_use_id": tool_use_id}
        out({**frame, "message": message, "session_id": self.s.session_id})
        self.refused(name, tool_use_id, tool_input, message)
        self.notes.append(f"denied: {message}")

    def denied(self, name: str, tool_use_id: str, tool_input: dict, answer: dict) -> None:
        message = str(answer.get("message") or "denied")
        self.refused(name, tool_use_id, tool_input, message)
        if answer.get("interrupt"):
            raise Aborted("aborted_tools", INTERRUPTED_FOR_TOOL_USE)
        self.notes.append(f"denied: {message}")

    def use_tool(self, name: str) -> None:
        """``@permission=<Tool>``: a tool use that needs the user's permission."""
        tool_input = dict(FAKE_TOOL_INPUT)
        tool_use_id = self.tool_use(name, tool_input)
        if self.s.bypass or name in self.s.remembered:
            self.tool_result(tool_use_id, f"ran: {tool_input['command']}")
            return
        if not self.s.prompt_tool:
            self.auto_denied(name, tool_use_id, tool_input)
            return
        cwd = self.s.cwd
        suggestions = [
            {
                "type": "addRules",
                "rules": [{"toolName": name, "ruleContent": "echo fake *"}],
                "behavior": "allow",
                "destination": "localSettings",
            },
            {"type": "addDirectories", "directories": [cwd], "destination": "session"},
        ]
        request = {
            "subtype": "can_use_tool",
            "tool_name": name,
            "display_name": name,
            "input": tool_input,
            "description": tool_input["description"],
            "permission_suggestions": suggestions,
            "blocked_path": f"{cwd}/f.txt",
            "tool_use_id": tool_use_id,
        }
        answer = self.ch.ask(request)
        if answer.get("behavior") != "allow":
            self.denied(name, tool_use_id, tool_input, answer)
            return
        for update in answer.get("updatedPermissions") or []:
            if update.get("type") == "addRules" and update.get("behavior") == "allow":
                self.s.remembered.update(str(rule.get("toolName")) for rule in update.get("rules") or [])
        updated = answer.get("updatedInput") or tool_input
        self.tool_result(tool_use_id, f"ran: {updated.get('command')}")

    def ask_question(self, question: str) -> None:
        """``@ask=<question>``: Claude asks the user (AskUserQuestion), answered through the permission."""
        options = [{"label": "yes", "description": "say yes"}, {"label": "no", "description": "say no"}]
        tool_input = {
            "questions": [{"question": question, "header": "Question", "options": options, "multiSelect": False}]
        }
        name = "AskUserQuestion"
        tool_use_id = self.tool_use(name, tool_input)
        if not self.s.prompt_tool:
            self.auto_denied(name, tool_use_id, tool_input)
            return
        request = {
            "subtype": "can_use_tool",
            "tool_name": name,
            "display_name": name,
            "input": tool_input,
            "description": question,
            "permission_suggestions": [],
            "tool_use_id": tool_use_id,
        }
        answer = self.ch.ask(request)
        if answer.get("behavior") != "allow":
            self.denied(name, tool_use_id, tool_input, answer)
            return
        answers = (answer.get("updatedInput") or {}).get("answers") or {}
        label = answers.get(question, "")
        self.tool_result(tool_use_id, f'User has answered your questions: "{question}"="{label}".')
        self.assistant(f"answered: {label}")

    def result(self, extra: dict) -> None:
        s = self.s
        line = {"type": "result", **extra, "session_id": s.session_id, **cost_fields(s.prior_turns + s.turns)}
        line.update({"num_turns": 1, "duration_ms": 5})
        if s.interactive:
            line["permission_denials"] = s.denials
        out(line)

    def interrupted(self, aborted: Aborted) -> None:
        self.user([{"type": "text", "text": aborted.text}])
        self.result(
            {
                "subtype": "error_during_execution",
                "is_error": True,
                "stop_reason": None,
                "terminal_reason": aborted.reason,
                "errors": [],
            }
        )

    def run(self) -> int | None:
        """Run the turn; an exit code for the process, or None to go on (interactive mode)."""
        try:
            return self.steps()
        except Aborted as aborted:
            self.interrupted(aborted)
            return None

    def steps(self) -> int | None:
        s, prompt, ch = self.s, self.prompt, self.ch
        s.turns += 1
        s.denials = []
        # The transcript is written before init, so a session whose init was seen can resume.
        s.history.append(prompt)
        tdir = transcript_dir(s.cwd)
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / f"{s.session_id}.jsonl").write_text("\n".join(s.history) + "\n")
        init = {
            "type": "system",
            "subtype": "init",
            "cwd": s.cwd,
            "session_id": s.session_id,
            "tools": ["Bash", "Edit", "Read"],
            "model": s.model,
            "permissionMode": s.permission_mode,
            "claude_code_version": VERSION.split()[0],
            "fake_argv": s.argv,
            "fake_env": sorted(os.environ),
            "fake_pid": os.getpid(),
            "fake_turn_in_process": s.turns,
        }
        if s.servers is not None:
            init["mcp_servers"] = s.servers
        out(init)

        code = directive(prompt, "exit")
        if code is not None:
            return int(code)
        if not logged_in():
            synthetic_error(s.session_id, "Not logged in · Please run /login", None)
            return 1
        api_error = directive(prompt, "api-error")
        if api_error:
            status = int(api_error)
            synthetic_error(s.session_id, API_ERRORS.get(status, f"API Error: {status}"), status)
            return None if s.interactive else 1

        if directive(prompt, "grandchild") is not None:
            child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(60)"],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.assistant(f"started pid={child.pid}")
        sleep = directive(prompt, "sleep")
        if sleep:
            ch.sleep(float(sleep))

        for kind, arg in re.findall(r"@(permission|ask)=(\S+)", prompt):
            if kind == "ask":
                self.ask_question(arg.replace("_", " "))
                continue
            for tool in filter(None, arg.split(",")):
                self.use_tool(tool)

        if directive(prompt, "unknown") is not None:
            out({"type": "brand_new_type", "subtype": "surprise", "session_id": s.session_id})
        text = " | ".join([f"fake answer {len(s.history)}: {prompt.strip()}", *self.notes])
        huge = directive(prompt, "huge")
        flood = directive(prompt, "flood")
        if huge:
            self.assistant("h" * int(huge))
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
                with OUT_LOCK:
                    stdout.write(block)
                    stdout.flush()
                written += len(block)
        else:
            slow = float(directive(prompt, "slow") or 0)
            for i in range(int(directive(prompt, "lines") or 1)):
                if slow:
                    ch.sleep(slow)
                ch.check()
                self.assistant(text if i == 0 else f"line {i}")

        extra: dict[str, Any] = {"subtype": "success", "is_error": False, "result": text}
        if s.interactive:
            extra.update({"stop_reason": "end_turn", "terminal_reason": "completed"})
        if directive(prompt, "die-at-next") is not None:
            # Before the result: the next message may arrive the instant the result is read.
            s.die_at_next = True
        self.result(extra)
        if directive(prompt, "die-after-result") is not None:
            return 3
        if directive(prompt, "hang-after-result") is not None:
            if s.interactive:
                s.hang_on_eof = True
            else:
                time.sleep(3600)
        return None if s.interactive else 0


def content_text(message: dict) -> str:
    content = (message.get("message") or {}).get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class Interactive:
    """``--input-format stream-json``: a reader thread takes stdin line by line (user messages,
    control requests, answers to our permission requests) while the main thread runs the queued
    turns one at a time."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.ch = Channel()
        self.queue: deque[str] = deque()
        self.running = False

    def serve(self) -> NoReturn:
        threading.Thread(target=self.read, daemon=True).start()
        ch = self.ch
        while True:
            with ch.lock:
                while not self.queue and not ch.eof:
                    ch.lock.wait()
                if not self.queue:
                    break
                prompt = self.queue.popleft()
                self.running = True
                ch.abort.clear()
            code = prelude(self.s.argv, prompt)
            if code is None:
                code = Turn(self.s, prompt, ch).run()
            with ch.lock:
                self.running = False
            if code is not None:
                finish(code)
        if self.s.hang_on_eof:
            time.sleep(3600)
        finish(0)

    def read(self) -> None:
        for line in sys.stdin.buffer:
            text = line.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except ValueError as e:
                message = e
            if not isinstance(message, dict):
                print(f"Error parsing streaming input line: {text[:200]}: {message}", file=sys.stderr)
                finish(1)
            self.handle(message)
        with self.ch.lock:
            self.ch.eof = True
            for pending in self.ch.pending.values():
                pending.answer = {"behavior": "deny", "message": STREAM_CLOSED}
                pending.done.set()
            self.ch.pending.clear()
            self.ch.lock.notify_all()

    def handle(self, message: dict) -> None:
        kind = message.get("type")
        ch = self.ch
        if kind == "user":
            if self.s.die_at_next:
                finish(3)
            with ch.lock:
                if message.get("priority") == "now":
                    self.queue.appendleft(content_text(message))
                    if self.running:
                        ch.abort.set()
                else:
                    self.queue.append(content_text(message))
                ch.lock.notify_all()
        elif kind == "control_request":
            self.control(str(message.get("request_id")), message.get("request") or {})
        elif kind == "control_response":
            response = message.get("response") or {}
            with ch.lock:
                pending = ch.pending.pop(str(response.get("request_id")), None)
            if pending is not None:
                if response.get("subtype") == "success":
                    pending.answer = response.get("response") or {}
                else:
                    pending.answer = {"behavior": "deny", "message": str(response.get("error") or "error")}
                pending.done.set()
        else:
            print(f"fake claude: ignoring a stdin message of type {kind!r}", file=sys.stderr)

    def control(self, rid: str, request: dict) -> None:
        subtype = request.get("subtype")
        s, ch = self.s, self.ch
        response: dict[str, Any] = {}
        if subtype == "initialize":
            response = {"commands": [], "models": [], "account": {}}
            with ch.lock:
                frames = [p.frame for p in ch.pending.values()]
            if frames:
                response.update({"pending_permission_requests": frames, "session_state": "requires_action"})
        elif subtype == "interrupt":
            response = {"still_queued": []}
        elif subtype == "set_model":
            s.model = request.get("model") or flag_value(s.argv, "--model") or "fake-model"
        elif subtype == "set_permission_mode":
            s.permission_mode = str(request.get("mode") or "default")
        else:
            error = f"Unsupported control request subtype: {subtype}"
            out({"type": "control_response", "response": {"subtype": "error", "request_id": rid, "error": error}})
            return
        ok = {"subtype": "success", "request_id": rid, "response": response}
        out({"type": "control_response", "response": ok})
        if subtype == "interrupt":
            with ch.lock:
                if self.running:
                    ch.abort.set()


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
    if flag_value(argv, "--input-format") == "stream-json":
        session = open_session(argv, interactive=True)
        if isinstance(session, int):
            return session
        Interactive(session).serve()

    prompt = sys.stdin.read()
    code = prelude(argv, prompt)
    if code is not None:
        return code
    session = open_session(argv, interactive=False)
    if isinstance(session, int):
        return session
    return Turn(session, prompt, Channel()).run() or 0


if __name__ == "__main__":
    sys.exit(main())
