"""Install the Claude Code pipe into a running Open WebUI, switch it on and set its valves.

    python scripts/openwebui_setup.py --url http://open-webui:8080 --pipe open_webui/claude_code.py \
        --server-url http://balancer:3000 --api-key-env CLAUDE_SERVER_API_KEY

The admin account's email and password come from the environment (``WEBUI_ADMIN_EMAIL`` and
``WEBUI_ADMIN_PASSWORD`` by default: the variables with which Open WebUI creates that account at
its first start), as does the server's API key: no secret is ever given on the command line or
printed. Running it again changes only what differs: the function's content (updated in place),
its state (switched on only when off), its valves (the two set here, the others kept).

Status 0 when the pipe is installed, on and configured; 1 with one line on stderr saying what
failed. Standard library only, so that it runs in any Python 3.11+ image.

Every endpoint and payload below is Open WebUI 0.12.4's (files of its package, ``open_webui/``):
  GET  /health                               main.py: {"status": true} once the app has started
  POST /api/v1/auths/signin                  routers/auths.py: {"email", "password"} -> {"token", "role", ...};
                                             400 with {"detail"} on a wrong email or password
  GET  /api/v1/functions/list                routers/functions.py: admin only; [{"id", "is_active", ...}]
  GET  /api/v1/functions/id/{id}             routers/functions.py: the function with its "content"
  POST /api/v1/functions/create              routers/functions.py: {"id", "name", "content", "meta"};
                                             400 "id is already registered" when it exists
  POST /api/v1/functions/id/{id}/update      routers/functions.py: the same form, replaces the content
  POST /api/v1/functions/id/{id}/toggle      routers/functions.py: flips is_active (so only when it is off)
  GET  /api/v1/functions/id/{id}/valves      routers/functions.py: the stored valves, or null
  POST /api/v1/functions/id/{id}/valves/update  routers/functions.py: the valves as a dict; the stored
                                             valves become exactly what is sent, hence the merge
Open WebUI answers 401 for a bad token, for a user who is not an admin (utils/auth.py,
get_admin_user) and, on these routes, for a function id that does not exist.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "openwebui_setup"
REQUEST_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 1.0
DEFAULT_WAIT_S = 300.0
DESCRIPTION_RE = re.compile(r"^description:\s*(.+?)\s*$", re.MULTILINE)


class SetupError(Exception):
    """What failed, in one line."""


@dataclass
class Client:
    """Open WebUI's HTTP API, with the admin's token once signed in."""

    base: str
    secrets: tuple[str, ...] = ()
    token: str = ""

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def call(self, method: str, path: str, body: Any = None, timeout: float = REQUEST_TIMEOUT_S) -> Any:
        """The JSON answer of one request; a SetupError naming the request for anything else."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise SetupError(f"{method} {path}: {exc.code} {self.redact(detail_of(exc))}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise SetupError(f"{method} {path}: {self.redact(str(reason))}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise SetupError(f"{method} {path}: the answer is not JSON") from None


def detail_of(exc: urllib.error.HTTPError) -> str:
    """FastAPI's {"detail": ...} of an error answer, else its reason."""
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    text = detail if isinstance(detail, str) else (json.dumps(detail) if detail else str(exc.reason))
    return " ".join(text.split())[:300]


def wait_until_up(client: Client, wait_s: float) -> None:
    """Poll /health until Open WebUI has started (its first start migrates and can take a minute)."""
    deadline = time.monotonic() + wait_s
    last = "no answer"
    while True:
        try:
            answer = client.call("GET", "/health", timeout=min(REQUEST_TIMEOUT_S, max(wait_s, 1.0)))
            if isinstance(answer, dict) and answer.get("status") is True:
                return
            last = f"/health answered {json.dumps(answer)[:100]}"
        except SetupError as exc:
            last = str(exc)
        if time.monotonic() + POLL_INTERVAL_S > deadline:
            raise SetupError(f"Open WebUI at {client.base} did not answer within {wait_s:g} s (last: {last})")
        time.sleep(POLL_INTERVAL_S)


def sign_in(client: Client, email: str, password: str) -> None:
    try:
        answer = client.call("POST", "/api/v1/auths/signin", {"email": email, "password": password})
    except SetupError as exc:
        raise SetupError(f"signing in as {email} failed: {exc}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise SetupError(f"signing in as {email} failed: no token in the answer")
    if answer.get("role") != "admin":
        raise SetupError(f"{email} is not an admin of Open WebUI (role {answer.get('role')!r})")
    client.token = answer["token"]


def install(client: Client, function_id: str, name: str, content: str, description: str) -> str:
    """Create the function, or update it when its content, name or description differ."""
    form = {"id": function_id, "name": name, "content": content, "meta": {"description": description}}
    listed = client.call("GET", "/api/v1/functions/list")
    if not isinstance(listed, list):
        raise SetupError("GET /api/v1/functions/list: not a list")
    if not any(isinstance(f, dict) and f.get("id") == function_id for f in listed):
        client.call("POST", "/api/v1/functions/create", form)
        return "created"
    current = client.call("GET", f"/api/v1/functions/id/{function_id}")
    meta = (current.get("meta") or {}) if isinstance(current, dict) else {}
    if (
        isinstance(current, dict)
        and current.get("content") == content
        and current.get("name") == name
        and meta.get("description") == description
    ):
        return "unchanged"
    client.call("POST", f"/api/v1/functions/id/{function_id}/update", form)
    return "updated"


def activate(client: Client, function_id: str) -> str:
    """Switch the function on; the toggle flips its state, so only when it is off."""
    current = client.call("GET", f"/api/v1/functions/id/{function_id}")
    if isinstance(current, dict) and current.get("is_active") is True:
        return "already on"
    toggled = client.call("POST", f"/api/v1/functions/id/{function_id}/toggle")
    if not isinstance(toggled, dict) or toggled.get("is_active") is not True:
        raise SetupError(f"POST /api/v1/functions/id/{function_id}/toggle: the function is still off")
    return "switched on"


def set_valves(client: Client, function_id: str, valves: dict[str, Any]) -> str:
    """Set these valves and keep the others as they are (the update replaces them all)."""
    current = client.call("GET", f"/api/v1/functions/id/{function_id}/valves")
    stored = current if isinstance(current, dict) else {}
    merged = {**stored, **valves}
    if merged == stored:
        return "unchanged"
    client.call("POST", f"/api/v1/functions/id/{function_id}/valves/update", merged)
    return "set"


def env_value(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SetupError(f"{name} ({what}) is not set")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="Open WebUI's base URL, e.g. http://open-webui:8080")
    parser.add_argument("--pipe", required=True, type=Path, help="the pipe's file (open_webui/claude_code.py)")
    parser.add_argument("--server-url", required=True, help="claude-server's URL as Open WebUI reaches it")
    parser.add_argument("--api-key-env", default="CLAUDE_SERVER_API_KEY", help="variable holding the server's key")
    parser.add_argument("--admin-email-env", default="WEBUI_ADMIN_EMAIL", help="variable holding the admin's email")
    parser.add_argument(
        "--admin-password-env", default="WEBUI_ADMIN_PASSWORD", help="variable holding the admin's password"
    )
    parser.add_argument("--id", default="claude_code", help="the function's id in Open WebUI")
    parser.add_argument("--name", default="Claude Code", help="the function's (and model's) name")
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="seconds to wait for Open WebUI")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    email = env_value(args.admin_email_env, "Open WebUI admin's email")
    password = env_value(args.admin_password_env, "Open WebUI admin's password")
    api_key = env_value(args.api_key_env, "claude-server API key")
    try:
        content = args.pipe.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read the pipe {args.pipe}: {exc}") from None
    found = DESCRIPTION_RE.search(content)
    description = found.group(1) if found else args.name
    client = Client(args.url.rstrip("/"), secrets=(password, api_key))
    wait_until_up(client, args.wait)
    sign_in(client, email, password)
    client.secrets += (client.token,)
    print(f"function {args.id}: {install(client, args.id, args.name, content, description)}")
    print(f"function {args.id}: {activate(client, args.id)}")
    valves = {"SERVER_URL": args.server_url, "API_KEY": api_key}
    outcome = set_valves(client, args.id, valves)
    print(f"valves SERVER_URL={args.server_url} and API_KEY (from {args.api_key_env}): {outcome}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except SetupError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
