"""The OpenAPI document: handlers describe themselves with ``@doc`` (``describe``), and
``build`` generates the document from the route table; ``served`` keeps it, built once."""

from claude_server.openapi.describe import ByPath, Empty, Json, Param, Raw, Sse, SseEvent, doc

__all__ = ["ByPath", "Empty", "Json", "Param", "Raw", "Sse", "SseEvent", "doc"]
