"""The web app's chat in a real headless Chromium (Debian's chromium, driven by Playwright),
against the real server with the real CLI and the fake Anthropic API: sign-in, streaming, tool
blocks and dialogs, reload mid-turn, stop, sessions, files, and HTML that must not run.
Screenshots go to tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import (
    ARTIFACTS,
    OPERATOR,
    WAIT_MS,
    CuttableProxy,
    Watched,
    api,
    browser,
    fetch,
    keyed_server,
    last_text,
    playwright,
    send,
    session_id_of,
    sign_in,
    wait_for_text_longer_than,
    watched,
)
from tests.conftest import RunningServer
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e
# Fixtures used by name.
__all__ = ["browser", "keyed_server", "playwright", "watched"]


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
    page.screenshot(path=str(ARTIFACTS / "chat-streamed.png"))


def test_a_tool_call_is_a_collapsed_block_with_its_input_and_result(
    watched: Watched, keyed_server: RunningServer
) -> None:
    page = sign_in(watched, keyed_server)
    send(page, "Markdown *renders*:\n\n- a list\n- `code`\n\n```\nmake run\n```")
    expect(page.locator("#transcript [data-role=text] li")).to_have_count(2, timeout=WAIT_MS)
    expect(page.locator("#transcript [data-role=text] pre")).to_have_text("make run")
    send(page, "[[bash: echo from-the-tool]]")
    tool = page.locator("details.tool[data-tool=Bash]")
    expect(tool).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(tool.locator("summary")).to_contain_text("echo from-the-tool")
    expect(tool.locator(".tool-result")).to_be_hidden()  # collapsed
    tool.locator("summary").click()
    expect(tool.locator(".tool-result")).to_have_text("from-the-tool")
    expect(tool.locator(".tool-input")).to_contain_text('"command": "echo from-the-tool"')
    expect(page.locator("#transcript [data-role=text]").last).to_have_text("Tool said: from-the-tool", timeout=WAIT_MS)
    page.evaluate("() => { const t = document.getElementById('transcript'); t.scrollTop = t.scrollHeight; }")
    page.screenshot(path=str(ARTIFACTS / "chat.png"))


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


def test_a_dropped_connection_is_picked_up_after_the_last_event(watched: Watched, keyed_server: RunningServer) -> None:
    proxy = CuttableProxy(int(keyed_server.url.rsplit(":", 1)[1]))
    try:
        page = sign_in(watched, keyed_server, proxy.url)
        words = " ".join(f"d{i:02d}" for i in range(40))
        send(page, f"[[slow: 6]] {words}")
        final = f"Echo(1): [[slow: 6]] {words}"
        wait_for_text_longer_than(page, 30)
        turn_id = json.loads(page.evaluate("() => sessionStorage.getItem('claude-server.running')"))["turnId"]
        assert proxy.cut() >= 2  # the stream breaks; the turn (detached) goes on
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not page.locator("#transcript [data-role=text][data-state=done]").count():
            seen.append(last_text(page))
            time.sleep(0.05)
        expect(page.locator("#transcript [data-role=text]")).to_have_text(final)
        assert any(len(t) < len(final) for t in seen)
        assert all(final.startswith(t.strip()) for t in seen), seen
        expect(page.locator(".turn-meta").last).not_to_be_empty()
        # It came back through the turn's event log, after the last event it had (the access log
        # line is written once that request has ended, which can be after the page drew the end).
        logged = lambda: f"/api/turns/{turn_id}/events" in keyed_server.log_text()  # noqa: E731
        assert wait_until(logged, 10.0)
    finally:
        proxy.close()


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
    # Folders: into one and back by the path above the list.
    put = urllib.request.Request(
        f"{keyed_server.url}/api/sessions/{session_id}/files/sub/deeper/inside.txt",
        data=b"inside",
        method="PUT",
        headers={"Authorization": f"Bearer {OPERATOR}"},
    )
    with urllib.request.urlopen(put, timeout=10) as resp:
        assert resp.status == 201
    page.click("#toggle-files")
    page.click("#toggle-files")  # closed and opened again: listed anew
    page.get_by_role("button", name="sub/").click()
    page.get_by_role("button", name="deeper/").click()
    expect(page.locator("#files-list")).to_contain_text("inside.txt")
    page.locator("#files-path").get_by_role("button", name="workspace").click()
    expect(page.locator("#files-list li[data-name=sub]")).to_be_visible()
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
    agent = "---\nname: browser-reviewer\ndescription: Reviews\n---\nReview.\n"
    api(keyed_server, "/api/config/agents/browser-reviewer", "PUT", {"content": agent})
    api(keyed_server, "/api/config/mcp-servers/browser-mcp", "PUT", {"content": {"command": "true"}})
    page = sign_in(watched, keyed_server)
    page.click("#options summary")
    # The configured agent and MCP server are offered beside the built-in agents.
    expect(page.locator("#opt-agent option[value=browser-reviewer]")).to_have_count(1)
    expect(page.locator("#opt-mcp")).to_contain_text("browser-mcp")
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
    payload = (
        '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> **bold**\n\n'
        "```html\n<img src=x onerror=window.__pwned=3>\n```"
    )
    page.fill("#prompt", payload)
    page.press("#prompt", "Enter")  # Enter sends
    answer = page.locator("#transcript [data-role=text][data-state=done]")
    expect(answer).to_be_visible(timeout=WAIT_MS)
    expect(answer).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(answer).to_contain_text("<script>window.__pwned=2</script>")
    expect(answer.locator("strong")).to_have_text("bold")  # Markdown still renders
    code = answer.locator("pre code.hljs")  # and code is highlighted, as text
    expect(code).to_have_text("<img src=x onerror=window.__pwned=3>")
    assert code.locator("span.hljs-tag").count() >= 1
    assert page.locator("#transcript img, #transcript script").count() == 0
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__pwned") is None
    # The same after a reload, drawn from the session's history.
    page.reload()
    expect(page.locator("#transcript [data-role=text]")).to_contain_text("<script>window.__pwned=2</script>")
    assert page.locator("#transcript img, #transcript script").count() == 0
    assert page.evaluate("() => window.__pwned") is None
