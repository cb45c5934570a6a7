"""Connections against a real server (``python -m claude_server``, the production run_app):
half-open floods, request heads and bodies that never finish, caps per client and in total,
and what malformed requests leave in the log. Raw sockets, small timeouts."""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError

from claude_server.config import Settings
from claude_server.connections import ACCEPTING_FDS, Limits
from claude_server.quiet_log import BadRequestFilter, RateLimitedLog
from tests.conftest import FAKE_CLI, RunningServer, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic

HEAD = (
    b"POST /api/claude HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
)


def address(server: RunningServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def connect(server: RunningServer, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(address(server), timeout=timeout, source_address=(source, 0))


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or ``timeout``), and when it closed."""
    sock.settimeout(timeout)
    started, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data, time.monotonic() - started


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def error_of(response: bytes) -> dict[str, str]:
    return dict(json.loads(response.split(b"\r\n\r\n", 1)[1])["error"])


def get(server: RunningServer, path: str, timeout: float = 5.0) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection(*address(server), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - started
    finally:
        conn.close()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_lines_since(server: RunningServer, offset: int) -> list[str]:
    return server.log_text()[offset:].splitlines()


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    env = {
        "CLAUDE_SERVER_HEADER_TIMEOUT": "1",
        "CLAUDE_SERVER_BODY_IDLE_TIMEOUT": "1",
        "CLAUDE_SERVER_BODY_TIMEOUT": "2",
        "CLAUDE_SERVER_LOG_LEVEL": "INFO",
    }
    server = start_server(tmp_path_factory.mktemp("timeouts"), fake_api, FAKE_CLI, env)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    # 127.0.0.1 is held to 3 connections; 127.0.0.2 (loopback too, but not exempt here
    # either) to 3 of its own; all of them to 6 in total.
    env = {
        "CLAUDE_SERVER_MAX_CONNECTIONS": "6",
        "CLAUDE_SERVER_MAX_CONNECTIONS_PER_CLIENT": "3",
        "CLAUDE_SERVER_PER_CLIENT_EXEMPT": "192.0.2.0/24",
        "CLAUDE_SERVER_HEADER_TIMEOUT": "30",
        "CLAUDE_SERVER_BODY_TIMEOUT": "30",
    }
    server = start_server(tmp_path_factory.mktemp("capped"), fake_api, FAKE_CLI, env)
    yield server
    stop_server(server)


# ---- request heads ------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(timeouts: RunningServer) -> None:
    with connect(timeouts) as sock:
        data, took = read_all(sock, timeout=10)
    assert data == b"" and 0.9 < took < 3, took


def test_a_request_head_that_never_completes_is_closed(timeouts: RunningServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        try:
            for _ in range(100):  # a header byte every 0.1 s: progress, never an end
                sock.sendall(b"X")
                time.sleep(0.1)
        except OSError:
            pass
        data, _ = read_all(sock, timeout=5)
        took = time.monotonic() - started
    assert data == b"" and took < 4, took


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(timeouts: RunningServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # and no more
        data, took = read_all(sock, timeout=10)
    assert data == b"" and took < 3, took


# ---- request bodies -----------------------------------------------------------------------


def test_a_trickling_body_is_answered_408_and_closed(timeouts: RunningServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(HEAD)
        started = time.monotonic()
        sock.settimeout(0.3)
        data = b""
        while time.monotonic() - started < 10 and not data:
            try:
                sock.send(b" ")  # a byte every 0.3 s: never idle, far too slow
                data = sock.recv(65536)
            except TimeoutError:
                continue
        rest, _ = read_all(sock, timeout=5)
        took = time.monotonic() - started
    assert status_of(data) == 408, data
    assert error_of(data + rest)["code"] == "body_timeout"
    assert 1.9 < took < 4, took


def test_a_stalled_body_is_answered_408(timeouts: RunningServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(HEAD + b'{"prompt": ')
        data, took = read_all(sock, timeout=10)
    assert status_of(data) == 408 and error_of(data)["code"] == "body_timeout", data
    assert took < 2, took


def test_a_fast_upload_outlives_the_body_timeout_and_a_slow_one_does_not(timeouts: RunningServer) -> None:
    conn = http.client.HTTPConnection(*address(timeouts), timeout=60)
    conn.request(
        "POST", "/api/claude", body=b'{"prompt": "hi", "stream": false}', headers={"Content-Type": "application/json"}
    )
    session = json.loads(conn.getresponse().read())["session_id"]
    size = 100 * 1024 * 1024
    started = time.monotonic()
    conn.putrequest("PUT", f"/api/sessions/{session}/files/big.bin")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    chunk = b"x" * (1024 * 1024)
    for _ in range(size // len(chunk)):
        conn.send(chunk)
        time.sleep(0.02)  # about 50 MiB/s: more than the 2 s body timeout in all
    resp = conn.getresponse()
    took = time.monotonic() - started
    assert resp.status == 201 and json.loads(resp.read())["size"] == size
    assert took > 2, f"the upload took {took:.1f} s: too fast to show the deadline moving"
    conn.close()

    with connect(timeouts) as sock:  # the same upload at 4 KiB/s, under the 16 KiB/s minimum
        sock.sendall(
            f"PUT /api/sessions/{session}/files/slow.bin HTTP/1.1\r\n"
            f"Host: localhost\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        sock.settimeout(0.25)
        data, started = b"", time.monotonic()
        while not data and time.monotonic() - started < 10:
            try:
                sock.send(b"x" * 1024)
                data = sock.recv(65536)
            except TimeoutError:
                continue
    assert status_of(data) == 408, data


# ---- caps ---------------------------------------------------------------------------------


def test_a_half_open_flood_holds_few_descriptors_and_health_still_answers(
    tmp_path: Path, fake_api: FakeAnthropic
) -> None:
    limit = 300
    env = {"CLAUDE_SERVER_MAX_CONNECTIONS": str(limit), "CLAUDE_SERVER_HEADER_TIMEOUT": "60"}
    server = start_server(tmp_path, fake_api, FAKE_CLI, env)
    flood: list[socket.socket] = []
    try:
        assert get(server, "/health")[0] == 200
        before = fd_count(server.proc.pid)
        most, slowest = 0, 0.0
        for i in range(2000):
            sock = connect(server)
            if i % 2:
                sock.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # half a request head
            flood.append(sock)
            if i % 250 == 249:
                most = max(most, fd_count(server.proc.pid))
                status, took = get(server, "/health", timeout=1)
                assert status == 200
                slowest = max(slowest, took)
        most = max(most, fd_count(server.proc.pid))
    finally:
        for sock in flood:
            sock.close()
        stop_server(server)
    # Each new connection made room by closing the longest idle one: never more than the cap,
    # and the sockets accepted and closed around it.
    assert most <= before + limit + ACCEPTING_FDS, (before, most)
    assert slowest < 1, slowest


def kept_alive(server: RunningServer, source: str = "127.0.0.1") -> socket.socket:
    """A connection that has had one answer and stays open, idle."""
    sock = connect(server, source)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    return sock


def test_a_client_over_its_cap_is_answered_503_at_once(capped: RunningServer) -> None:
    held = [kept_alive(capped) for _ in range(3)]
    try:
        started = time.monotonic()
        with connect(capped) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data, _ = read_all(sock, timeout=5)
        took = time.monotonic() - started
        assert status_of(data) == 503 and b"Retry-After: 1" in data, data
        assert error_of(data)["code"] == "too_many_connections"
        assert took < 0.5, took
        # Another address has its own count.
        with connect(capped, source="127.0.0.2") as other:
            other.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert status_of(read_all(other, timeout=5)[0]) == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert get(capped, "/health")[0] == 200  # closing one gives its place back


def test_at_the_total_cap_idle_connections_make_room_and_busy_ones_do_not(capped: RunningServer) -> None:
    busy = []
    try:
        for source in ("127.0.0.1", "127.0.0.2"):
            for _ in range(3):
                sock = connect(capped, source)
                sock.sendall(HEAD + b"{")  # a request in flight, its body unfinished
                busy.append(sock)
        time.sleep(0.3)
        with connect(capped, source="127.0.0.3") as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data, _ = read_all(sock, timeout=5)
        assert status_of(data) == 503, data
        assert "as many connections" in error_of(data)["message"]
        for sock in busy[:3]:
            sock.close()
        time.sleep(0.3)
        idle = [kept_alive(capped, source="127.0.0.3") for _ in range(3)]  # back to 6, 3 of them idle
        status, _ = get(capped, "/health")  # from 127.0.0.1: closes the longest idle one
        assert status == 200
        assert read_all(idle[0], timeout=2)[0] == b""
        for sock in idle:
            sock.close()
    finally:
        for sock in busy:
            sock.close()


# ---- logs ---------------------------------------------------------------------------------

BAD_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"G\x01T / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET / HTTP/9.9\r\n\r\n",
]


def test_malformed_requests_leave_a_few_lines_and_no_traceback(timeouts: RunningServer) -> None:
    offset = len(timeouts.log_text())
    for i in range(350):
        with connect(timeouts) as sock:
            sock.sendall(BAD_REQUESTS[i % len(BAD_REQUESTS)])
            assert status_of(read_all(sock, timeout=5)[0]) in (0, 400)
    time.sleep(0.3)
    lines = log_lines_since(timeouts, offset)
    assert not [line for line in lines if "Traceback" in line or " ERROR " in line], lines[:20]
    assert len(lines) <= len(BAD_REQUESTS), lines
    assert any("bad request from 127.0.0.1" in line for line in lines), lines


def test_a_rate_limited_kind_reports_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimitedLog(logging.getLogger("test.connections"), interval_s=0.05)
    with caplog.at_level(logging.INFO, "test.connections"):
        for _ in range(50):
            limiter.log("kind", logging.INFO, "one line")
        limiter.log("other", logging.INFO, "another kind")
        time.sleep(0.06)
        limiter.log("kind", logging.INFO, "one line")  # a new interval: reports the last first
    assert [r.getMessage() for r in caplog.records] == [
        "one line",
        "another kind",
        "49 more like it (kind) in the last 0.05 s",
        "one line",
    ]


def parse_error_record(name: str) -> logging.LogRecord:
    try:
        raise BadHttpMessage("Invalid header token:\n\n  b'Bad\x1b[31mHeader'\n     ^")
    except BadHttpMessage as exc:
        return logging.LogRecord(
            name, logging.ERROR, "", 0, "Error handling request from %s", ("10.0.0.1",), (BadHttpMessage, exc, None)
        )


def test_the_filter_makes_a_parse_error_one_info_line() -> None:
    logging.getLogger("test.aiohttp.server").setLevel(logging.INFO)
    filt = BadRequestFilter(RateLimitedLog(logging.getLogger("test.connections")))
    record = parse_error_record("test.aiohttp.server")
    assert filt.filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    message = record.getMessage()
    assert message.startswith("bad request from 10.0.0.1: BadHttpMessage: Invalid header token: b'Bad")
    assert "\n" not in message and "\x1b" not in message
    assert not filt.filter(parse_error_record("test.aiohttp.server"))  # the same kind, at once
    logging.getLogger("test.quiet.server").setLevel(logging.WARNING)
    assert not filt.filter(parse_error_record("test.quiet.server"))  # INFO is below this logger's level


def test_the_filter_makes_a_body_that_fails_to_decode_one_info_line() -> None:
    """After the answer aiohttp drains a body no handler read; one that fails to decode
    (Content-Encoding: deflate on other bytes) was logged as "Unhandled exception"."""
    logging.getLogger("test.drain.server").setLevel(logging.INFO)
    filt = BadRequestFilter(RateLimitedLog(logging.getLogger("test.connections")))
    try:
        try:
            raise ContentEncodingError("Can not decode content-encoding: deflate")
        except ContentEncodingError as cause:
            raise web.RequestPayloadError(str(cause)) from cause
    except web.RequestPayloadError as exc:
        record = logging.LogRecord(
            "test.drain.server", logging.ERROR, "", 0, "Unhandled exception", (), (type(exc), exc, None)
        )
    assert filt.filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == (
        "bad request from None: ContentEncodingError: Can not decode content-encoding: deflate"
    )


def test_the_filter_leaves_other_errors_alone() -> None:
    filt = BadRequestFilter(RateLimitedLog(logging.getLogger("test.connections")))
    try:
        raise RuntimeError("a bug of ours")
    except RuntimeError as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "Unhandled", (), (RuntimeError, exc, None))
    assert filt.filter(record) and record.levelno == logging.ERROR and record.exc_info is not None


def test_client_keys() -> None:
    limits = Limits.from_settings(Settings(per_client_exempt=("127.0.0.0/8", "::1", "10.1.0.0/16")), 20000)
    assert limits.client_key(("127.0.0.5", 1)) is None
    assert limits.client_key(("::ffff:127.0.0.1", 1, 0, 0)) is None
    assert limits.client_key(("10.1.2.3", 1)) is None
    assert limits.client_key(("10.2.0.1", 1)) == "10.2.0.1"
    assert limits.client_key(("::ffff:10.2.0.1", 1, 0, 0)) == "10.2.0.1"
    assert limits.client_key(("2001:db8::1", 1, 0, 0)) == limits.client_key(("2001:db8::ffff", 1, 0, 0))
    assert limits.client_key(("2001:db8:0:1::1", 1, 0, 0)) == "2001:db8:0:1::/64"
    assert limits.client_key("") is None  # a Unix socket
    assert ipaddress.ip_network("10.1.0.0/16") in limits.exempt


def test_the_total_cap_fits_the_descriptor_limit() -> None:
    assert Limits.from_settings(Settings(), 20000).max_connections == 4096
    assert Limits.from_settings(Settings(), 1024).max_connections == (1024 - 256 - 384 - 128) // 2
