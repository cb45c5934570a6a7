"""The Open WebUI pipe (open_webui/claude_code.py), loaded and called the way Open WebUI
0.12.4 does it (see OPEN-WEBUI-FACTS.md): the file's source is exec'd into a fresh module,
``Pipe()`` is instantiated, its valves set, and ``pipe(...)`` is called with the whole chat
history in ``body["messages"]`` plus the ``__dunder__`` arguments Open WebUI passes.

- Pure unit tests: the parameter lines, settings carry-over, task detection and answers,
  SSE framing, rendering the CLI's recorded lines.
- Against a small in-process stub server: errors claude-server answers (HTTP errors, an
  ``event: error``, silence), which the real server cannot be made to produce on demand.
- End to end (``e2e``): the real server with the real CLI against the fake Anthropic API.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import RunningServer
from tests.fake_anthropic import FakeAnthropic, Recorded
from tests.helpers import marked_pids, turn_processes_running, wait_until

ROOT = Path(__file__).resolve().parent.parent
PIPE_SOURCE = ROOT / "open_webui" / "claude_code.py"
RECORDED = Path(__file__).resolve().parent / "data" / "stream-json"

TURN_TIMEOUT_S = 60.0
TOOL_START_TIMEOUT_S = 30.0
# After the stop button the server SIGTERMs the CLI, which ends its tools: give it this long.
CLEANUP_TIMEOUT_S = 5.0
LONG_TOOL = "[[bash: python3 -c 'import time; time.sleep(30)']]"
LONG_TOOL_CMDLINE = b"time.sleep(30)"
ECHO_RE = re.compile(r"Echo\((\d+)\): (.*)", re.S)

# ---- loading the pipe as Open WebUI does ---------------------------------------------------


def load_function(function_id: str = "claude_code") -> types.ModuleType:
    """Like open_webui.utils.plugin.load_function_module_by_id: a new module named
    ``function_<id>``, registered in sys.modules, with the file's source exec'd into it."""
    content = PIPE_SOURCE.read_text(encoding="utf-8")
    module_name = f"function_{function_id}"
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module
    module.__dict__["__file__"] = str(PIPE_SOURCE)
    exec(content, module.__dict__)
    return module


@pytest.fixture(scope="module")
def owui() -> Iterator[types.ModuleType]:
    """The pipe's module (its pure functions are tested through it too)."""
    module = load_function()
    yield module
    sys.modules.pop(module.__name__, None)


def new_pipe(owui: types.ModuleType, server_url: str, **valves: Any) -> Any:
    """``Pipe()`` with its valves set the way Open WebUI sets them (``Valves(**stored)``)."""
    pipe = owui.Pipe()
    pipe.valves = pipe.Valves(SERVER_URL=server_url, **valves)
    return pipe


@dataclass
class Answer:
    """What the pipe produced for one message, as Open WebUI received it."""

    text: str
    chunks: list[str]
    arrived: list[float]  # monotonic time of each chunk
    events: list[dict[str, Any]]

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e.get("type") == "status"]

    def echo(self) -> tuple[int, str]:
        """The fake model's ``Echo(<n>): <text>`` answer: the message count and the text."""
        match = ECHO_RE.search(self.text)
        assert match, self.text
        return int(match.group(1)), match.group(2)


@dataclass
class Chat:
    """One Open WebUI chat: the history it resends every turn and the ids it passes.

    ``bare`` is a bare ``POST /api/chat/completions`` call: no chat (chat_id ""), no event
    emitter. ``files`` are the chat's files: Open WebUI passes all of them on every turn."""

    pipe: Any
    bare: bool = False
    chat_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    messages: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    user_valves: dict[str, Any] = field(default_factory=dict)
    # Open WebUI's __event_call__ (the browser's dialogs); None where a test leaves it out.
    event_call: Callable[[dict[str, Any]], Awaitable[Any]] | None = None

    def __post_init__(self) -> None:
        if self.bare:
            self.chat_id = ""

    def call(self, stream: bool, events: list[dict[str, Any]]) -> Awaitable[Any]:
        message_id = str(uuid.uuid4())

        async def emitter(event: dict[str, Any]) -> None:
            events.append(event)

        metadata = {
            "chat_id": self.chat_id,
            "message_id": message_id,
            "session_id": "socket-" + uuid.uuid4().hex[:8],
            "user_id": "user-1",
            "task_id": str(uuid.uuid4()),
            "model_id": "claude_code",
            "files": self.files,
            "features": {},
            "variables": {},
        }
        return self.pipe.pipe(
            {"model": "claude_code", "messages": [dict(m) for m in self.messages], "stream": stream},
            __user__={
                "id": "user-1",
                "name": "Ada",
                "email": "ada@example.com",
                "role": "admin",
                "valves": self.pipe.UserValves(**self.user_valves),
            },
            __metadata__=metadata,
            __task__=None,
            __event_emitter__=None if self.bare else emitter,
            __event_call__=self.event_call,
            __chat_id__=self.chat_id,
            __message_id__=message_id,
            __files__=self.files,
            __task_body__=None,
        )

    async def send(self, text: str, *, stream: bool = True) -> Answer:
        """Send a message, read the whole answer, and keep both in the history."""
        self.messages.append({"role": "user", "content": text})
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(TURN_TIMEOUT_S):
            answer = await read_answer(await self.call(stream, events), events)
        self.messages.append({"role": "assistant", "content": answer.text})
        return answer


async def read_answer(result: Any, events: list[dict[str, Any]]) -> Answer:
    """Read what ``pipe()`` returned: a string, or an async generator of strings."""
    if isinstance(result, str):
        return Answer(result, [result], [time.monotonic()], events)
    assert isinstance(result, AsyncIterator), type(result)
    chunks, arrived = [], []
    async for chunk in result:
        assert isinstance(chunk, str), chunk
        chunks.append(chunk)
        arrived.append(time.monotonic())
    return Answer("".join(chunks), chunks, arrived, events)


async def run_task(pipe: Any, task: str | None, prompt: str, history: list[dict[str, Any]], chat_id: str) -> str:
    """A background task as Open WebUI runs it: not streamed, one user message holding the
    task's own instructions, and the chat in ``__task_body__``."""
    task_body = {"chat_id": chat_id, "messages": history, "model": "claude_code"}
    result = await pipe.pipe(
        {"model": "claude_code", "messages": [{"role": "user", "content": prompt}], "stream": False},
        __user__={"id": "user-1", "name": "Ada", "email": "ada@example.com", "role": "admin"},
        __metadata__={"chat_id": chat_id, "task": task, "task_body": task_body},
        __task__=task,
        __task_body__=task_body,
    )
    assert isinstance(result, str)
    return result


def chat_history_block(history: list[dict[str, Any]]) -> str:
    return "\n".join(f"{m['role'].upper()}: {m['content']}" for m in history)


def title_prompt(history: list[dict[str, Any]]) -> str:
    """Open WebUI's default title template, filled in."""
    return (
        "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
        "### Guidelines:\n- The title should clearly represent the main theme or subject of the conversation.\n"
        '### Output:\nJSON format: { "title": "your concise title here" }\n'
        f"### Chat History:\n<chat_history>\n{chat_history_block(history)}\n</chat_history>"
    )


def follow_up_prompt(history: list[dict[str, Any]]) -> str:
    return (
        "### Task:\nSuggest 3-5 relevant follow-up questions or prompts that the user might naturally ask next "
        "in this conversation as a **user**, based on the chat history, to help continue or deepen the discussion.\n"
        '### Output:\nJSON format: { "follow_ups": ["Question 1?", "Question 2?", "Question 3?"] }\n'
        f"### Chat History:\n<chat_history>\n{chat_history_block(history)}\n</chat_history>"
    )


def tags_prompt(history: list[dict[str, Any]]) -> str:
    return (
        "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history, along with 1-3 more "
        'specific subtopic tags.\n\n### Output:\nJSON format: { "tags": ["tag1", "tag2", "tag3"] }\n\n'
        f"### Chat History:\n<chat_history>\n{chat_history_block(history)}\n</chat_history>"
    )


AUTOCOMPLETE_PROMPT = (
    "### Task:\nYou are an autocompletion system. Continue the text in `<text>` based on the **completion type** "
    "in `<type>` and the given language.\n### Output Rules:\n"
    '- Respond in JSON format: { "text": "<your_predicted_text>" }\n<type>General</type>\n<text>How do I</text>'
)
EMOJI_PROMPT = (
    "Your task is to reflect the speaker's likely facial expression through a fitting emoji. Interpret emotions "
    "from the message and reflect their facial expression using fitting, diverse emojis.\n\nMessage: ```hello```"
)


# ---- the module as Open WebUI sees it ------------------------------------------------------


def test_the_file_loads_as_an_open_webui_function(owui: types.ModuleType) -> None:
    content = PIPE_SOURCE.read_text(encoding="utf-8")
    # open_webui.utils.plugin.extract_frontmatter: the file must open with a bare """ line.
    lines = content.splitlines()
    assert lines[0].strip() == '"""'
    pattern = re.compile(r"^\s*([a-z_]+):\s*(.*)\s*$", re.IGNORECASE)
    frontmatter = {}
    for line in lines[1:]:
        if '"""' in line:
            break
        if match := pattern.match(line):
            frontmatter[match.group(1)] = match.group(2).strip()
    assert frontmatter["title"] == "Claude Code"
    assert frontmatter["requirements"] == "aiohttp"
    assert {"author", "version", "description"} <= set(frontmatter)
    # open_webui.utils.plugin.replace_imports rewrites these anywhere in the text.
    for needle in ("from utils", "from apps", "from main", "from config"):
        assert needle not in content
    # One self-contained file: only the standard library, aiohttp and pydantic.
    imported = set(re.findall(r"^(?:from|import) (\w+)", content, re.M))
    assert imported <= set(sys.stdlib_module_names) | {"aiohttp", "pydantic"}, imported

    pipe = owui.Pipe()
    assert pipe.valves.SERVER_URL == "http://localhost:3000"
    assert pipe.valves.SHOW_TOOL_ACTIVITY is True
    assert pipe.valves.SHOW_THINKING is False
    assert pipe.valves.IDLE_TIMEOUT == 600
    # Open WebUI renders the valve forms from the JSON schemas.
    assert "SERVER_URL" in pipe.Valves.model_json_schema()["properties"]
    assert "MODEL" in pipe.UserValves.model_json_schema()["properties"]
    # Stored valves come back as keyword arguments.
    assert pipe.Valves(**{"SERVER_URL": "http://x:1", "SKIP_PERMISSIONS": True}).SKIP_PERMISSIONS is True


# ---- parameter lines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "updates", "prompt"),
    [
        ("just a question", {}, "just a question"),
        ("  \nhello\nworld  ", {}, "hello\nworld"),
        (
            "dangerously-skip-permissions=true\nprompt=Create a hello world JavaScript file",
            {"skip_permissions": True},
            "Create a hello world JavaScript file",
        ),
        (
            'allowedTools=["Bash","Edit","Write"]\nprompt=Create and run\na Python script\n\nthanks',
            {"allowed_tools": ("Bash", "Edit", "Write")},
            "Create and run\na Python script\n\nthanks",
        ),
        (
            "disallowedTools=WebFetch, WebSearch\n\nfetch it",
            {"disallowed_tools": ("WebFetch", "WebSearch")},
            "fetch it",
        ),
        (
            "permission_mode=acceptEdits\nmodel=opus\nwrite it",
            {"permission_mode": "acceptEdits", "model": "opus"},
            "write it",
        ),
        ("permissionMode = plan\nplan it", {"permission_mode": "plan"}, "plan it"),
        ("x=1 is odd?\nmodel=opus", {}, "x=1 is odd?\nmodel=opus"),  # unknown key: all prompt
        ("model=opus\nprompt=", {"model": "opus"}, ""),
        ("model=opus", {"model": "opus"}, ""),
        ("model=\nprompt=back to the default", {"model": None}, "back to the default"),
        ("allowedTools=[]\ngo", {"allowed_tools": ()}, "go"),
        ("prompt=model=opus stays text", {}, "model=opus stays text"),
    ],
)
def test_parameter_lines_at_the_top_of_a_message(
    owui: types.ModuleType, text: str, updates: dict[str, Any], prompt: str
) -> None:
    parsed = owui.parse_message(text)
    assert parsed.errors == []
    assert parsed.updates == updates
    assert parsed.prompt == prompt


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("dangerously-skip-permissions=maybe\ngo", "expected true or false"),
        ("allowedTools=[Bash\ngo", "JSON list of tool names"),
        ('allowedTools=["Bash", 3]\ngo', "JSON list of tool names"),
        ("disallowedTools=-rf\ngo", "not a tool name"),
        ("permission_mode=yolo\ngo", "not one of acceptEdits"),
        ("model=two words\ngo", "not a model name"),
    ],
)
def test_bad_parameter_values_are_named(owui: types.ModuleType, text: str, complaint: str) -> None:
    parsed = owui.parse_message(text)
    assert len(parsed.errors) == 1
    assert complaint in parsed.errors[0]
    assert parsed.prompt == "go"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def test_settings_carry_over_from_earlier_messages(owui: types.ModuleType) -> None:
    defaults = owui.TurnSettings(model="sonnet")
    history = [
        {"role": "system", "content": "model=ignored (not a user message)"},
        user("dangerously-skip-permissions=true\nmodel=opus\nprompt=one"),
        assistant("model=haiku (assistants cannot set anything)"),
        user('allowedTools=["Bash"]\ntwo'),
        user("permission_mode=yolo\nthree (refused on its own turn, skipped since)"),
        user("model=\nfour: back to the default model"),
        user([{"type": "text", "text": "disallowedTools=WebFetch\nfive"}, {"type": "image_url", "image_url": {}}]),
        user("six"),
    ]
    settings, newest = owui.chat_settings(history, defaults, True)
    assert newest.prompt == "six" and newest.errors == []
    assert settings == owui.TurnSettings(
        skip_permissions=True,
        permission_mode=None,
        allowed_tools=("Bash",),
        disallowed_tools=("WebFetch",),
        model="sonnet",
    )
    assert settings.request_fields() == {
        "dangerously-skip-permissions": True,
        "allowedTools": ["Bash"],
        "disallowedTools": ["WebFetch"],
        "model": "sonnet",
    }

    # The newest message overrides the history; its errors are reported.
    later, newest = owui.chat_settings([*history, user("dangerously-skip-permissions=false\nseven")], defaults, True)
    assert later.skip_permissions is False and newest.prompt == "seven"
    _, newest = owui.chat_settings([*history, user("permission_mode=yolo\neight")], defaults, True)
    assert newest.errors and "yolo" in newest.errors[0]


def test_permission_overrides_can_be_locked(owui: types.ModuleType) -> None:
    defaults = owui.TurnSettings(permission_mode="plan")
    history = [user("dangerously-skip-permissions=true\nmodel=opus\nprompt=one"), user("two")]
    settings, newest = owui.chat_settings(history, defaults, False)
    assert settings == owui.TurnSettings(permission_mode="plan", model="opus")  # model is still the user's
    assert newest.errors == []
    _, newest = owui.chat_settings([user('allowedTools=["Bash"]\nrm -rf it')], defaults, False)
    assert "fixed by the administrator" in newest.errors[0]


def test_valves_then_user_valves_then_the_chat(owui: types.ModuleType) -> None:
    pipe = new_pipe(
        owui, "http://127.0.0.1:1", MODEL="sonnet", PERMISSION_MODE="plan", ALLOWED_TOOLS="Read,Grep", API_KEY="admin"
    )
    mine = {"valves": pipe.UserValves(MODEL="opus", PERMISSION_MODE="acceptEdits", SHOW_TOOL_ACTIVITY="off")}
    options = pipe._options(mine)
    assert options.defaults == owui.TurnSettings(
        permission_mode="acceptEdits", allowed_tools=("Read", "Grep"), model="opus"
    )
    assert (options.show_tools, options.show_thinking, options.api_key) == (False, False, "admin")
    assert pipe._options({"valves": pipe.UserValves(API_KEY=" mine ")}).api_key == "mine"
    pipe.valves.ALLOW_PERMISSION_OVERRIDES = False
    assert pipe._options(mine).defaults.permission_mode == "plan"
    assert pipe._options({}).show_tools is True  # no user valves at all


def test_the_session_line_of_a_bare_api_call(owui: types.ModuleType) -> None:
    history = [
        user("one"),
        assistant("Echo(1): one\n\nsession_id=aaa-111"),
        user("session_id=not-from-the-user"),
        assistant("no line here"),
        user("three"),
    ]
    assert owui.session_from_history(history) == "aaa-111"
    assert owui.session_from_history([*history[:2], assistant("later\nsession_id=bbb-222"), user("x")]) == "bbb-222"
    assert owui.session_from_history([user("first")]) is None


# ---- Open WebUI's background tasks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "prompt", "stream", "expected"),
    [
        ("title_generation", "anything", False, "title_generation"),
        ("some_future_task", "anything", False, "some_future_task"),
        (None, title_prompt([user("hi")]), False, "title_generation"),
        (None, follow_up_prompt([user("hi")]), False, "follow_up_generation"),
        (None, tags_prompt([user("hi")]), False, "tags_generation"),
        (None, AUTOCOMPLETE_PROMPT, False, "autocomplete_generation"),
        (None, EMOJI_PROMPT, False, "emoji_generation"),
        (
            None,
            '### Task:\nSomething new.\n### Output:\nStrictly return in JSON format:\n{ "x": 1 }',
            False,
            "unknown_task",
        ),
        (None, title_prompt([user("hi")]), True, None),  # tasks are never streamed
        (None, "### Task: write me a poem", False, None),  # no JSON asked: a user's message
        (None, "What is the title of this book?", False, None),
    ],
)
def test_background_tasks_are_recognised(
    owui: types.ModuleType, task: str | None, prompt: str, stream: bool, expected: str | None
) -> None:
    assert owui.detect_task(task, [user(prompt)], stream) == expected


def test_a_chat_turn_is_never_a_task(owui: types.ModuleType) -> None:
    history = [user(title_prompt([user("hi")])), assistant("ok"), user(title_prompt([user("hi")]))]
    assert owui.detect_task(None, history, False) is None


def test_task_answers_are_the_json_each_task_demands(owui: types.ModuleType) -> None:
    chat = [user("dangerously-skip-permissions=true\nprompt=Refactor the parser module\nplease"), assistant("done")]
    assert json.loads(owui.task_answer("title_generation", {"messages": chat}, [])) == {
        "title": "Refactor the parser module please"
    }
    # Without __task_body__ the title comes from the chat history inside the task prompt.
    prompt = title_prompt([user("Fix the flaky login test"), assistant("ok")])
    assert json.loads(owui.task_answer("title_generation", None, [user(prompt)])) == {
        "title": "Fix the flaky login test"
    }
    prompt = title_prompt([user("model=opus\nprompt=Port the CLI\nto Rust"), assistant("ok"), user("more")])
    assert json.loads(owui.task_answer("title_generation", None, [user(prompt)])) == {"title": "Port the CLI to Rust"}
    long = [user("word " * 40)]
    title = json.loads(owui.task_answer("title_generation", {"messages": long}, []))["title"]
    assert len(title) <= owui.TITLE_CHARS and title.endswith("…")
    assert json.loads(owui.task_answer("title_generation", {"messages": []}, [])) == {"title": "Claude Code"}
    assert json.loads(owui.task_answer("tags_generation", None, [])) == {"tags": []}
    assert json.loads(owui.task_answer("follow_up_generation", None, [])) == {"follow_ups": []}
    assert json.loads(owui.task_answer("query_generation", None, [])) == {"queries": []}
    assert json.loads(owui.task_answer("autocomplete_generation", None, [])) == {"text": ""}
    assert json.loads(owui.task_answer("emoji_generation", None, [])) == {}
    assert json.loads(owui.task_answer("whatever_comes_next", None, [])) == {}


# ---- SSE framing and rendering -------------------------------------------------------------


async def sse_from(owui: types.ModuleType, chunks: list[bytes]) -> list[Any]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [event async for event in owui.iter_sse(source())]


async def test_sse_framing_survives_any_chunking(owui: types.ModuleType) -> None:
    big = json.dumps({"type": "assistant", "text": "x" * (2 * 1024 * 1024)})
    wire = (
        ": ping\n\n"
        'id: t:1\ndata: {"type":"system","subtype":"init"}\n\n'
        f"id: t:2\ndata: {big}\n\n"
        'event: error\nid: t:3\ndata: {"type":"error","code":"cli_failed","message":"boom"}\n\n'
    ).encode()
    expected = [
        (None, '{"type":"system","subtype":"init"}'),
        (None, big),
        ("error", wire.decode().split("data: ")[-1][:-2]),
    ]
    for size in (1000, 65536, len(wire)):
        events = await sse_from(owui, [wire[i : i + size] for i in range(0, len(wire), size)])
        assert [(e.name, e.data) for e in events] == expected
    small = wire.replace(big.encode(), b"{}")
    for size in (1, 2, 3, 7):  # a boundary falls at every position
        events = await sse_from(owui, [small[i : i + size] for i in range(0, len(small), size)])
        assert [(e.name, e.data) for e in events] == [expected[0], (None, "{}"), expected[2]]
    crlf = await sse_from(owui, [b"data: a\r", b"\n\r\ndata: b\r\n\r\n"])
    assert [e.data for e in crlf] == ["a", "b"]


def recorded_lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (RECORDED / name).read_text().splitlines() if line.strip()]


def render(owui: types.ModuleType, lines: list[dict[str, Any]], **options: bool) -> tuple[str, list[Any]]:
    view = owui.TurnView(options.get("show_tools", True), options.get("show_thinking", False))
    pieces = [piece for line in lines for piece in view.feed(line)] + view.finish()
    text = "".join(p for p in pieces if isinstance(p, str))
    return text, [p for p in pieces if isinstance(p, owui.Status)]


def test_a_failed_result_is_explained_once_by_the_servers_error(owui: types.ModuleType) -> None:
    view = owui.TurnView(True, False)
    pieces = [piece for line in recorded_lines("08-not-logged-in.jsonl") for piece in view.feed(line)]
    error = {"type": "error", "code": "not_logged_in", "message": "Claude Code is not logged in: set ANTHROPIC_API_KEY"}
    pieces += view.server_error(error) + view.finish()
    text = "".join(p for p in pieces if isinstance(p, str))
    assert "claude-server: Claude Code is not logged in: set ANTHROPIC_API_KEY (not_logged_in)" in text
    assert "stopped because" not in text and view.failed


def test_partial_messages_are_rendered_once(owui: types.ModuleType) -> None:
    lines = recorded_lines("05-partial-messages.jsonl")
    text, _ = render(owui, lines)
    full = next(b["text"] for line in lines if line["type"] == "assistant" for b in line["message"]["content"])
    assert text == full  # the deltas, and not the full message again


def test_a_message_without_deltas_is_rendered_from_the_full_line(owui: types.ModuleType) -> None:
    text, _ = render(owui, recorded_lines("01-new-session.jsonl"))
    assert text.startswith("Echo(2):")
    text, _ = render(owui, recorded_lines("07-api-errors-retrying.jsonl"))
    assert "Not logged in · Please run /login" in text
    assert "⚠️ Claude Code stopped because it reported an error" in text
    assert text.count("Not logged in") == 1


def test_tool_calls_become_collapsed_blocks_and_statuses(owui: types.ModuleType) -> None:
    text, statuses = render(owui, recorded_lines("03-bash-tool.jsonl"))
    assert "<details>\n<summary>🔧 Bash: echo hi > out.txt</summary>\n\n```bash\necho hi > out.txt\n```" in text
    assert "(Bash completed with no output)" in text
    assert text.endswith("</details>\n\nDone with tool.")
    assert [s.description for s in statuses] == ["Running Bash…", "Claude Code is working…"]
    hidden, statuses = render(owui, recorded_lines("03-bash-tool.jsonl"), show_tools=False)
    assert hidden == "Done with tool." and statuses


def test_a_refused_tool_gets_a_hint(owui: types.ModuleType) -> None:
    text, _ = render(owui, recorded_lines("04-tool-permission-denied.jsonl"))
    assert "🔧 Bash: echo hi > out2.txt (failed)" in text
    assert "Claude Code was not allowed to use `Bash`" in text
    assert 'allowedTools=["Bash"]' in text and "dangerously-skip-permissions=true" in text


def test_each_block_of_text_is_a_paragraph(owui: types.ModuleType) -> None:
    def streamed(message_id: str, text: str) -> list[dict[str, Any]]:
        def event(**fields: Any) -> dict[str, Any]:
            return {"type": "stream_event", "event": fields}

        return [
            event(type="message_start", message={"id": message_id}),
            event(type="content_block_start", index=0, content_block={"type": "text", "text": ""}),
            event(type="content_block_delta", index=0, delta={"type": "text_delta", "text": text}),
            {"type": "assistant", "message": {"id": message_id, "content": [{"type": "text", "text": text}]}},
            event(type="content_block_stop", index=0),
        ]

    tool = {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}
    lines = [
        *streamed("m1", "Let me look."),
        {"type": "assistant", "message": {"id": "m1", "content": [tool]}},
        {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}]}},
        *streamed("m2", "There is one file."),
        {"type": "result", "subtype": "success", "is_error": False, "result": "There is one file."},
    ]
    assert render(owui, lines, show_tools=False)[0] == "Let me look.\n\nThere is one file."
    shown = render(owui, lines)[0]
    assert shown.startswith("Let me look.\n\n<details>\n<summary>🔧 Bash: ls</summary>")
    assert shown.endswith("</details>\n\nThere is one file.")


def test_edit_statuses_name_the_file_and_thinking_is_optional(owui: types.ModuleType) -> None:
    lines = [
        {"type": "stream_event", "event": {"type": "message_start", "message": {"id": "m1"}}},
        {
            "type": "stream_event",
            "event": {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        },
        {
            "type": "stream_event",
            "event": {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm"},
            },
        },
        {"type": "stream_event", "event": {"type": "content_block_stop", "index": 0}},
        {"type": "assistant", "message": {"id": "m1", "content": [{"type": "thinking", "thinking": "hmm"}]}},
        {
            "type": "assistant",
            "message": {
                "id": "m1",
                "content": [{"type": "tool_use", "id": "t1", "name": "Edit", "input": {"file_path": "/w/src/app.py"}}],
            },
        },
        {"type": "result", "subtype": "error_max_turns", "is_error": True, "result": ""},
    ]
    text, statuses = render(owui, lines)
    assert "hmm" not in text
    assert "Editing app.py…" in [s.description for s in statuses]
    assert "maximum number of turns" in text
    shown, _ = render(owui, lines, show_thinking=True)
    assert shown.startswith("<think>\nhmm\n</think>\n\n") and shown.count("hmm") == 1


def test_tool_output_cannot_break_the_block(owui: types.ModuleType) -> None:
    output = "```\n</details>\n<details>\n" + "y" * 10_000
    block = owui.render_tool("Read", {"file_path": "/w/page.html"}, [{"type": "text", "text": output}], False)
    assert block.count("</details>") == 1 and block.count("<details>") == 1
    assert block.startswith("<details>\n<summary>🔧 Read: /w/page.html</summary>\n")
    assert "more characters)" in block
    assert "````" in block  # a fence longer than any run of backticks inside


def test_attached_files_from_open_webui_entries(owui: types.ModuleType) -> None:
    def entry(file_id: str, name: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": "file",
            "id": file_id,
            "name": name,
            "file": {
                "id": file_id,
                "filename": name,
                "path": f"/data/uploads/{file_id}_{name}",
                "meta": {"name": name},
            },
            **extra,
        }

    refs = owui.attached_files(
        [
            entry("f1", "report.pdf"),
            entry("f1", "report.pdf"),  # the same file twice
            entry("f2", "../../etc/passwd"),
            entry("f3", "report.pdf"),  # another file, same name
            entry("f4", ".bashrc"),
            {"type": "collection", "id": "kb1", "name": "Knowledge"},
            "not a dict",
        ]
    )
    assert [(r.id, r.name) for r in refs] == [
        ("f1", "report.pdf"),
        ("f2", "passwd"),
        ("f3", "report-f3.pdf"),
        ("f4", "file-f4-bashrc"),
    ]
    assert refs[0].path == "/data/uploads/f1_report.pdf"


# ---- errors, against a stub server -----------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def stub() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve one handler as POST /api/claude on a free port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def serve(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/api/claude", handler)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def sse_response(request: web.Request, lines: list[str]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for line in lines:
        await resp.write(line.encode())
    return resp


INIT = 'data: {"type":"system","subtype":"init","session_id":"s-1"}\n\n'
RESULT = 'data: {"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s-1"}\n\n'


def text_delta(text: str) -> str:
    event = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return "data: " + json.dumps({"type": "stream_event", "event": event}) + "\n\n"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": {"code": "invalid_field", "message": "model: bad"}},
            "claude-server answered HTTP 400 (invalid_field): model: bad",
        ),
        (401, {"error": {"code": "unauthorized", "message": "missing key"}}, "Check the API_KEY valves"),
        (403, {"error": {"code": "policy_refused", "message": "no skipping"}}, "The server's policy refuses this"),
        (429, {"error": {"code": "queue_full", "message": "100 turns wait"}}, "HTTP 429 (queue_full): 100 turns wait"),
        (404, {"error": {"code": "session_not_found", "message": "No session x"}}, "Start a new chat"),
        (503, {"error": {"code": "cli_not_found", "message": "Claude Code CLI is not available"}}, "(cli_not_found)"),
        (502, "<html>Bad gateway</html>", "HTTP 502: <html>Bad gateway</html>"),
    ],
)
async def test_errors_before_the_stream_read_as_sentences(
    owui: types.ModuleType, stub: Any, status: int, body: Any, expected: str
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html")
        return web.json_response(body, status=status)

    chat = Chat(new_pipe(owui, await stub(handler)))
    answer = await chat.send("hello")
    assert expected in answer.text
    assert "Traceback" not in answer.text
    assert answer.statuses[-1] == {"description": "Stopped with an error", "done": True}


async def test_a_busy_session_is_retried_then_explained(owui: types.ModuleType, stub: Any, monkeypatch: Any) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return web.json_response({"error": {"code": "session_busy", "message": "busy"}}, status=409)
        return await sse_response(request, [INIT, text_delta("after the wait"), RESULT])

    monkeypatch.setattr(owui, "BUSY_RETRY_INTERVAL_S", 0.05)
    chat = Chat(new_pipe(owui, await stub(handler)))
    answer = await chat.send("hello")
    assert answer.text == "after the wait" and calls == 3
    assert "Waiting for the previous turn of this chat to end…" in [s["description"] for s in answer.statuses]

    calls = -1_000  # busy for good
    monkeypatch.setattr(owui, "BUSY_RETRY_S", 0.2)
    answer = await chat.send("again")
    assert "still working on an earlier message of this chat" in answer.text


async def test_server_events_and_cut_streams_read_as_sentences(owui: types.ModuleType, stub: Any) -> None:
    error = (
        'event: error\ndata: {"type":"error","code":"inactivity_timeout","message":"Claude Code printed nothing"}\n\n'
    )
    cancelled = 'event: error\ndata: {"type":"error","code":"cancelled","message":"The turn was cancelled"}\n\n'
    queued = 'event: queued\ndata: {"type":"queued","position":2}\n\n'
    scripts = iter([[queued, INIT, text_delta("partial"), error], [INIT, cancelled], [INIT, text_delta("cut")]])

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, next(scripts))

    chat = Chat(new_pipe(owui, await stub(handler)))
    one = await chat.send("one")
    assert one.text == "partial\n\n⚠️ claude-server: Claude Code printed nothing (inactivity_timeout)"
    queue_status = "Waiting for a free Claude Code slot on the server (number 2 in the queue)…"
    assert queue_status in [s["description"] for s in one.statuses]
    assert (await chat.send("two")).text == "⏹️ The turn was stopped."
    cut = await chat.send("three")
    assert cut.text == "cut\n\n⚠️ The connection to claude-server ended before Claude Code finished this turn."


async def test_silence_past_the_idle_timeout_is_explained(owui: types.ModuleType, stub: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = await sse_response(request, [INIT, text_delta("thinking about it")])
        await asyncio.sleep(30)  # cancelled when the client gives up
        return resp

    pipe = new_pipe(owui, await stub(handler))
    pipe.valves.IDLE_TIMEOUT = 1  # below the valve's minimum, to keep the test short
    started = time.monotonic()
    answer = await Chat(pipe).send("hello")
    assert time.monotonic() - started < 10
    assert answer.text.startswith("thinking about it\n\n⚠️ claude-server at ")
    assert "sent nothing for 1 s (the IDLE_TIMEOUT valve)" in answer.text


async def test_the_api_key_goes_with_every_request(owui: types.ModuleType, stub: Any) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return await sse_response(request, [INIT, text_delta("ok"), RESULT])

    url = await stub(handler)
    await Chat(new_pipe(owui, url)).send("no key")
    await Chat(new_pipe(owui, url, API_KEY="admin-key")).send("the valve's key")
    await Chat(new_pipe(owui, url, API_KEY="admin-key"), user_valves={"API_KEY": "my-key"}).send("the user's key")
    assert seen == [None, "Bearer admin-key", "Bearer my-key"]


async def test_text_that_looks_like_an_sse_line_is_split(owui: types.ModuleType, stub: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, [INIT, text_delta("Example:\n"), text_delta("data: {}"), RESULT])

    answer = await Chat(new_pipe(owui, await stub(handler))).send("hello")
    assert answer.text == "Example:\ndata: {}"
    assert not any(chunk.startswith("data:") for chunk in answer.chunks)


async def test_bad_valves_and_messages_are_answered_without_a_server(owui: types.ModuleType) -> None:
    pipe = new_pipe(owui, "http://127.0.0.1:1", PERMISSION_MODE="sometimes")
    assert "PERMISSION_MODE: 'sometimes' is not one of" in (await Chat(pipe).send("hi")).text
    pipe = new_pipe(owui, "http://127.0.0.1:1")
    chat = Chat(pipe)
    answer = await chat.send("permission_mode=yolo\nallowedTools=[Bash\ndo it")
    assert "Nothing was sent to Claude Code" in answer.text
    assert "`permission_mode`: 'yolo' is not one of" in answer.text and "`allowedTools`" in answer.text
    answer = await chat.send("model=opus")
    assert answer.text.startswith("⚙️ Settings for this chat from now on:") and "model=opus" in answer.text
    chat.messages.append(assistant("a trailing assistant message (Open WebUI's 'continue')"))
    result = await chat.call(False, [])
    assert "continuing an earlier answer is not supported" in result


# ---- end to end: the real server, the real CLI, the fake model -------------------------------


def conversation(request: Recorded) -> list[dict[str, Any]]:
    """The user/assistant messages the CLI sent (it also sends role "system" ones)."""
    return [m for m in request.body.get("messages") or [] if m.get("role") in ("user", "assistant")]


def sessions_with(api: FakeAnthropic, token: str) -> list[str]:
    """The sessions whose model requests mention ``token`` (unique per test), oldest first."""
    found: list[str] = []
    for request in list(api.requests):
        sid = request.session_id
        if sid and token in request.text() and sid not in found:
            found.append(sid)
    return found


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return dict(body)


async def workspace_file(http: aiohttp.ClientSession, server: RunningServer, sid: str, path: str) -> str | None:
    async with http.get(f"{server.url}/api/sessions/{sid}/files/{path}") as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        return await resp.text()


@pytest.mark.e2e
async def test_two_turns_of_a_chat_resume_one_session(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    token = uuid.uuid4().hex
    chat = Chat(new_pipe(owui, e2e_server.url))

    first = await chat.send(f"hello {token}")
    second = await chat.send("and again")

    assert first.echo() == (1, f"hello {token}")
    assert second.echo() == (3, "and again")
    [sid] = sessions_with(fake_api, token)
    assert [len(conversation(r)) for r in fake_api.for_session(sid)] == [1, 3]
    session = await get_json(http, f"{e2e_server.url}/api/sessions/{sid}")
    assert session["conversation_id"] == chat.chat_id
    assert session["turn_count"] == 2
    assert "session_id=" not in first.text + second.text  # a chat needs no marker
    assert first.statuses[0] == {"description": "Claude Code is working…", "done": False}
    assert first.statuses[-1] == {"description": "Done", "done": True}


@pytest.mark.e2e
async def test_a_new_chat_starts_a_new_session(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    token = uuid.uuid4().hex
    pipe = new_pipe(owui, e2e_server.url)
    one, two = Chat(pipe), Chat(pipe)

    assert (await one.send(f"first chat {token}")).echo()[0] == 1
    assert (await two.send(f"second chat {token}")).echo()[0] == 1
    assert (await one.send("first chat again")).echo()[0] == 3

    assert len(sessions_with(fake_api, token)) == 2


@pytest.mark.e2e
async def test_a_bare_api_call_carries_its_session_in_the_answer(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    token = uuid.uuid4().hex
    chat = Chat(new_pipe(owui, e2e_server.url), bare=True)

    first = await chat.send(f"no chat {token}")
    sid = re.findall(r"^session_id=(\S+)$", first.text, re.M)
    assert sid == sessions_with(fake_api, token)
    assert first.text.endswith(f"\n\nsession_id={sid[0]}")
    second = await chat.send("still no chat", stream=False)  # answered as one string

    assert second.echo()[0] == 3
    assert second.text.endswith(f"\n\nsession_id={sid[0]}")
    assert [len(conversation(r)) for r in fake_api.for_session(sid[0])] == [1, 3]
    assert sessions_with(fake_api, token) == sid


@pytest.mark.e2e
async def test_temporary_chats_get_a_session_each(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    token = uuid.uuid4().hex
    pipe = new_pipe(owui, e2e_server.url)
    # Open WebUI names every temporary chat of a browser tab after its socket: "local:<socket id>".
    one, two = Chat(pipe, chat_id="local:socket-1"), Chat(pipe, chat_id="local:socket-1")

    await one.send(f"temporary one {token}")
    await two.send(f"temporary two {token}")
    again = await one.send("one again")

    first, second = sessions_with(fake_api, token)
    assert again.echo()[0] == 3
    assert again.text.endswith(f"session_id={first}")
    assert two.messages[-1]["content"].endswith(f"session_id={second}")


@pytest.mark.e2e
async def test_background_tasks_never_start_claude_code(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    pipe = new_pipe(owui, e2e_server.url)
    chat = Chat(pipe)
    await chat.send("dangerously-skip-permissions=true\nprompt=Write a haiku about parsers")
    before = len(fake_api.requests)

    title = await run_task(pipe, "title_generation", title_prompt(chat.messages), chat.messages, chat.chat_id)
    follow_ups = await run_task(
        pipe, "follow_up_generation", follow_up_prompt(chat.messages), chat.messages, chat.chat_id
    )
    tags = await run_task(pipe, None, tags_prompt(chat.messages), chat.messages, chat.chat_id)  # no __task__

    assert json.loads(title) == {"title": "Write a haiku about parsers"}
    assert json.loads(follow_ups) == {"follow_ups": []}
    assert json.loads(tags) == {"tags": []}
    await asyncio.sleep(0.5)  # a CLI started by mistake would have called the API by now
    assert len(fake_api.requests) == before


@pytest.mark.e2e
async def test_parameters_carry_over_to_the_chats_later_turns(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    token = uuid.uuid4().hex
    chat = Chat(new_pipe(owui, e2e_server.url))

    first = await chat.send(
        f"dangerously-skip-permissions=true\nmodel=claude-carried-over\nprompt={token} [[bash: echo one > one.txt]]"
    )
    second = await chat.send("[[bash: echo two > two.txt]]")  # no parameters: turn 1's still apply

    [sid] = sessions_with(fake_api, token)
    assert await workspace_file(http, e2e_server, sid, "one.txt") == "one\n"
    assert await workspace_file(http, e2e_server, sid, "two.txt") == "two\n"
    assert "Tool said: (Bash completed with no output)" in first.text + second.text
    assert {r.body["model"] for r in fake_api.for_session(sid)} == {"claude-carried-over"}
    history = await get_json(http, f"{e2e_server.url}/api/sessions/{sid}/messages")
    for turn in history["turns"]:
        record = await get_json(http, f"{e2e_server.url}/api/turns/{turn['turn_id']}")
        assert record["options"]["skip_permissions"] is True
    assert history["turns"][0]["prompt"] == f"{token} [[bash: echo one > one.txt]]"  # parameter lines stripped


@pytest.mark.e2e
async def test_tool_activity_shows_as_details_and_statuses(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    token = uuid.uuid4().hex
    chat = Chat(new_pipe(owui, e2e_server.url, SKIP_PERMISSIONS=True))

    shown = await chat.send(f"{token} [[bash: echo hi]]")
    chat.user_valves = {"SHOW_TOOL_ACTIVITY": "off"}
    hidden = await chat.send("[[bash: echo quiet]]")

    assert "<details>\n<summary>🔧 Bash: echo hi</summary>" in shown.text
    assert "```bash\necho hi\n```" in shown.text and "```\nhi\n```" in shown.text
    assert shown.text.endswith("</details>\n\nTool said: hi")
    descriptions = [s["description"] for s in shown.statuses]
    assert descriptions[:2] == ["Claude Code is working…", "Running Bash…"]
    assert shown.statuses[-1] == {"description": "Done", "done": True}
    assert hidden.text == "Tool said: quiet"
    assert "Running Bash…" in [s["description"] for s in hidden.statuses]


@pytest.mark.e2e
async def test_a_refused_tool_explains_how_to_allow_it(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    token = uuid.uuid4().hex
    answer = await Chat(new_pipe(owui, e2e_server.url)).send(f"{token} [[bash: echo no > no.txt]]")

    [sid] = sessions_with(fake_api, token)
    assert await workspace_file(http, e2e_server, sid, "no.txt") is None
    assert "🔧 Bash: echo no > no.txt (failed)" in answer.text
    assert "Claude Code was not allowed to use `Bash`" in answer.text


@pytest.mark.e2e
async def test_text_streams_as_it_arrives(owui: types.ModuleType, e2e_server: RunningServer) -> None:
    prompt = "[[slow: 1]] " + "a long answer, spread over a second by the fake model. " * 2
    answer = await Chat(new_pipe(owui, e2e_server.url)).send(prompt)

    assert answer.echo() == (1, prompt.strip())
    assert len(answer.chunks) > 5
    assert answer.arrived[-1] - answer.arrived[0] > 0.5  # not buffered into one piece at the end


@pytest.mark.e2e
async def test_the_stop_button_interrupts_the_turn_and_ends_its_tool(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    token = uuid.uuid4().hex
    chat = Chat(new_pipe(owui, e2e_server.url))
    chat.messages.append(user(f"dangerously-skip-permissions=true\nprompt={token} {LONG_TOOL}"))
    events: list[dict[str, Any]] = []
    # Open WebUI consumes the generator in a task; the stop button cancels that task.
    task = asyncio.create_task(read_answer(await chat.call(True, events), events))

    def tool_running(process: str) -> bool:
        return turn_processes_running(process, LONG_TOOL_CMDLINE)

    async with asyncio.timeout(TOOL_START_TIMEOUT_S):
        while not any(e["data"]["description"] == "Running Bash…" for e in events):
            await asyncio.sleep(0.05)
    [sid] = sessions_with(fake_api, token)
    turn_id = (await get_json(http, f"{e2e_server.url}/api/sessions/{sid}"))["running_turn"]["turn_id"]
    process = (await get_json(http, f"{e2e_server.url}/api/turns/{turn_id}"))["process_id"]
    assert await asyncio.to_thread(wait_until, lambda: tool_running(process), TOOL_START_TIMEOUT_S)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # the pipe lets the cancellation through

    # The turn is interrupted: its tool ends; the CLI stays warm for the chat's next message.
    assert await asyncio.to_thread(wait_until, lambda: not tool_running(process), CLEANUP_TIMEOUT_S), marked_pids(
        process
    )
    async with asyncio.timeout(CLEANUP_TIMEOUT_S):
        while (record := await get_json(http, f"{e2e_server.url}/api/turns/{turn_id}"))["status"] == "running":
            await asyncio.sleep(0.05)
    assert record["status"] == "cancelled"
    assert record["error"]["code"] == "client_disconnected"
    # The chat goes on: Open WebUI keeps the user message (the stopped answer is empty).
    chat.messages.append(assistant(""))
    assert (await chat.send("are you still there?")).echo()[1] == "are you still there?"


@pytest.mark.e2e
async def test_files_are_uploaded_into_the_workspace_once(
    owui: types.ModuleType,
    e2e_server: RunningServer,
    fake_api: FakeAnthropic,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    def upload(name: str, content: str) -> dict[str, Any]:
        """An entry of Open WebUI's ``__files__`` for a file stored under its uploads folder."""
        file_id = str(uuid.uuid4())
        path = tmp_path / f"{file_id}_{name}"
        path.write_text(content)
        meta = {"name": name, "content_type": "text/plain", "size": len(content)}
        return {
            "type": "file",
            "id": file_id,
            "url": f"/api/v1/files/{file_id}",
            "name": name,
            "status": "uploaded",
            "size": len(content),
            "file": {"id": file_id, "filename": name, "path": str(path), "meta": meta},
        }

    token = uuid.uuid4().hex
    chat = Chat(new_pipe(owui, e2e_server.url, SKIP_PERMISSIONS=True), files=[upload("notes.txt", "v1\n")])

    # A new chat has no session yet: a one-step turn makes it, then the upload, then the turn.
    first = await chat.send(f"{token} read notes.txt")
    [sid] = sessions_with(fake_api, token)
    assert first.echo() == (
        3,
        f"{token} read notes.txt\n\n(Files attached in Open WebUI, saved in your working directory: `notes.txt`)",
    )
    assert "Uploading notes.txt…" in [s["description"] for s in first.statuses]
    assert await workspace_file(http, e2e_server, sid, "notes.txt") == "v1\n"

    # Claude edits the file; Open WebUI keeps sending the chat's files: they are not uploaded again.
    await chat.send("[[bash: echo edited > notes.txt]]")
    third = await chat.send("and now?")
    assert third.echo() == (9, "and now?")  # turn 2 added four messages: its tool call and result too
    assert await workspace_file(http, e2e_server, sid, "notes.txt") == "edited\n"

    # Another client adds to the session's metadata (keeping what is there, as PATCH replaces it).
    metadata = (await get_json(http, f"{e2e_server.url}/api/sessions/{sid}"))["metadata"]
    async with http.patch(f"{e2e_server.url}/api/sessions/{sid}", json={"metadata": {**metadata, "note": "kept"}}) as r:
        assert r.status == 200, await r.text()

    # After a restart of Open WebUI (a new Pipe, nothing cached) the session's record still knows.
    chat.pipe = new_pipe(load_function(), e2e_server.url)
    remote = upload("remote.txt", "")
    remote["file"]["path"] = "s3://bucket/uploads/remote.txt"  # Open WebUI with cloud storage
    no_path = {"type": "file", "id": "web-1", "name": "page.html"}
    chat.files = [*chat.files, upload("data.csv", "a,b\n"), remote, no_path]
    fourth = await chat.send("one more file")
    count, prompt = fourth.echo()
    assert count == 13  # 10 so far, 2 from the one-step turn that found the session again, then this one
    assert prompt == "one more file\n\n(Files attached in Open WebUI, saved in your working directory: `data.csv`)"
    assert "⚠️ page.html could not be uploaded: Open WebUI gave no file path for it." in fourth.text
    assert "⚠️ remote.txt could not be uploaded: cannot read s3://bucket/uploads/remote.txt" in fourth.text
    assert await workspace_file(http, e2e_server, sid, "notes.txt") == "edited\n"
    assert await workspace_file(http, e2e_server, sid, "data.csv") == "a,b\n"
    session = await get_json(http, f"{e2e_server.url}/api/sessions/{sid}")
    assert sorted(session["metadata"]["open_webui_uploads"].values()) == ["data.csv", "notes.txt", "remote.txt"]
    assert session["metadata"]["note"] == "kept"

    # Every file is handled once: no upload, no warning again.
    fifth = await chat.send("thanks")
    assert fifth.echo() == (15, "thanks")
    assert "could not be uploaded" not in fifth.text
    assert not any(s["description"].startswith("Uploading") for s in fifth.statuses)
    assert sessions_with(fake_api, token) == [sid]


async def test_an_unreachable_server_reads_as_a_sentence(owui: types.ModuleType) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    answer = await Chat(new_pipe(owui, closed)).send("hello")

    assert answer.text.startswith(f"⚠️ Could not reach claude-server at {closed}: ")
    assert "Check that it is running and the SERVER_URL valve." in answer.text
    assert answer.statuses[-1] == {"description": "Stopped with an error", "done": True}
    bad = await Chat(new_pipe(owui, "not a url")).send("hello")
    assert bad.text.startswith("⚠️ ") and "Traceback" not in bad.text
