"""Where a turn runs: the session a request resumes (by ``session_id`` or
``conversation_id``), its workspace directory, and the session the CLI reports for it.
No aiohttp here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from claude_server.claude.command import TurnOptions
from claude_server.claude.probe import install_hint
from claude_server.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from claude_server.principal import Principal
from claude_server.store import ConversationTaken, SessionRow, Store
from claude_server.turn import Turn
from claude_server.workspaces import WorkspaceError, Workspaces

# Claude Code fixes these when a session is created and ignores them on a resumed turn.
CREATION_ONLY = ("system_prompt", "append_system_prompt", "agent")


async def resolve_session(
    store: Store, options: TurnOptions, conversation_id: str | None, principal: Principal
) -> tuple[TurnOptions, SessionRow | None]:
    """The session a request resumes (by session_id or conversation_id), or None for a new
    one. A session of another key is "not found": nothing else may reveal it exists."""
    owner = principal.key_id
    if conversation_id is not None:
        bound = await store.find_conversation(conversation_id, owner)
        if bound is not None:
            if options.session_id and options.session_id != bound.session_id:
                raise BadRequest(
                    f"conversation_id {conversation_id!r} belongs to session {bound.session_id}, "
                    f"not {options.session_id}",
                    code="invalid_field",
                    field="conversation_id",
                )
            options = replace(options, session_id=bound.session_id)
    sid = options.session_id
    if not sid:
        if options.fork_session:
            raise BadRequest(
                f"conversation_id {conversation_id!r} has no session to fork yet",
                code="invalid_field",
                field="fork_session",
            )
        return options, None
    for name in CREATION_ONLY:
        if getattr(options, name) is not None:
            raise BadRequest(
                f"{name} cannot be given when resuming a session: the system prompt (an agent's "
                "included) is fixed when a session is created and Claude Code ignores it on a resumed turn",
                code="invalid_field",
                field=name,
            )
    row = await store.get_session(sid)
    if row is None or not principal.can_see(row.owner):
        raise NotFound(f"No session {sid} (it may have been deleted)", code="session_not_found")
    if conversation_id is not None and row.conversation_id not in (None, conversation_id):
        raise BadRequest(
            f"Session {sid} belongs to conversation_id {row.conversation_id!r}, not {conversation_id!r}",
            code="invalid_field",
            field="conversation_id",
        )
    return options, row


async def workspace_for(
    store: Store,
    workspaces: Workspaces,
    session: SessionRow | None,
    workspace_name: str | None,
    principal: Principal,
) -> tuple[Path, bool]:
    """The workspace a turn runs in, and whether it is the turn's to create (a new
    session's own directory, or a named one not made yet). Nothing is created here: the
    directory is made when the CLI starts, so a refused turn leaves nothing behind.

    A named workspace belongs to the key that names it: the same name used by two keys
    means two directories, so naming another key's workspace reveals nothing of it."""
    if session is not None:
        if workspace_name is not None and workspace_name != session.workspace_name:
            raise BadRequest(
                f"Session {session.session_id} runs in workspace {session.workspace_name!r}; "
                "workspace only chooses where a new session runs",
                code="invalid_field",
                field="workspace",
            )
        return Path(session.workspace_path), False
    if workspace_name is None:
        return workspaces.new_path(), True
    used = await store.named_workspace_of(principal.key_id, workspace_name)
    path = Path(used) if used is not None else workspaces.named_path(principal.key_id, workspace_name)
    try:
        workspaces.check_usable(path)
    except WorkspaceError as exc:
        raise Conflict(str(exc), code="workspace_unavailable", field="workspace") from None
    return path, True


async def record_session(store: Store, turn: Turn, session_id: str) -> None:
    """Record the session the CLI reported for a turn: a new one, a fork, or a new id on
    resume (older CLIs), against the same workspace; the old one stays resumable."""
    parent = turn.session
    forked = turn.options.fork_session and parent is not None
    conversation = turn.conversation_id if parent is None else None
    if parent is not None and not forked and parent.conversation_id is not None:
        # The conversation goes on under the new id (a fork does not move it).
        conversation = parent.conversation_id
        await store.bind_conversation(parent.session_id, None)
    await store.insert_session(
        session_id,
        workspace_path=str(turn.workspace),
        workspace_name=turn.workspace.name,
        first_prompt=parent.first_prompt if parent else turn.options.prompt,
        forked_from=parent.session_id if parent else None,
        conversation_id=conversation,
        owner=turn.owner,
        title=parent.title if parent else None,
        metadata=parent.metadata if parent else None,
    )
    await store.set_turn_session(turn.id, session_id)


def start_error(exc: BaseException, cli_path: str | None, conversation_id: str | None) -> BaseException:
    """What the client hears when a turn could not start: the CLI would not run (503), or
    the conversation was bound to another session meanwhile (409); else ``exc`` itself."""
    if isinstance(exc, OSError):
        return ServiceUnavailable(
            f"Could not start Claude Code ({cli_path}): {exc}. {install_hint()}", code="cli_not_found"
        )
    if isinstance(exc, ConversationTaken):
        return Conflict(
            f"conversation_id {conversation_id!r} was just bound to another session; retry",
            code="conversation_taken",
        )
    return exc
