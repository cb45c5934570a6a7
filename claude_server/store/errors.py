"""The store's own exceptions, the same whichever database is underneath."""

from __future__ import annotations


class Conflict(Exception):
    """A write broke a unique (or other integrity) constraint."""


class DatabaseUnavailable(Exception):
    """The database cannot be opened: a bad URL, a server that does not answer, a refused
    login. The message is one line that names the database (never its password)."""
