"""The management commands of ``claude-server``: ``status``, ``sessions``, ``turns``,
``stats`` and ``doctor``, for people (tables) and scripts (``--json``), against the server's
database or a running server. ``parser`` registers them; ``main`` runs one."""

from claude_server.manage.parser import COMMANDS, add_commands, main, run, run_safely

__all__ = ["COMMANDS", "add_commands", "main", "run", "run_safely"]
