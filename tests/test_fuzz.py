"""Property tests: malformed and hostile input thrown at every route of a running server (the
fake CLI) over raw sockets, so that any byte can be sent: bodies of every shape (JSON nested
far too deeply among them), header values of arbitrary bytes, huge and odd numbers, dates at
the ends of the calendar and in odd time zones, cursors made of arbitrary (also invalid
UTF-16) JSON, ``Last-Event-ID`` values, path segments of odd Unicode and long names.

Every answer must be below 500; every refusal a 4xx JSON body in the shape of its API (the
native one, OpenAI's or Anthropic's). A request HTTP itself forbids (a control byte in a
header, a raw non-ASCII byte in the target) may instead get aiohttp's own plain-text 400,
sent before any of our code runs. The servers' logs must hold no ERROR of ours and no
traceback at all.

About 10,000 requests; ``CLAUDE_SERVER_FUZZ_SCALE=10`` runs ten times as many examples.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FAKE_CLI, RunningServer, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
SCALE = float(os.environ.get("CLAUDE_SERVER_FUZZ_SCALE", "1"))
OPERATOR = "fuzz-operator-key"
# The limit the server documents for JSON nesting (README, "API").
MAX_DEPTH = 64


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# ---- talking HTTP over a raw socket ------------------------------------------------------------

STATS: Counter[str] = Counter()

# Bytes HTTP forbids in a header value (RFC 9110 field-vchar, obs-text and tab are allowed);
# CR and LF are never generated, they would end the header.
CONTROL = frozenset([*range(0, 9), 11, 12, *range(14, 32), 127])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    # aiohttp's own answer to a request it could not parse: HTTP/1.0, text/plain.
    by_parser: bool

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        return f"{self.status} {self.headers.get('content-type')} {self.body[:600]!r}"


def dechunk(data: bytes) -> bytes:
    """A chunked body, checked to be whole (a stream cut by an exception is not)."""
    out = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, f"chunked body ends without its last chunk: {bytes(out[-300:])!r}"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        assert data[size : size + 2] == b"\r\n", "chunk without its CRLF"
        out += data[:size]
        data = data[size + 2 :]


def send(
    server: RunningServer,
    method: str,
    target: bytes | str,
    *,
    headers: list[tuple[str, bytes | str]] | None = None,
    body: bytes = b"",
    head_only: bool = False,
    host: bytes = b"127.0.0.1",
) -> Answer:
    """One request on its own connection, bytes exactly as given."""
    if isinstance(target, str):
        target = target.encode()
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + host, b"Connection: close"]
    for name, value in headers or []:
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    port = int(server.url.rsplit(":", 1)[1])
    data = b""
    reset = False
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        # Answered (and closed) before the whole body was read: the answer is there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        try:
            while chunk := sock.recv(1 << 16):
                data += chunk
                if head_only and b"\r\n\r\n" in data:
                    break
        except ConnectionResetError:
            # Closed with part of the request unread (a refusal before the body): the kernel
            # resets the connection, after the answer.
            if b"\r\n\r\n" not in data:
                raise
            reset = True
    STATS["requests"] += 1
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete answer to {method} {target[:200]!r}: {data[:300]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status = status_line.split(" ", 2)[:2]
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    if not (head_only or reset) and method != "HEAD" and found.get("transfer-encoding") == "chunked":
        rest = dechunk(rest)
    answer = Answer(int(status), found, rest, version == "HTTP/1.0")
    STATS[f"status {answer.status // 100}xx"] += 1
    return answer


def api_of(path: str, headers: list[tuple[str, bytes | str]]) -> str:
    """Which error shape a path gets (README, "OpenAI- and Anthropic-compatible API")."""
    if not path.startswith("/v1/"):
        return "native"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/responses")):
        return "openai"
    return "anthropic" if any(n.lower() == "anthropic-version" for n, _ in headers) else "openai"


def check(
    answer: Answer,
    method: str,
    path: str,
    headers: list[tuple[str, bytes | str]] | None = None,
    *,
    forbidden_http: bool = False,
) -> None:
    """Below 500; a refusal is a 4xx JSON error in its API's shape. ``forbidden_http``: the
    request holds bytes HTTP forbids, so aiohttp's parser may refuse it first."""
    context = f"{method} {path[:300]!r} -> {answer.describe()}"
    if answer.by_parser:
        assert forbidden_http and answer.status == 400, context
        STATS["refused by aiohttp's parser"] += 1
        return
    assert answer.status < 500, context
    ctype = answer.headers.get("content-type", "")
    if ctype.startswith("application/json") and method != "HEAD":
        body = answer.json()
    if answer.status < 400 or method == "HEAD":
        return
    assert ctype.startswith("application/json"), context
    # CONNECT's target is an authority, not a path: aiohttp sees no path, so no /v1/ either.
    api = "native" if method == "CONNECT" else api_of(path.split("?", 1)[0], headers or [])
    if api == "native":
        error = body["error"]
        assert isinstance(error["code"], str) and error["code"], context
        assert isinstance(error["message"], str) and error["message"], context
    elif api == "openai":
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, context
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), context
        assert error["param"] is None or isinstance(error["param"], str), context
    else:
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, context
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], context
    STATS[f"refused {api}"] += 1


# Headers HTTP allows once (aiohttp's http_parser.SINGLETON_HEADERS, of those sent here).
SINGLETONS = ("content-type", "user-agent", "host")


def forbidden_in_headers(headers: list[tuple[str, bytes | str]], body: bytes = b"") -> bool:
    """A control byte in a value, a second header that may come once, or a body that is not
    in the Content-Encoding it names (aiohttp decodes what arrives with the head at once)."""
    names = [name.lower() for name, _ in headers]
    if any(names.count(n) > 1 for n in SINGLETONS):
        return True
    if body and any(
        n.lower() == "content-encoding" and v.strip() not in ("", b"", "identity", b"identity") for n, v in headers
    ):
        return True
    for _, value in headers:
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        if any(b in CONTROL for b in data):
            return True
    return False


def forbidden_in_target(target: bytes) -> bool:
    """A byte HTTP forbids in a request target, or a target past aiohttp's 8,190-byte line."""
    return len(target) > 8100 or any(b <= 0x20 or b >= 0x7F for b in target)


# ---- the servers -------------------------------------------------------------------------------

LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): ", re.M)


def log_records(log: str) -> list[tuple[str, str, str]]:
    """(level, logger, text) of each record of a log, text or JSON lines; text that belongs to
    no record (what the logging module prints when a record cannot be written) is one too."""
    records = []
    loose = []
    for line in log.splitlines(keepends=True):
        head = LOG_RECORD.match(line)
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and "level" in obj:
                text = f"{obj.get('message')}\n{obj.get('exception', '')}"
                records.append((str(obj["level"]), str(obj.get("logger")), text))
                continue
        if head is not None:
            records.append((head["level"], head["logger"], line))
        elif records and not loose and not line.startswith("{"):
            level, logger, text = records[-1]
            records[-1] = (level, logger, text + line)  # a traceback, or a message's next line
        else:
            loose.append(line)
    if loose:
        records.append(("", "", "".join(loose)))
    return records


def log_problems(log: str) -> list[str]:
    """Records of a server log that must not be there: an ERROR (or worse) of our loggers, or
    a traceback of anyone (aiohttp logs the requests it could not parse as one INFO line)."""
    problems = []
    for level, logger, text in log_records(log):
        ours = logger.startswith("claude_server")
        bad = (ours and level in ("ERROR", "CRITICAL")) or "Traceback" in text or "--- Logging error ---" in text
        if bad:
            problems.append(f"{level} {logger}: {text[:3000]}")
    return problems


def create_key(root: Any, name: str) -> str:
    """A key of the api_keys table (not admin), made with the CLI before the server starts."""
    env = {**os.environ, "CLAUDE_SERVER_DB": str(root / "sessions.db")}
    done = subprocess.run(
        [sys.executable, "-m", "claude_server", "keys", "create", "--name", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(json.loads(done.stdout)["secret"])


@dataclass
class Servers:
    open: RunningServer
    keyed: RunningServer
    user_key: str


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic, request: pytest.FixtureRequest
) -> Iterator[Servers]:
    """One server without keys (logging text), one with an operator key and an ordinary key
    (logging JSON lines), for the module."""
    started = time.monotonic()
    # INFO: every request's access line and every bad-request line is written, odd bytes and
    # all. The live turn of `known` sleeps all along: no timeout may end it.
    environ = {
        "CLAUDE_SERVER_LOG_LEVEL": "INFO",
        "CLAUDE_SERVER_INACTIVITY_TIMEOUT": "36000",
        "CLAUDE_SERVER_TURN_TIMEOUT": "36000",
    }
    keyed_root = tmp_path_factory.mktemp("fuzz-keyed")
    user_key = create_key(keyed_root, "user")
    running = Servers(
        start_server(tmp_path_factory.mktemp("fuzz"), fake_api, FAKE_CLI, environ),
        start_server(
            keyed_root,
            fake_api,
            FAKE_CLI,
            {**environ, "CLAUDE_SERVER_API_KEYS": OPERATOR, "CLAUDE_SERVER_LOG_FORMAT": "json"},
        ),
        user_key,
    )
    yield running
    stop_server(running.open)
    stop_server(running.keyed)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(STATS.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nfuzz: {summary}; {time.monotonic() - started:.0f} s")
    for server in (running.open, running.keyed):
        problems = log_problems(server.log_text())
        assert not problems, "\n\n".join(problems[:5])


@dataclass
class Known:
    """Ids the tests aim at: a session with a finished turn, and a turn that runs all along."""

    session_id: str
    turn_id: str
    live_turn_id: str


@pytest.fixture(scope="module")
def known(servers: Servers) -> Iterator[Known]:
    server = servers.open
    done = send(server, "POST", "/api/claude", headers=JSON_TYPE, body=b'{"prompt": "fuzz", "stream": false}')
    assert done.status == 200, done.describe()
    live = send(
        server,
        "POST",
        "/api/claude",
        headers=JSON_TYPE,
        body=b'{"prompt": "@sleep=36000", "detach": true}',
        head_only=True,
    )
    assert live.status == 200, live.describe()
    yield Known(done.json()["session_id"], done.json()["turn_id"], live.headers["x-turn-id"])
    send(server, "POST", f"/api/turns/{live.headers['x-turn-id']}/cancel")


JSON_TYPE: list[tuple[str, bytes | str]] = [("Content-Type", "application/json")]


# ---- values ------------------------------------------------------------------------------------

lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
# Any text, lone UTF-16 surrogates included.
odd_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.text(max_size=4) | lone_surrogates, max_size=8).map("".join),
    st.sampled_from(
        ["", " ", "\x00", "..", "../../etc/passwd", "%00", "%2F", "\u202e", "\ufeff", "é" * 200, "💥" * 70]
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
    st.just("x" * 200_000),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(odd_text, children, max_size=5),
    max_leaves=20,
)


def to_json(value: Any) -> bytes:
    """JSON as a client may send it: lone surrogates escaped (as ``\\ud800``); NaN and
    Infinity as Python writes them (not JSON)."""
    return json.dumps(value).encode()


def nest(depth: int, kind: str, inner: str) -> str:
    """``depth`` levels of arrays, objects or both around ``inner``."""
    if kind == "arrays":
        return "[" * depth + inner + "]" * depth
    if kind == "objects":
        return '{"a":' * depth + inner + "}" * depth
    opened = "".join("[" if i % 2 else '{"a":' for i in range(depth))
    return opened + inner + "".join("]" if i % 2 else "}" for i in reversed(range(depth)))


@dataclass
class Deep:
    text: str
    depth: int  # levels of arrays and objects, ``inner`` included


depths = st.sampled_from([1, 62, 63, 64, 65, 66, 100, 500, 899, 900, 990, 1000, 5000, 100_000]) | st.integers(1, 1200)
deep_values = st.builds(
    lambda depth, kind, inner: Deep(nest(depth, kind, inner), depth + (inner in ("[]", "{}"))),
    depths,
    st.sampled_from(["arrays", "objects", "mixed"]),
    st.sampled_from(["1", '"x"', "null", "[]", "{}"]),
)

NATIVE_FIELDS = [
    "prompt",
    "session_id",
    "dangerously-skip-permissions",
    "dangerously_skip_permissions",
    "allowedTools",
    "allowed_tools",
    "disallowedTools",
    "model",
    "permission_mode",
    "max_turns",
    "system_prompt",
    "append_system_prompt",
    "fork_session",
    "include_partial_messages",
    "max_budget_usd",
    "stream",
    "detach",
    "conversation_id",
    "workspace",
    "agent",
    "mcp_servers",
    "title",
    "metadata",
    "content",
    "messages",
    "system",
]
objects = st.dictionaries(st.sampled_from(NATIVE_FIELDS) | odd_text, json_values, max_size=6)
bodies = st.one_of(
    objects.map(to_json),
    json_values.map(to_json),
    st.binary(max_size=200),
    odd_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    deep_values.map(lambda d: d.text.encode()),
    st.sampled_from([b"", b"{", b"{}", b"[]", b"null", b'"x"', b"\xef\xbb\xbf{}", '{"prompt": "x"}'.encode("utf-16")]),
)

# Numbers as query parameters and Last-Event-IDs: huge, negative, not quite numbers.
numbers = st.one_of(
    st.integers(min_value=0, max_value=50).map(str),
    st.integers().map(str),
    st.integers(min_value=2**62, max_value=2**70).map(str),
    st.integers(min_value=-(2**70), max_value=-(2**62)).map(str),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), 10**29, 10**30]).map(str),
    st.sampled_from(
        ["", " 1", "1 ", "+1", "-0", "0x10", "1e3", "1.0", "1_0", "٣", "１", "NaN", "inf", "9" * 31, "9" * 4301]
    ),
    odd_text,
)
zones = st.sampled_from(
    [
        "",
        "Z",
        "z",
        "+00:00",
        "-00:00",
        "+23:59",
        "-23:59",
        "+24:00",
        "+05:30",
        "+0530",
        "+05",
        "-12:00:01",
        "+01:00:00.5",
        "+14:00",
    ]
)
timespecs = st.sampled_from(["auto", "hours", "minutes", "seconds", "milliseconds", "microseconds"])
dates = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}"),
    st.builds(lambda when, zone, spec: when.isoformat(timespec=spec) + zone, st.datetimes(), zones, timespecs),
    st.builds(
        lambda when, zone: when.isoformat(sep=" ") + zone,
        st.datetimes(min_value=datetime(9999, 12, 31), max_value=datetime.max)
        | st.datetimes(max_value=datetime(1, 1, 2)),
        zones,
    ),
    st.sampled_from(
        [
            "9999-12-31",
            "0001-01-01",
            "2026-02-30",
            "2026-02-29",
            "2024-02-29",
            "0000-01-01",
            "10000-01-01",
            "9999-12-31T23:59:59.999999-23:59",
            "0001-01-01T00:00+23:59",
            "2026-W53-7",
            "2026-W01-1",
            "2026-001",
            "20261122",
            "2026-11-22T",
            "2026-11-22T24:00",
            "2026-11-22T10:00:00,5Z",
            "T10:00",
        ]
    ),
    odd_text,
)


def b64(data: bytes, pad: bool) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if pad else text.rstrip("=")


cursor_items = st.one_of(st.none(), odd_text, st.integers(min_value=-(2**70), max_value=2**70), json_values)
cursors = st.one_of(
    st.builds(b64, st.lists(cursor_items, max_size=4).map(to_json), st.booleans()),
    st.builds(b64, json_values.map(to_json), st.booleans()),
    # Not escaped: lone surrogates make bytes that are no UTF-8.
    st.builds(
        b64,
        st.lists(odd_text, min_size=1, max_size=3).map(
            lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")
        ),
        st.booleans(),
    ),
    st.builds(b64, deep_values.filter(lambda d: len(d.text) < 3000).map(lambda d: d.text.encode()), st.booleans()),
    st.builds(b64, st.binary(max_size=60), st.booleans()),
    odd_text,
)


def quote(text: str) -> str:
    """Percent-encoded UTF-8; a lone surrogate becomes bytes that are no UTF-8."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


def query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())


# Path segments: odd Unicode, long names (255 bytes is a file name's limit), dots, encoded slashes.
segments = st.one_of(
    odd_text.map(quote),
    st.sampled_from([".", "..", "%2e%2e", "%2F", "a%2Fb", "%00", "%5C", "~", "%25", "CON", "-rf"]),
    st.integers(min_value=250, max_value=300).map(lambda n: "a" * n),
    st.integers(min_value=60, max_value=90).map(lambda n: quote("é" * n)),
    st.text(alphabet="abc-_.", min_size=1, max_size=70),
)

HEADER_NAMES = [
    "x-api-key",
    "Authorization",
    "Last-Event-ID",
    "X-Claude-Agent",
    "X-Claude-Mcp-Servers",
    "X-Claude-Session-Id",
    "X-Conversation-Id",
    "X-Request-Id",
    "If-Match",
    "If-None-Match",
    "Content-Type",
    "Content-Encoding",
    "anthropic-version",
    "Accept",
    "User-Agent",
    "Referer",
    "Origin",
    "Cookie",
    "X-Forwarded-For",
    "Forwarded",
    "Range",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
]


def without_controls(data: bytes) -> bytes:
    return bytes(b for b in data if b not in CONTROL)


# Mostly values HTTP allows (any byte but controls: a value that is no UTF-8 among them), so
# that most requests reach the application; a control byte now and then.
header_values = st.one_of(
    odd_text.map(lambda t: without_controls(t.encode("utf-8", "surrogatepass"))),
    st.binary(max_size=64).map(without_controls),
    st.builds(
        lambda scheme, rest: scheme + without_controls(rest),
        st.sampled_from([b"Bearer ", b"bearer ", b"Basic ", b""]),
        st.binary(max_size=40),
    ),
    st.binary(max_size=16),
    st.sampled_from(
        [
            b"",
            b"Bearer",
            b"Bearer ",
            b"Bearer \xff",
            b"\xc3\x28",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xef\xbb\xbf",
            b"gzip",
            b"deflate",
            b"identity",
            b"text/plain",
            b"application/json; charset=latin-1",
            b"multipart/form-data; boundary=x",
            b"application/x-www-form-urlencoded",
            b"*",
            b'W/"x"',
            b"x" * 5000,
        ]
    ),
).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t"))
header_lists = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=5)


# ---- the routes --------------------------------------------------------------------------------

# {sid}: the known session or a made-up id; {tid}: the finished turn (never the live one, which
# cancel would end) or a made-up id; {new}: always made up (DELETE must not remove the known
# session).
ROUTES = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/api/stats"),
    ("POST", "/api/claude"),
    ("GET", "/api/sessions"),
    ("GET", "/api/sessions/{sid}"),
    ("PATCH", "/api/sessions/{sid}"),
    ("DELETE", "/api/sessions/{new}"),
    ("GET", "/api/sessions/{sid}/messages"),
    ("POST", "/api/sessions/{sid}/interrupt"),
    ("GET", "/api/turns/{tid}"),
    ("GET", "/api/turns/{tid}/events"),
    ("POST", "/api/turns/{tid}/cancel"),
    ("GET", "/api/sessions/{sid}/files"),
    ("GET", "/api/sessions/{sid}/files/{seg}"),
    ("PUT", "/api/sessions/{sid}/files/{seg}"),
    ("DELETE", "/api/sessions/{sid}/files/{seg}"),
    ("GET", "/api/sessions/{sid}/archive"),
    ("GET", "/api/config/{kind}"),
    ("GET", "/api/config/{kind}/{seg}"),
    ("PUT", "/api/config/{kind}/{seg}"),
    ("DELETE", "/api/config/{kind}/{seg}"),
    ("GET", "/api/config/{single}"),
    ("PUT", "/api/config/{single}"),
    ("GET", "/api/config/skills/{seg}/files/{seg}"),
    ("PUT", "/api/config/skills/{seg}/files/{seg}"),
    ("DELETE", "/api/config/skills/{seg}/files/{seg}"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{seg}"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
]
KINDS = ["agents", "skills", "rules", "mcp-servers"]
SINGLES = ["claude-md", "settings"]


@st.composite
def paths(draw: st.DrawFn, template: str, known: Known) -> str:
    """The template with its placeholders filled: known ids, made-up ones, odd segments."""
    out = template
    while "{" in out:
        name = out[out.index("{") + 1 : out.index("}")]
        if name == "sid":
            value = draw(st.sampled_from([known.session_id]) | segments)
        elif name == "tid":
            value = draw(st.sampled_from([known.turn_id]) | segments)
        elif name == "kind":
            value = draw(st.sampled_from(KINDS) | segments)
        elif name == "single":
            value = draw(st.sampled_from(SINGLES))
        else:
            value = draw(segments.filter(lambda s: s not in ("", known.session_id)))
        out = out.replace("{" + name + "}", value or "x", 1)
    return out


def request_and_check(
    server: RunningServer,
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    headers: list[tuple[str, bytes | str]] | None = None,
    body: bytes = b"",
    *,
    forbidden_http: bool = False,
    host: bytes = b"127.0.0.1",
) -> Answer:
    """Send and ``check``; ``path`` may hold a query already (percent-encoded)."""
    target = path + ("?" + query(params) if params else "")
    answer = send(server, method, target, headers=headers, body=body, host=host)
    forbidden = forbidden_http or forbidden_in_target(target.encode())
    forbidden = forbidden or forbidden_in_headers([*(headers or []), ("Host", host)], body)
    check(answer, method, target, headers, forbidden_http=forbidden)
    return answer


# ---- every route, with any headers and bodies ------------------------------------------------


@fuzz(1500)
@given(data=st.data(), route=st.sampled_from(ROUTES), headers=header_lists, body=bodies)
def test_every_route_with_odd_headers_and_bodies(
    servers: Servers,
    known: Known,
    data: st.DataObject,
    route: tuple[str, str],
    headers: list[tuple[str, bytes]],
    body: bytes,
) -> None:
    method, template = route
    path = data.draw(paths(template, known))
    if method in ("GET", "DELETE") and data.draw(st.booleans()):
        body = b""
    if data.draw(st.booleans()):
        headers = [*JSON_TYPE, *headers]
    # One in ten: a name the server is not (421), or odd bytes.
    host = b"127.0.0.1"
    if data.draw(st.integers(0, 9)) == 0:
        host = data.draw(st.sampled_from([b"localhost:1", b"[::1]", b"evil.example", b""]) | header_values)
    request_and_check(servers.open, method, path, headers=headers, body=body, host=host)


@fuzz(900)
@given(
    data=st.data(),
    route=st.sampled_from(ROUTES),
    who=st.sampled_from(["operator", "user", "none", "odd"]),
    scheme=st.sampled_from(["x-api-key", "Authorization"]),
    odd=header_values,
    headers=header_lists,
)
def test_keys_of_any_bytes_on_a_server_with_keys(
    servers: Servers,
    data: st.DataObject,
    route: tuple[str, str],
    who: str,
    scheme: str,
    odd: bytes,
    headers: list[tuple[str, bytes]],
) -> None:
    """Keys configured: the operator's, an ordinary key's (403 on admin routes), none, or any
    bytes; as ``x-api-key`` or ``Authorization``."""
    method, template = route
    ids = Known("no-session", "no-turn", "no-turn")
    path = data.draw(paths(template, ids))
    secret = {"operator": OPERATOR.encode(), "user": servers.user_key.encode(), "none": None, "odd": odd}[who]
    sent = list(headers)
    if secret is not None:
        sent.insert(0, (scheme, b"Bearer " + secret if scheme == "Authorization" else secret))
    answer = request_and_check(servers.keyed, method, path, headers=[*JSON_TYPE, *sent])
    if (
        who == "none"
        and not answer.by_parser
        and not any(n.lower() in ("x-api-key", "authorization") for n, _ in headers)
    ):
        assert answer.status == 401 or (path == "/health" and answer.status == 200), answer.describe()


@fuzz(300)
@given(
    method=st.sampled_from(["HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "get", "X" * 40]),
    route=st.sampled_from(ROUTES),
    headers=header_lists,
)
def test_other_methods(servers: Servers, method: str, route: tuple[str, str], headers: list[tuple[str, bytes]]) -> None:
    path = route[1].replace("{sid}", "s").replace("{tid}", "t").replace("{new}", "n").replace("{seg}", "x")
    path = path.replace("{kind}", "agents").replace("{single}", "settings")
    # aiohttp's parser refuses methods it does not know (and CONNECT without host:port) itself.
    odd = method not in ("HEAD", "OPTIONS", "TRACE", "PROPFIND")
    request_and_check(servers.open, method, path, headers=headers, forbidden_http=odd)


# ---- bodies ----------------------------------------------------------------------------------

JSON_ROUTES = [
    ("POST", "/api/claude"),
    ("PATCH", "/api/sessions/{sid}"),
    ("PUT", "/api/config/agents/fuzz"),
    ("PUT", "/api/config/skills/fuzz"),
    ("PUT", "/api/config/rules/fuzz"),
    ("PUT", "/api/config/mcp-servers/fuzz"),
    ("PUT", "/api/config/claude-md"),
    ("PUT", "/api/config/settings"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
]


@fuzz(1200)
@given(
    route=st.sampled_from(JSON_ROUTES),
    body=bodies,
    ctype=st.sampled_from(["application/json", "application/vnd.x+json", "text/plain", "text/markdown"]),
)
def test_bodies_of_any_shape(servers: Servers, known: Known, route: tuple[str, str], body: bytes, ctype: str) -> None:
    method, path = route
    path = path.replace("{sid}", known.session_id)
    request_and_check(servers.open, method, path, headers=[("Content-Type", ctype)], body=body)


# Where a deep value goes in each JSON body, and how many levels the body adds around it.
DEEP_PLACES = [
    ("POST", "/api/claude", "DEEP", 0),
    ("POST", "/api/claude", '{"prompt": DEEP}', 1),
    ("POST", "/api/claude", '{"prompt": "hi", "metadata": DEEP}', 1),
    ("POST", "/api/claude", '{"prompt": "hi", "allowed_tools": [DEEP]}', 2),
    ("PATCH", "/api/sessions/{sid}", '{"metadata": {"x": DEEP}}', 2),
    ("PATCH", "/api/sessions/{sid}", '{"title": DEEP}', 1),
    ("PUT", "/api/config/agents/fuzz", '{"content": DEEP}', 1),
    ("PUT", "/api/config/settings", '{"content": DEEP}', 1),
    ("PUT", "/api/config/mcp-servers/fuzz", '{"content": DEEP}', 1),
    ("POST", "/v1/chat/completions", '{"model": "claude-code", "messages": [{"role": "user", "content": DEEP}]}', 3),
    ("POST", "/v1/chat/completions", '{"model": "claude-code", "messages": [], "tools": DEEP}', 1),
    ("POST", "/v1/messages", '{"model": "claude-code", "messages": [{"role": "user", "content": DEEP}]}', 3),
    ("POST", "/v1/messages", '{"model": "claude-code", "messages": [], "system": [DEEP]}', 2),
]


@fuzz(900)
@given(place=st.sampled_from(DEEP_PLACES), deep=deep_values)
def test_json_nested_too_deeply_is_400(
    servers: Servers, known: Known, place: tuple[str, str, str, int], deep: Deep
) -> None:
    """Past MAX_DEPTH levels, on every route that reads JSON: 400 naming the nesting, and
    never that refusal at or below it."""
    method, path, template, around = place
    path = path.replace("{sid}", known.session_id)
    body = template.replace("DEEP", deep.text).encode()
    answer = request_and_check(servers.open, method, path, headers=JSON_TYPE, body=body)
    too_deep = around + deep.depth > MAX_DEPTH
    if answer.status >= 400:
        error = answer.json()["error"]
        said = "nested too deeply" in error["message"]
        assert said == too_deep, (too_deep, answer.describe())
        if too_deep:
            assert answer.status == 400 and error.get("code", "json_too_deep") == "json_too_deep", answer.describe()
    else:
        assert not too_deep, answer.describe()


@fuzz(300)
@given(
    path=st.sampled_from(["/api/config/settings", "/api/config/mcp-servers/fuzz"]),
    deep=deep_values.filter(lambda d: len(d.text) < 200_000),
    ctype=st.sampled_from(["text/plain", "application/json"]),
)
def test_configuration_files_nested_too_deeply_are_400(servers: Servers, path: str, deep: Deep, ctype: str) -> None:
    body = deep.text.encode() if ctype == "text/plain" else to_json({"content": deep.text})
    answer = request_and_check(servers.open, "PUT", path, headers=[("Content-Type", ctype)], body=body)
    if deep.depth > MAX_DEPTH:
        assert answer.status == 400 and "nested too deeply" in answer.json()["error"]["message"], answer.describe()


chat_contents = st.one_of(
    odd_text,
    st.none(),
    st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "image", "tool_use", "x"]) | odd_text},
            optional={"text": odd_text | json_scalars},
        ),
        max_size=3,
    ),
    json_values,
)
chat_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]) | odd_text},
        optional={"content": chat_contents, "name": odd_text, "tool_calls": json_values},
    ),
    max_size=4,
)
models = st.sampled_from(["claude-code", "claude-code-sonnet", "gpt-4o", ""]) | odd_text
openai_bodies = st.fixed_dictionaries(
    {"model": models, "messages": chat_messages},
    optional={
        "stream": st.booleans() | json_scalars,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | json_scalars})
        | json_values,
        "n": st.integers(-3, 3) | json_scalars,
        "tools": json_values,
        "tool_choice": json_values,
        "temperature": json_scalars,
        "max_tokens": numbers.map(lambda n: int(n) if n.strip().lstrip("-").isdigit() and len(n) < 30 else n),
    },
)
anthropic_bodies = st.fixed_dictionaries(
    {"model": models, "messages": chat_messages},
    optional={
        "system": odd_text
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": odd_text}), max_size=2)
        | json_values,
        "max_tokens": st.integers(-(2**70), 2**70) | json_scalars,
        "stream": st.booleans() | json_scalars,
        "tools": json_values,
        "metadata": json_values,
    },
)
compat_headers = st.lists(
    st.tuples(
        st.sampled_from(
            ["X-Claude-Session-Id", "X-Conversation-Id", "X-Claude-Agent", "X-Claude-Mcp-Servers", "anthropic-version"]
        ),
        header_values,
    ),
    max_size=2,
)


@fuzz(450)
@given(body=openai_bodies, headers=compat_headers)
def test_chat_completions(servers: Servers, body: dict[str, Any], headers: list[tuple[str, bytes]]) -> None:
    request_and_check(servers.open, "POST", "/v1/chat/completions", headers=[*JSON_TYPE, *headers], body=to_json(body))


@fuzz(450)
@given(body=anthropic_bodies, headers=compat_headers)
def test_messages(servers: Servers, body: dict[str, Any], headers: list[tuple[str, bytes]]) -> None:
    request_and_check(servers.open, "POST", "/v1/messages", headers=[*JSON_TYPE, *headers], body=to_json(body))


@fuzz(300)
@given(body=objects, prompt=odd_text.filter(lambda v: v.strip() != ""))
def test_turns_with_a_prompt_and_odd_options(servers: Servers, body: dict[str, Any], prompt: str) -> None:
    """Past the prompt check: most stop at the options, some run the fake CLI."""
    body = {**body, "prompt": prompt, "stream": body.get("stream", False)}
    request_and_check(servers.open, "POST", "/api/claude", headers=JSON_TYPE, body=to_json(body))


@fuzz(300)
@given(
    body=st.fixed_dictionaries(
        {}, optional={"title": odd_text | json_scalars, "metadata": json_values, "x": json_values}
    )
)
def test_patch_the_known_session(servers: Servers, known: Known, body: dict[str, Any]) -> None:
    request_and_check(servers.open, "PATCH", f"/api/sessions/{known.session_id}", headers=JSON_TYPE, body=to_json(body))


# ---- query parameters ------------------------------------------------------------------------

LIST_ROUTES = [
    "/api/sessions",
    "/api/sessions/{sid}/messages",
    "/api/config/agents",
    "/api/config/skills",
    "/api/config/mcp-servers",
]


@fuzz(1000)
@given(
    path=st.sampled_from(LIST_ROUTES),
    params=st.dictionaries(
        st.sampled_from(["limit", "cursor", "q", "all", "conversation_id", "x"]),
        numbers | cursors | odd_text | st.sampled_from(["true", "false", "1", "yes", "TRUE"]),
        max_size=4,
    ),
)
def test_lists(servers: Servers, known: Known, path: str, params: dict[str, str]) -> None:
    request_and_check(servers.open, "GET", path.replace("{sid}", known.session_id), params)


@fuzz(700)
@given(path=st.sampled_from(LIST_ROUTES), cursor=cursors)
def test_cursors_the_server_did_not_give(servers: Servers, known: Known, path: str, cursor: str) -> None:
    answer = request_and_check(servers.open, "GET", path.replace("{sid}", known.session_id), {"cursor": cursor})
    if answer.status == 400 and not answer.by_parser:
        assert answer.json()["error"].get("field") == "cursor", answer.describe()


@fuzz(1000)
@given(
    params=st.dictionaries(st.sampled_from(["from", "to", "group_by"]), dates, max_size=3),
    group_by=st.sampled_from([None, "day", "model", "key", "color"]),
)
def test_stats_dates(servers: Servers, params: dict[str, str], group_by: str | None) -> None:
    if group_by is not None:
        params = {**params, "group_by": group_by}
    answer = request_and_check(servers.open, "GET", "/api/stats", params)
    if answer.status == 200:
        body = answer.json()
        assert body["total"]["turns"] == sum(g["turns"] for g in body["groups"]), body


NOW = datetime.now(UTC)
instants = st.one_of(
    st.datetimes(min_value=datetime(9999, 12, 31), max_value=datetime.max),
    st.datetimes(max_value=datetime(1, 1, 2)),
    st.datetimes(
        min_value=(NOW - timedelta(hours=3)).replace(tzinfo=None),
        max_value=(NOW + timedelta(hours=3)).replace(tzinfo=None),
    ),
)


@fuzz(200)
@given(when=instants, zone=zones.filter(lambda z: z not in ("z", "+24:00")), spec=timespecs)
def test_stats_from_and_to_the_same_instant_split_the_turns(
    servers: Servers, known: Known, when: datetime, zone: str, spec: str
) -> None:
    """``from`` includes an instant and ``to`` excludes it, out to the ends of the calendar."""
    bound = when.isoformat(timespec=spec) + zone
    counts = []
    for params in ({}, {"from": bound}, {"to": bound}):
        answer = request_and_check(servers.open, "GET", "/api/stats", params)
        assert answer.status == 200, answer.describe()
        counts.append(answer.json()["total"]["turns"])
    assert counts[0] == counts[1] + counts[2], (bound, counts)


# ---- the turn event stream -----------------------------------------------------------------


@fuzz(800)
@given(
    which=st.sampled_from(["finished", "unknown"]),
    owner=st.sampled_from(["same", "other", "none", "empty"]),
    seq=numbers,
    where=st.sampled_from(["header", "after", "both"]),
    raw=st.sampled_from(["utf-8", "latin-1"]),
)
def test_last_event_ids(servers: Servers, known: Known, which: str, owner: str, seq: str, where: str, raw: str) -> None:
    turn = known.turn_id if which == "finished" else "no-such-turn"
    value = {"same": f"{turn}:{seq}", "other": f"other-turn:{seq}", "none": seq, "empty": f":{seq}"}[owner]
    header = value.encode("utf-8", "surrogatepass") if raw == "utf-8" else value.encode("latin-1", "replace")
    header = header.replace(b"\r", b"").replace(b"\n", b"")
    headers: list[tuple[str, bytes | str]] = [("Last-Event-ID", header)] if where != "after" else []
    params = {"after": value} if where != "header" else {}
    answer = request_and_check(servers.open, "GET", f"/api/turns/{turn}/events", params, headers)
    if answer.status == 200:
        assert answer.headers["content-type"].startswith("text/event-stream"), answer.describe()


@fuzz(150)
@given(seq=numbers, where=st.sampled_from(["header", "after"]))
def test_last_event_ids_of_a_live_turn(servers: Servers, known: Known, seq: str, where: str) -> None:
    """The stream of a running turn stays open: only its head is read."""
    turn = known.live_turn_id
    target = f"/api/turns/{turn}/events"
    headers: list[tuple[str, bytes | str]] = []
    if where == "header":
        headers = [
            ("Last-Event-ID", f"{turn}:{seq}".encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b""))
        ]
    else:
        target += "?" + query({"after": seq})
    answer = send(servers.open, "GET", target, headers=headers, head_only=True)
    forbidden = forbidden_in_headers(headers)
    if answer.status >= 400:
        answer = send(servers.open, "GET", target, headers=headers)  # the whole error body
    check(answer, "GET", target, headers, forbidden_http=forbidden)
    assert answer.status in (200, 400), answer.describe()


# ---- workspace files -------------------------------------------------------------------------


@fuzz(500)
@given(
    method=st.sampled_from(["GET", "PUT", "DELETE"]),
    parts=st.lists(segments, min_size=1, max_size=4),
    body=st.binary(max_size=100),
)
def test_files(servers: Servers, known: Known, method: str, parts: list[str], body: bytes) -> None:
    path = "/".join(parts)
    base = f"/api/sessions/{known.session_id}/files"
    request_and_check(servers.open, method, f"{base}/{path}", body=body)
    request_and_check(servers.open, "GET", f"{base}?path={path}")
    assert not (servers.open.workspace_root.parent / "escaped").exists()
