"""What the web app's browser tests share: a server with an operator key, Debian's chromium
driven by Playwright (never a browser of Playwright's own), pages whose console, errors and
dialogs are watched, and small helpers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect, sync_playwright

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = "op-webapp-e2e-secret"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PHONE = {"width": 390, "height": 844}
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    server = start_server(
        tmp_path_factory.mktemp("webapp"), fake_api, real_cli_path(), {"CLAUDE_SERVER_API_KEYS": OPERATOR}
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium package (as root)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield b
    b.close()


class Watched:
    """A page with what its console said, what failed to run, and every dialog it opened."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page = context.new_page()
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))
        self.page.on("dialog", self._dialog)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            self.console.append(f"{msg.type}: {msg.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def problems(self) -> list[str]:
        # A 401 or 404 the app asked for (the sign-in probe, a deleted session) is logged by
        # the browser; anything else (a CSP violation, an exception) is a failure.
        return [m for m in self.console if "Failed to load resource" not in m]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    w = Watched(context)
    yield w
    context.close()
    assert w.problems() == []
    assert w.dialogs == []


def sign_in(w: Watched, server: RunningServer, url: str | None = None) -> Page:
    page = w.page
    page.goto((url or server.url) + "/")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#signin-key", OPERATOR)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#chat-view")).to_be_visible()
    return page


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def last_text(page: Page) -> str:
    blocks = page.locator("#transcript [data-role=text]")
    return blocks.last.inner_text() if blocks.count() else ""


def api(server: RunningServer, path: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {OPERATOR}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def fetch(url: str, secret: str = OPERATOR) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.read()


def wait_for_text_longer_than(page: Page, chars: int) -> None:
    page.wait_for_function(
        "(n) => (document.querySelector('#transcript [data-role=text]')?.textContent.length ?? 0) > n",
        arg=chars,
        timeout=WAIT_MS,
    )


def session_id_of(page: Page) -> str:
    page.wait_for_function("() => location.hash.startsWith('#/s/')", timeout=WAIT_MS)
    return str(page.evaluate("() => decodeURIComponent(location.hash.slice(4))"))


class CuttableProxy:
    """A TCP proxy to the server whose open connections the test can cut (a dropped network),
    while new ones keep working."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self.open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> int:
        """Close every connection open now; how many there were."""
        with self.lock:
            socks = list(self.open)
        for sock in socks:
            self._close(sock)
        return len(socks)

    def close(self) -> None:
        self.listener.close()
        self.cut()
