"""Workspace files and the Claude configuration files."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from claude_server.api_models.base import ApiModel


class FileEntry(ApiModel):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    mtime: str


class Listing(ApiModel):
    path: str
    entries: list[FileEntry]


class Saved(ApiModel):
    path: str
    size: int


class ConfigEntry(ApiModel):
    name: str
    content: str
    updated_at: str | None = Field(description="Null for CLAUDE.md or settings.json when not set")
    etag: str
    files: list[str] | None = Field(None, description="A skill's other files")


class ConfigSummary(ApiModel):
    name: str
    updated_at: str | None
    etag: str
    size: int
    description: str | None = Field(None, description="Agents and skills: from the frontmatter")


def _config_list(key: str) -> type[ApiModel]:
    fields: dict[str, object] = {key: (list[ConfigSummary], ...), "next_cursor": (str | None, ...)}
    name = "".join(part.capitalize() for part in key.split("_")) + "List"
    return create_model(name, __base__=ApiModel, **fields)  # type: ignore[call-overload, no-any-return]


# The list of each kind under its own key (config_content.Kind.list_key), by the kind in the path.
CONFIG_LISTS: dict[str, type[ApiModel]] = {
    "agents": _config_list("agents"),
    "skills": _config_list("skills"),
    "rules": _config_list("rules"),
    "mcp-servers": _config_list("mcp_servers"),
}


class SkillFileSaved(ApiModel):
    skill: str
    path: str
    size: int
