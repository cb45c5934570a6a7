"""The web app's operations page, phone layout, keys, transcript rendering and /docs in a real
headless Chromium, against the real server (see test_e2e_webapp.py)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from claude_server.web.serving import site
from tests.browser import (
    ARTIFACTS,
    OPERATOR,
    PHONE,
    WAIT_MS,
    Watched,
    api,
    browser,
    fetch,
    keyed_server,
    playwright,
    send,
    sign_in,
    watched,
)
from tests.conftest import RunningServer

pytestmark = pytest.mark.e2e
# Nothing wider than the screen: the page, nor the header's own row.
FITS = """() => document.documentElement.scrollWidth <= window.innerWidth
    && [...document.querySelectorAll(".top > *")].every((e) => e.getBoundingClientRect().right <= window.innerWidth)"""
# Fixtures used by name.
__all__ = ["browser", "keyed_server", "playwright", "watched"]


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
        assert page.evaluate(FITS), "something is wider than the screen"
        page.screenshot(path=str(ARTIFACTS / f"chat-phone-{scheme}.png"))
        page.click("#nav-ops")
        expect(page.locator("#chart-turns canvas")).to_have_count(1, timeout=WAIT_MS)
        assert page.evaluate(FITS), "something is wider than the screen"
        page.screenshot(path=str(ARTIFACTS / f"dashboard-phone-{scheme}.png"))
        context.close()
        assert w.problems() == [] and w.dialogs == []


def test_an_ordinary_key_sees_its_own_and_is_asked_again_once_revoked(
    watched: Watched, keyed_server: RunningServer
) -> None:
    made = api(keyed_server, "/api/keys", "POST", {"name": "ordinary-browser"})
    api(keyed_server, "/api/claude", "POST", {"prompt": "the operator's own", "stream": False})
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
