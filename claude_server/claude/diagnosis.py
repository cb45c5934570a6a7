"""What the CLI meant when a turn failed: its stderr when it exited without a result, and its
``result`` line when that says ``is_error``. The broker only asks; the CLI's words are read
here, where the facts about them are (CLI-FACTS.md and docs/cli-behaviour.md)."""

from __future__ import annotations

from claude_server.outcome import StopCode, TurnError, TurnResult

_NOT_LOGGED_IN = ("not logged in", "please run /login")
_AUTH_WORDS = ("invalid api key", "failed to authenticate", "authentication_error", "oauth token has expired")
_CREDENTIALS_HINT = (
    "set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the server's environment, or log the CLI in "
    "(`claude /login`) as the user the server runs as"
)


def exit_failure(stderr_tail: str, exit_code: int | None) -> TurnError:
    """Why a CLI exited without a result, from its stderr."""
    if "cannot be used with root/sudo privileges" in stderr_tail:
        message = (
            "Claude Code refused --dangerously-skip-permissions because it runs as root. If this "
            "machine is a sandbox, start the server with IS_SANDBOX=1 in its environment."
        )
    elif "No conversation found" in stderr_tail:
        message = "Claude Code could not find this session's conversation to resume."
    elif any(word in stderr_tail.lower() for word in _NOT_LOGGED_IN):
        return TurnError(StopCode.NOT_LOGGED_IN, f"Claude Code is not logged in: {_CREDENTIALS_HINT}.")
    else:
        last = next((ln.strip() for ln in reversed(stderr_tail.splitlines()) if ln.strip()), "")
        message = f"Claude Code exited with code {exit_code} without a result" + (f": {last}" if last else "")
    return TurnError(StopCode.CLI_FAILED, message)


def result_failure(result: TurnResult) -> TurnError | None:
    """What a ``result`` with ``is_error`` means, or None for a result that succeeded.

    Measured on 2.1.330 (docs/cli-behaviour.md): no credentials is ``subtype: success``,
    ``is_error: true``, ``api_error_status: null`` and the text "Not logged in · Please run
    /login"; a rejected OAuth token says the same with status 401, a rejected API key
    "Invalid API key · Fix external API key"; an API error the CLI gave up on carries
    ``api_error_status``; the limits are ``error_max_turns`` / ``error_max_budget_usd`` with
    their reason in ``errors`` and no ``result`` text."""
    if not result.is_error:
        return None
    said = (result.text or "; ".join(result.errors)).strip()
    lowered = said.lower()
    status = result.api_error_status
    if status is None and any(word in lowered for word in _NOT_LOGGED_IN):
        return TurnError(StopCode.NOT_LOGGED_IN, f"Claude Code is not logged in ({said}): {_CREDENTIALS_HINT}.")
    if status in (401, 403) or any(word in lowered for word in _AUTH_WORDS):
        return TurnError(
            StopCode.AUTHENTICATION_FAILED,
            f"The Anthropic API refused Claude Code's credentials ({said or status}): {_CREDENTIALS_HINT}.",
        )
    if status == 429:
        return TurnError(StopCode.API_RATE_LIMITED, f"The Anthropic API is rate limiting Claude Code: {said}")
    if status in (503, 529):
        return TurnError(StopCode.API_OVERLOADED, f"The Anthropic API is overloaded: {said}")
    if status is not None:
        return TurnError(StopCode.API_ERROR, f"The Anthropic API answered {status}: {said}")
    subtype = result.subtype or "error"
    if subtype == "error_max_turns":
        return TurnError(StopCode.MAX_TURNS, "Claude Code stopped at the turn's max_turns" + _said(said))
    if subtype == "error_max_budget_usd":
        return TurnError(StopCode.MAX_BUDGET, "Claude Code stopped at the turn's max_budget_usd" + _said(said))
    if lowered.startswith("api error"):
        return TurnError(StopCode.API_ERROR, f"Claude Code reported an API error: {said}")
    return TurnError(StopCode.CLI_ERROR, f"Claude Code reported an error ({subtype})" + _said(said))


def _said(text: str) -> str:
    return f": {text}" if text else ""
