"""The OpenAI- and Anthropic-compatible APIs, below their routes: what both share.

``models`` (the model names a client may use), ``conversation`` (a stateless request's
messages flattened to text, and the key that matches a resent history to its session),
``content`` (the answer's text read from a turn's events), ``errors`` (each API's error
shape) and ``chat`` (running one request as a turn, on the right session).

Nothing is imported here: ``config`` imports ``compat.models``, and ``compat.chat`` imports
the broker, which imports ``config``.
"""
