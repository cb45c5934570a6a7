"""The web app in a real headless Chromium (Debian's chromium, driven by Playwright), against
the real server with the real CLI and the fake Anthropic API. Screenshots go to
tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect, sync_playwright

from claude_server.web.serving import site
from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic

pytestmark = pytest.mark.e2e

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


def sign_in(w: Watched, server: RunningServer) -> Page:
    page = w.page
    page.goto(server.url + "/")
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


def test_sign_in_then_text_streams_in_token_by_token(watched: Watched, keyed_server: RunningServer) -> None:
    page = watched.page
    page.goto(keyed_server.url + "/")
    page.fill("#signin-key", "not-a-key")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("not valid")
    page = sign_in(watched, keyed_server)
    # The key is in this tab's session storage only: not in local storage, not in the URL.
    assert page.evaluate("() => sessionStorage.getItem('claude-server.key')") == OPERATOR
    assert page.evaluate("() => localStorage.length") == 0
    assert OPERATOR not in page.url
    # What the browser downloaded for the page, compressed bodies (the budget: 500 KB).
    downloaded = page.evaluate(
        """() => [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
            .filter((e) => !e.name.includes("/api/")).reduce((n, e) => n + e.encodedBodySize, 0)"""
    )
    assert 10_000 < downloaded < 500 * 1024, downloaded
    print(f"chat page: {downloaded} bytes downloaded")
    words = "streaming " * 12
    send(page, f"[[slow: 3]] {words}")
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = last_text(page)
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if page.locator("#transcript [data-role=text][data-state=done]").count():
            break
        time.sleep(0.05)
    final = f"Echo(1): [[slow: 3]] {words}".strip()
    expect(page.locator("#transcript [data-role=text]").last).to_have_text(final)
    partial = [t for t in seen if t != final]
    assert len(partial) >= 3, seen  # it grew in front of us, chunk by chunk
    assert all(final.startswith(t.strip()) for t in partial), seen
    expect(page.locator(".turn-meta").last).to_contain_text("$")
    page.screenshot(path=str(ARTIFACTS / "chat.png"))


def test_a_tool_call_is_a_collapsed_block_with_its_input_and_result(
    watched: Watched, keyed_server: RunningServer
) -> None:
    page = sign_in(watched, keyed_server)
    send(page, "[[bash: echo from-the-tool]]")
    tool = page.locator("details.tool[data-tool=Bash]")
    expect(tool).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(tool.locator("summary")).to_contain_text("echo from-the-tool")
    expect(tool.locator(".tool-result")).to_be_hidden()  # collapsed
    tool.locator("summary").click()
    expect(tool.locator(".tool-result")).to_have_text("from-the-tool")
    expect(tool.locator(".tool-input")).to_contain_text('"command": "echo from-the-tool"')
    expect(page.locator("#transcript [data-role=text]").last).to_have_text("Tool said: from-the-tool", timeout=WAIT_MS)


def test_a_tool_approval_and_a_question_are_answered_in_dialogs(watched: Watched, keyed_server: RunningServer) -> None:
    page = sign_in(watched, keyed_server)
    send(page, "[[write: approved.txt | written from a dialog]]")
    dialog = page.locator("#dlg-prompt")
    expect(dialog).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#dlg-prompt-title")).to_have_text("Allow Write?")
    expect(dialog).to_contain_text("written from a dialog")
    page.get_by_role("button", name="Allow", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(page.locator("details.tool[data-tool=Write]")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(page.locator(".turn-meta").last).not_to_be_empty(timeout=WAIT_MS)
    session_id = session_id_of(page)
    _, written = fetch(f"{keyed_server.url}/api/sessions/{session_id}/files/approved.txt")
    assert written.decode().strip() == "written from a dialog"
    send(page, "[[ask: Which colour? | red | blue]]")
    expect(dialog).to_be_visible(timeout=WAIT_MS)
    expect(dialog).to_contain_text("Which colour?")
    dialog.get_by_label("blue").check()
    dialog.get_by_role("button", name="Answer").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#transcript [data-role=text]").last).to_contain_text("blue", timeout=WAIT_MS)


def test_a_reload_mid_turn_continues_the_stream_without_duplicates(
    watched: Watched, keyed_server: RunningServer
) -> None:
    page = sign_in(watched, keyed_server)
    words = " ".join(f"w{i:02d}" for i in range(40))
    send(page, f"[[slow: 6]] {words}")
    final = f"Echo(1): [[slow: 6]] {words}"
    wait_for_text_longer_than(page, 30)
    session_id = session_id_of(page)
    page.reload()
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = last_text(page)
        if text:
            seen.append(text)
        if page.locator("#transcript [data-role=text][data-state=done]").count():
            break
        time.sleep(0.05)
    expect(page.locator("#transcript [data-role=text]")).to_have_text(final)
    # Every state after the reload is a prefix of the answer: nothing drawn twice, nothing lost.
    assert any(len(t) < len(final) for t in seen), "the turn ended before the reload could show it running"
    assert all(final.startswith(t.strip()) for t in seen), seen
    expect(page.locator("#transcript [data-role=prompt]")).to_have_count(1)
    # Once the turn ended the tab forgets it (a later reload draws it from the history).
    page.wait_for_function("() => sessionStorage.getItem('claude-server.running') === null", timeout=WAIT_MS)
    assert session_id_of(page) == session_id
    turns = api(keyed_server, f"/api/sessions/{session_id}/messages")["turns"]
    assert [t["status"] for t in turns] == ["succeeded"]


def test_the_stop_button_interrupts_the_turn(watched: Watched, keyed_server: RunningServer) -> None:
    page = sign_in(watched, keyed_server)
    send(page, "[[slow: 30]] " + "long " * 40)
    wait_for_text_longer_than(page, 10)
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    expect(page.locator(".turn-error")).to_have_text("Stopped.", timeout=10_000)
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled()
    turns = api(keyed_server, f"/api/sessions/{session_id_of(page)}/messages")["turns"]
    assert turns[-1]["status"] == "cancelled"


def test_rename_and_delete_a_session(watched: Watched, keyed_server: RunningServer) -> None:
    page = sign_in(watched, keyed_server)
    send(page, "to be renamed")
    expect(page.locator(".turn-meta").last).not_to_be_empty(timeout=WAIT_MS)
    session_id = session_id_of(page)
    page.click("#rename-session")
    page.fill("#dlg-text-input", "Renamed by the browser")
    page.click("#dlg-text button[value=ok]")
    expect(page.locator("#chat-title")).to_have_text("Renamed by the browser")
    item = page.locator(f"#session-list a[data-session-id='{session_id}']")
    expect(item).to_contain_text("Renamed by the browser")
    assert api(keyed_server, f"/api/sessions/{session_id}")["title"] == "Renamed by the browser"
    page.fill("#session-search", "Renamed by the")
    expect(page.locator("#session-list a")).to_have_count(1)
    page.click("#delete-session")
    page.click("#dlg-confirm button[value=ok]")
    expect(item).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("New session")
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(keyed_server, f"/api/sessions/{session_id}")
    assert gone.value.code == 404
    gone.value.close()


def test_upload_and_download_files(watched: Watched, keyed_server: RunningServer, tmp_path: Path) -> None:
    page = sign_in(watched, keyed_server)
    send(page, "a session for files")
    expect(page.locator(".turn-meta").last).not_to_be_empty(timeout=WAIT_MS)
    session_id = session_id_of(page)
    page.click("#toggle-files")
    hostile = "<img src=x onerror=window.__pwned=1>.txt"
    local = tmp_path / "notes.txt"
    local.write_text("hello from the browser\n")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / hostile).write_text("named to hurt\n")
    page.set_input_files("#files-upload", [str(local), str(tmp_path / "x" / hostile)])
    expect(page.locator("#files-list li[data-name='notes.txt']")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#files-list")).to_contain_text(hostile)
    assert page.locator("#files-list img").count() == 0
    listing = api(keyed_server, f"/api/sessions/{session_id}/files")["entries"]
    assert {"notes.txt", hostile} <= {e["name"] for e in listing}
    with page.expect_download() as got:
        page.get_by_role("button", name="notes.txt").click()
    download = got.value
    assert download.suggested_filename == "notes.txt"
    assert Path(download.path()).read_text() == "hello from the browser\n"
    with page.expect_download() as got:
        page.click("#files-archive")
    assert got.value.suggested_filename == "workspace.tar.gz"
    assert Path(got.value.path()).read_bytes()[:2] == b"\x1f\x8b"
    assert page.evaluate("() => window.__pwned") is None
    # Dropped on the chat while a turn runs.
    send(page, "[[slow: 2]] still talking while a file arrives")
    expect(page.locator("#stop")).to_be_visible()
    page.evaluate(
        """() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["dropped bytes"], "dropped.txt", { type: "text/plain" }));
        const target = document.getElementById("transcript");
        target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
        target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }"""
    )
    expect(page.locator("#files-list li[data-name='dropped.txt']")).to_be_visible(timeout=WAIT_MS)
    assert page.locator("#stop").is_visible()  # the turn was still running
    assert fetch(f"{keyed_server.url}/api/sessions/{session_id}/files/dropped.txt")[1] == b"dropped bytes"


def test_a_new_session_takes_its_options_and_a_resumed_one_keeps_them(
    watched: Watched, keyed_server: RunningServer
) -> None:
    page = sign_in(watched, keyed_server)
    page.click("#options summary")
    page.fill("#opt-model", "sonnet")
    page.select_option("#opt-permission", "acceptEdits")
    page.fill("#opt-tools", "Read, Bash(git log:*)")
    page.fill("#opt-workspace", "browser-ws")
    page.select_option("#opt-agent", "Explore")
    send(page, "with options")
    expect(page.locator(".turn-meta").last).not_to_be_empty(timeout=WAIT_MS)
    session_id = session_id_of(page)
    detail = api(keyed_server, f"/api/sessions/{session_id}")
    assert detail["workspace"] == "browser-ws"
    (turn,) = api(keyed_server, f"/api/sessions/{session_id}/messages")["turns"]
    options = api(keyed_server, f"/api/turns/{turn['turn_id']}")["options"]
    assert options["model"] == "sonnet"
    assert options["permission_mode"] == "acceptEdits"
    assert options["allowed_tools"] == ["Read", "Bash(git log:*)"]
    assert options["agent"] == "Explore"
    # Opened again, the session's next turn asks for the same (the agent and workspace stay its own).
    page.reload()
    page.click("#options summary")
    expect(page.locator("#opt-permission")).to_have_value("acceptEdits")
    expect(page.locator("#opt-tools")).to_have_value("Read, Bash(git log:*)")
    expect(page.locator("#opt-agent")).to_be_disabled()
    send(page, "second turn")
    expect(page.locator("#transcript [data-role=text]").last).to_have_text("Echo(3): second turn", timeout=WAIT_MS)
    second = api(keyed_server, f"/api/sessions/{session_id}/messages")["turns"][-1]
    assert api(keyed_server, f"/api/turns/{second['turn_id']}")["options"]["permission_mode"] == "acceptEdits"


def test_html_in_an_answer_is_shown_as_text_and_runs_nothing(watched: Watched, keyed_server: RunningServer) -> None:
    page = sign_in(watched, keyed_server)
    payload = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> **bold**'
    send(page, payload)
    answer = page.locator("#transcript [data-role=text][data-state=done]")
    expect(answer).to_be_visible(timeout=WAIT_MS)
    expect(answer).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(answer).to_contain_text("<script>window.__pwned=2</script>")
    expect(answer.locator("strong")).to_have_text("bold")  # Markdown still renders
    assert page.locator("#transcript img, #transcript script").count() == 0
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__pwned") is None
    # The same after a reload, drawn from the session's history.
    page.reload()
    expect(page.locator("#transcript [data-role=text]")).to_contain_text("<script>window.__pwned=2</script>")
    assert page.locator("#transcript img, #transcript script").count() == 0
    assert page.evaluate("() => window.__pwned") is None


def test_the_dashboard_draws_its_charts_and_manages_keys(watched: Watched, keyed_server: RunningServer) -> None:
    page = sign_in(watched, keyed_server)
    send(page, "a turn for the charts")
    expect(page.locator(".turn-meta").last).not_to_be_empty(timeout=WAIT_MS)
    expect(page.locator("#nav-ops")).to_be_visible()
    page.click("#nav-ops")
    for chart in ("#chart-turns", "#chart-cost", "#chart-latency"):
        expect(page.locator(f"{chart} canvas")).to_have_count(1, timeout=WAIT_MS)
        assert int(page.locator(chart).get_attribute("data-points") or 0) >= 1
    expect(page.locator("#ops-health")).to_contain_text("Running turns")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    page.fill("#key-name", "browser-made")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#dlg-secret-value")).to_contain_text("csk_")
    secret = page.locator("#dlg-secret-value").inner_text()
    page.click("#dlg-secret button[value=ok]")
    row = page.locator("#ops-keys tr", has_text="browser-made")
    expect(row).to_be_visible()
    names = [k["name"] for k in api(keyed_server, "/api/keys")["keys"]]
    assert "browser-made" in names
    assert fetch(keyed_server.url + "/api/sessions", secret)[0] == 200
    row.get_by_role("button", name="Revoke").click()
    page.click("#dlg-confirm button[value=ok]")
    expect(row).to_contain_text("revoked")


def test_phone_and_dark_screenshots(browser: Browser, keyed_server: RunningServer) -> None:
    """The layout at a phone's size, in light and dark mode: the sidebar folds away, nothing
    overflows sideways."""
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport=PHONE, color_scheme=scheme, is_mobile=True, has_touch=True)
        w = Watched(context)
        page = sign_in(w, keyed_server)
        expect(page.locator("#sidebar")).to_be_hidden()
        page.click("#toggle-sidebar")
        expect(page.locator("#sidebar")).to_be_visible()
        page.click("#toggle-sidebar")
        send(page, "hello from a phone, **in markdown**")
        expect(page.locator(".turn-meta").last).not_to_be_empty(timeout=WAIT_MS)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(ARTIFACTS / f"chat-phone-{scheme}.png"))
        page.click("#nav-ops")
        expect(page.locator("#chart-turns canvas")).to_have_count(1, timeout=WAIT_MS)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(ARTIFACTS / f"dashboard-phone-{scheme}.png"))
        context.close()
        assert w.problems() == [] and w.dialogs == []


def test_an_ordinary_key_sees_its_own_and_is_asked_again_once_revoked(
    watched: Watched, keyed_server: RunningServer
) -> None:
    made = api(keyed_server, "/api/keys", "POST", {"name": "ordinary-browser"})
    theirs = api(keyed_server, "/api/sessions")["sessions"]
    page = watched.page
    page.goto(keyed_server.url + "/")
    page.fill("#signin-key", made["secret"])
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#nav-ops")).to_be_hidden()  # operations are for admin keys
    expect(page.locator("#session-list")).to_contain_text("No sessions yet.")
    assert theirs  # the operator's sessions exist, and this key does not see them
    send(page, "mine alone")
    expect(page.locator(".turn-meta").last).not_to_be_empty(timeout=WAIT_MS)
    expect(page.locator("#session-list a")).to_have_count(1)
    api(keyed_server, f"/api/keys/{made['key_id']}/revoke", "POST", {})
    page.click("#new-session")
    send(page, "after the revocation")
    expect(page.locator("#signin")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#signin-error")).to_contain_text("no longer accepted")
    assert page.evaluate("() => sessionStorage.getItem('claude-server.key')") is None
    page.fill("#signin-key", OPERATOR)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#nav-ops")).to_be_visible()
    page.click("#sign-out")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_thinking_tool_errors_and_failures_are_drawn_as_blocks_and_sentences(
    watched: Watched, keyed_server: RunningServer
) -> None:
    """Events the fake model does not send (thinking, a failing tool, a failed turn), fed to
    the page's own transcript module."""
    page = watched.page
    page.goto(keyed_server.url + "/")
    url = site().assets.url("transcript.js")
    events = [
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
                "delta": {"type": "thinking_delta", "thinking": "Let me <b>think</b>"},
            },
        },
        {
            "type": "assistant",
            "message": {"id": "m1", "content": [{"type": "thinking", "thinking": "Let me <b>think</b>."}]},
        },
        {
            "type": "assistant",
            "message": {
                "id": "m1",
                "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/etc/<x>"}}],
            },
        },
        {
            "type": "user",
            "message": {
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "no such file"}],
                        "is_error": True,
                    }
                ]
            },
        },
        {"type": "result", "subtype": "error_max_budget_usd", "is_error": True, "duration_ms": 1234},
        {"type": "error", "code": "max_budget", "message": "the turn reached max_budget_usd 0.01"},
    ]
    drawn = page.evaluate(
        """async ([url, events]) => {
            const { TurnView } = await import(url);
            const box = document.createElement("div");
            document.body.append(box);
            const view = new TurnView(box, "a prompt");
            for (const ev of events) view.handle(ev);
            view.showMeta(0.0123);
            return {
                thinking: box.querySelector("details.thinking .body").textContent,
                thinkingOpen: box.querySelector("details.thinking").open,
                bold: box.querySelectorAll("b").length,
                tool: box.querySelector("details.tool").dataset.state,
                toolLabel: box.querySelector("details.tool summary code").textContent,
                toolResult: box.querySelector("details.tool .tool-result").textContent,
                error: box.querySelector(".turn-error").textContent,
                meta: box.querySelector(".turn-meta").textContent,
                finished: view.finished,
            };
        }""",
        [url, events],
    )
    assert drawn == {
        "thinking": "Let me <b>think</b>.",
        "thinkingOpen": False,
        "bold": 0,
        "tool": "error",
        "toolLabel": "/etc/<x>",
        "toolResult": "no such file",
        "error": "The turn stopped at its budget. (the turn reached max_budget_usd 0.01)",
        "meta": "1.2 s · $0.01",
        "finished": True,
    }


def test_without_keys_the_app_opens_directly(watched: Watched, e2e_server: RunningServer) -> None:
    page = watched.page
    page.goto(e2e_server.url + "/")
    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_hidden()


def test_the_api_docs_render_the_servers_operations(watched: Watched, keyed_server: RunningServer) -> None:
    page = watched.page
    page.goto(keyed_server.url + "/docs")
    # Swagger UI drew the operations of /openapi.json (bundled assets, no CDN).
    expect(page.locator(".opblock").first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".opblock-summary-path", has_text="/api/claude").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "docs.png"))
