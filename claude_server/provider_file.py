"""The providers file: the Anthropic accounts or endpoints the server may run the CLI against.

Each provider is a set of environment variables for the CLI (a key, a token, a gateway URL,
a model...); ``claude_server.providers`` chooses one per session and watches its health.
This module only reads and checks the file: no HTTP, no database. A file the server cannot
use is refused whole, with one ``ProviderFileError`` naming the file and the place, so that
an operator fixes it before any turn runs on half a configuration.

TOML (``.toml``) or JSON (``.json``, the same keys); a full example with every key::

    strategy = "weighted"        # or "round_robin"; default "weighted"
    failover = true              # move a session to another provider when its own is down; default true
    failure_threshold = 3        # consecutive failures that mark a provider unhealthy; default 3, 1..100
    recovery_timeout = 60        # seconds it stays unhealthy before one turn may try it; default 60, > 0
    max_retries = 2              # CLAUDE_CODE_MAX_RETRIES for every provider; default 2, 0..10

    [[providers]]
    id = "team-a"                # required, [a-z0-9][a-z0-9_-]{0,63}, unique
    name = "Team A key"          # default: the id
    weight = 3                   # 1..100, default 1 (share of new sessions with "weighted")
    enabled = true               # default true
    api_key = "${TEAM_A_KEY}"    # -> ANTHROPIC_API_KEY
    # auth_token = "..."         # -> ANTHROPIC_AUTH_TOKEN
    # base_url = "https://gateway.example.com"   # -> ANTHROPIC_BASE_URL (http/https URL)
    max_retries = 3              # -> CLAUDE_CODE_MAX_RETRIES, overrides the top-level one
    [providers.env]              # more variables for the CLI, names [A-Z_][A-Z0-9_]*
    ANTHROPIC_MODEL = "claude-sonnet-4-5"
    API_TIMEOUT_MS = "600000"

    [[providers]]
    id = "gateway"
    base_url = "http://llm-gateway.internal:8080"   # a gateway that needs no key of ours

Rules:

- Every string value of api_key, auth_token, base_url and ``env`` may name variables of the
  server's own environment as ``${NAME}`` (so that no secret needs to be written in the
  file); ``$${`` is a literal ``${``. A variable that is not set is an error, and so is a value
  that is empty, or holds a NUL or a line break, once expanded.
- A provider needs at least one of api_key, auth_token and base_url (or, for a Claude
  subscription, ``CLAUDE_CODE_OAUTH_TOKEN`` in its ``env``).
- ``env`` may not set what the provider's own keys set (ANTHROPIC_API_KEY,
  ANTHROPIC_AUTH_TOKEN, ANTHROPIC_BASE_URL, CLAUDE_CODE_MAX_RETRIES), nor the server's
  (``CLAUDE_SERVER_*``, PATH, HOME, CLAUDE_CONFIG_DIR).
- base_url may not hold a user name or password: it is shown by the admin API.
- Unknown keys are errors (a misspelt ``apikey`` must not silently leave a provider keyless).

Secrets (keys, tokens, every ``env`` value) never appear in an error message, a ``repr`` or
``ProviderConfig.public()``: only the last 4 characters of a key, as ``key_hint``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

# The variables a provider decides for its CLI: none of them may come from the server's own
# environment (nor from another provider). Every ``ANTHROPIC_*`` goes as well.
PROVIDER_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_MAX_RETRIES",
)
STRATEGIES = ("weighted", "round_robin")
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ENV_NAME_PATTERN = re.compile(r"[A-Z_][A-Z0-9_]*")
# What a provider's own keys set; ``env`` may not set them behind the keys' backs.
_FIELD_VARIABLES = {
    "ANTHROPIC_API_KEY": "api_key",
    "ANTHROPIC_AUTH_TOKEN": "auth_token",
    "ANTHROPIC_BASE_URL": "base_url",
    "CLAUDE_CODE_MAX_RETRIES": "max_retries",
}
# What the server sets for every CLI it runs.
_SERVER_VARIABLES = ("PATH", "HOME", "CLAUDE_CONFIG_DIR")
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
MAX_NAME_CHARS = 200
# A key this short would be given away by its last 4 characters: its hint is "…" alone.
MIN_HINTED_KEY_CHARS = 12


class ProviderFileError(ValueError):
    """The providers file cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class ProviderConfig:
    """One provider as the server uses it. ``env`` is everything the CLI gets from it and
    holds the secrets: it is kept out of ``repr`` and ``public()``."""

    id: str
    name: str
    weight: int
    enabled: bool
    # ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN / ANTHROPIC_BASE_URL (those given),
    # CLAUDE_CODE_MAX_RETRIES (always), and the file's ``env``. Read-only.
    env: Mapping[str, str] = field(repr=False, hash=False)
    max_retries: int
    key_hint: str | None
    base_url: str | None

    @property
    def env_names(self) -> list[str]:
        """The names the file's ``env`` table set (those of its own keys are not among them:
        ``env`` may not set them)."""
        return sorted(name for name in self.env if name not in _FIELD_VARIABLES)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: no secret value, only the names of ``env``."""
        return {
            "id": self.id,
            "name": self.name,
            "weight": self.weight,
            "enabled": self.enabled,
            "base_url": self.base_url,
            "key_hint": self.key_hint,
            "max_retries": self.max_retries,
            "env_names": self.env_names,
        }


@dataclass(frozen=True)
class ProviderSettings:
    strategy: str  # "weighted" | "round_robin"
    failover: bool
    failure_threshold: int
    recovery_timeout_s: float
    providers: tuple[ProviderConfig, ...]


def provider_env(base: Mapping[str, str], provider: ProviderConfig) -> dict[str, str]:
    """The environment of a CLI running on ``provider``: ``base`` without any credential or
    endpoint (every ``ANTHROPIC_*`` and ``PROVIDER_VARIABLES``), then the provider's own.
    The server's key, or a variable another provider set, must never reach this one's CLI."""
    env = {
        name: value
        for name, value in base.items()
        if not name.startswith("ANTHROPIC_") and name not in PROVIDER_VARIABLES
    }
    env.update(provider.env)
    return env


# -- checks pydantic runs -----------------------------------------------------------------


def _between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return AfterValidator(check)


def _positive_seconds(value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a number of seconds greater than 0, got {value}")
    return value


def _strategy(value: str) -> str:
    if value not in STRATEGIES:
        raise ValueError(f"must be weighted or round_robin, got {_shown(value)}")
    return value


def _id(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"must be 1 to 64 lowercase letters, digits, _ or -, starting with a letter or digit, got {_shown(value)}"
        )
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"must be at most {MAX_NAME_CHARS} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not hold control characters (line breaks, tabs, NUL)")
    return value


def _env_name(name: str) -> str:
    if not ENV_NAME_PATTERN.fullmatch(name):
        raise ValueError("is not a variable name: use A-Z, 0-9 and _, not starting with a digit")
    if name in _FIELD_VARIABLES:
        raise ValueError(f"may not be set here: the provider's {_FIELD_VARIABLES[name]} sets it")
    if name.startswith("CLAUDE_SERVER_"):
        raise ValueError("may not be set here: CLAUDE_SERVER_* variables are the server's own settings")
    if name in _SERVER_VARIABLES:
        raise ValueError(f"may not be set here: the server sets {name} for every CLI it runs")
    return name


def _expanded(value: str, info: ValidationInfo) -> str:
    """``value`` with its ``${NAME}`` replaced from the environment in the validation context;
    the message never shows the value (it may be a secret), only the variable's name."""
    environ: Mapping[str, str] = (info.context or {}).get("environ", {})
    used: list[str] = []

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "$${":
            return "${"
        name = match.group(1)
        if name is None:
            raise ValueError("has a ${ that is not ${NAME} (write $${ for a literal ${)")
        if name not in environ:
            raise ValueError(f"names ${{{name}}}, which is not set")
        used.append(name)
        return environ[name]

    result = _REFERENCE.sub(replace, value)
    source = f" (from ${{{used[0]}}})" if len(used) == 1 else " (after expanding its variables)" if used else ""
    if not result:
        raise ValueError(f"must not be empty{source}")
    if "\0" in result:
        raise ValueError(f"must not hold a NUL character{source}")
    if "\n" in result or "\r" in result:
        raise ValueError(f"must not hold a line break{source}")
    return result


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("must be an http:// or https:// URL with a valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host name")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold a user name or password (put credentials in api_key or auth_token)")
    return value


Secret = Annotated[str, AfterValidator(_expanded)]
EnvName = Annotated[str, AfterValidator(_env_name)]


class _Provider(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, AfterValidator(_id)]
    name: Annotated[str, AfterValidator(_name)] | None = None
    weight: Annotated[int, _between(1, 100)] = 1
    enabled: bool = True
    api_key: Secret | None = None
    auth_token: Secret | None = None
    base_url: Annotated[Secret, AfterValidator(_base_url)] | None = None
    max_retries: Annotated[int, _between(0, 10)] | None = None
    env: dict[EnvName, Secret] = {}

    @model_validator(mode="after")
    def _has_an_endpoint(self) -> _Provider:
        if not (self.api_key or self.auth_token or self.base_url or "CLAUDE_CODE_OAUTH_TOKEN" in self.env):
            raise ValueError("needs at least one of api_key, auth_token or base_url")
        return self


def _at_least_one(providers: list[_Provider]) -> list[_Provider]:
    if not providers:
        raise ValueError("must hold at least one provider (a [[providers]] table)")
    return providers


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: Annotated[str, AfterValidator(_strategy)] = "weighted"
    failover: bool = True
    failure_threshold: Annotated[int, _between(1, 100)] = 3
    recovery_timeout: Annotated[float, AfterValidator(_positive_seconds)] = 60.0
    max_retries: Annotated[int, _between(0, 10)] = 2
    providers: Annotated[list[_Provider], AfterValidator(_at_least_one)]


# -- reading ------------------------------------------------------------------------------


def load_providers(path: Path, environ: Mapping[str, str]) -> ProviderSettings:
    """The providers ``path`` describes, its ``${NAME}`` taken from ``environ``.
    Raises ``ProviderFileError`` for anything the server cannot use."""
    data = _parse(path)
    try:
        model = _File.model_validate(data, context={"environ": environ})
    except ValidationError as exc:
        raise ProviderFileError(f"{path}: {_problems(exc, data)}") from None
    seen: dict[str, int] = {}
    for index, provider in enumerate(model.providers):
        if provider.id in seen:
            raise ProviderFileError(
                f"{path}: providers[{index}] ({provider.id}): id {provider.id} is already used by "
                f"providers[{seen[provider.id]}]"
            )
        seen[provider.id] = index
    return ProviderSettings(
        strategy=model.strategy,
        failover=model.failover,
        failure_threshold=model.failure_threshold,
        recovery_timeout_s=model.recovery_timeout,
        providers=tuple(_config(p, model.max_retries) for p in model.providers),
    )


def _parse(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ProviderFileError(f"{path}: a providers file must be .toml or .json, not {suffix or 'without a suffix'}")
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise ProviderFileError(f"{path}: cannot read the providers file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ProviderFileError(f"{path}: is not UTF-8 text (byte {exc.start})") from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProviderFileError(f"{path}: is not valid TOML: {exc}") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ProviderFileError(
            f"{path}: is not valid JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise ProviderFileError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ProviderFileError(f"{path}: must hold a JSON object, not {_kind(data)}")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects without repeated keys: plain ``json`` keeps the last one silently, and
    TOML refuses them; a repeated ``api_key`` must not be a guess."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {_shown(key)} appears twice in one JSON object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _config(provider: _Provider, default_retries: int) -> ProviderConfig:
    retries = default_retries if provider.max_retries is None else provider.max_retries
    env: dict[str, str] = {}
    if provider.api_key is not None:
        env["ANTHROPIC_API_KEY"] = provider.api_key
    if provider.auth_token is not None:
        env["ANTHROPIC_AUTH_TOKEN"] = provider.auth_token
    if provider.base_url is not None:
        env["ANTHROPIC_BASE_URL"] = provider.base_url
    env["CLAUDE_CODE_MAX_RETRIES"] = str(retries)
    env.update(provider.env)
    return ProviderConfig(
        id=provider.id,
        name=provider.name if provider.name is not None else provider.id,
        weight=provider.weight,
        enabled=provider.enabled,
        env=MappingProxyType(env),
        max_retries=retries,
        key_hint=_hint(provider.api_key or provider.auth_token),
        base_url=provider.base_url,
    )


def _hint(secret: str | None) -> str | None:
    if secret is None:
        return None
    return "…" + secret[-4:] if len(secret) >= MIN_HINTED_KEY_CHARS else "…"


# -- messages -----------------------------------------------------------------------------

_TYPES = {
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "float_type": "must be a number",
    "dict_type": "must be a table (an object in JSON)",
    "model_type": "must be a table (an object in JSON)",
    "list_type": "must be a list of tables ([[providers]] in TOML, an array of objects in JSON)",
}


def _problems(exc: ValidationError, data: Any) -> str:
    """Every problem pydantic found, each with its place: ``providers[1] (team-b): weight
    must be between 1 and 100, got 0``. Values are shown only when they are numbers or
    booleans: a string in the wrong place may be a secret."""
    return "; ".join(_problem(err, data) for err in exc.errors(include_url=False))


def _problem(err: Any, data: Any) -> str:
    loc = list(err["loc"])
    kind = err["type"]
    if kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
    elif kind == "missing":
        message = "is required" if loc != ["providers"] else "is required: add at least one [[providers]] table"
    elif kind == "extra_forbidden":
        known = _Provider.model_fields if len(loc) == 3 and loc[0] == "providers" else _File.model_fields
        message = f"is not a known key (known: {', '.join(known)})"
    elif kind in _TYPES:
        message = f"{_TYPES[kind]}, got {_kind(err['input'])}"
    else:
        message = str(err["msg"])
    if loc and loc[-1] == "[key]":  # a key of ``env`` is wrong, not its value
        loc.pop()
    prefix = ""
    if len(loc) >= 2 and loc[0] == "providers" and isinstance(loc[1], int):
        prefix = f"providers[{loc[1]}]{_provider_label(data, loc[1])}: "
        loc = loc[2:]
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            path += f".{name}" if path else name
    return f"{prefix}{path} {message}" if path else f"{prefix}{message}"


def _provider_label(data: Any, index: int) -> str:
    """`` (team-b)`` after ``providers[1]`` when that provider has a valid id."""
    try:
        provider_id = data["providers"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return ""
    return f" ({provider_id})" if isinstance(provider_id, str) and ID_PATTERN.fullmatch(provider_id) else ""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "null"
    return type(value).__name__


def _shown(value: str) -> str:
    """A value that is no secret (an id, a strategy), quoted and cut short."""
    return json.dumps(value if len(value) <= 80 else value[:77] + "...")
