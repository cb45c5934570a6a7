"""The providers file (parsing, every refusal and its message, ``${NAME}``, secrets kept out
of sight) and the choice, health and failover of ``Providers`` on a fake clock."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from claude_server.provider_file import (
    PROVIDER_VARIABLES,
    ProviderConfig,
    ProviderFileError,
    ProviderSettings,
    load_providers,
    provider_env,
)
from claude_server.providers import NoProvider, Providers

SECRET = "sk-ant-DISTINCTIVE-secret-9f3c"
TOKEN = "tok-ANOTHER-distinctive-7e21"

FULL = """
strategy = "round_robin"
failover = false
failure_threshold = 5
recovery_timeout = 30
max_retries = 4

[[providers]]
id = "team-a"
name = "Team A key"
weight = 3
enabled = true
api_key = "${TEAM_A_KEY}"
max_retries = 3
[providers.env]
ANTHROPIC_MODEL = "claude-sonnet-4-5"
API_TIMEOUT_MS = "600000"

[[providers]]
id = "team-b"
auth_token = "${TEAM_B_TOKEN}"
base_url = "https://gateway.example.com/v1"

[[providers]]
id = "gateway"
base_url = "http://llm-gateway.internal:8080"
enabled = false
"""
ENVIRON = {"TEAM_A_KEY": SECRET, "TEAM_B_TOKEN": TOKEN}


def write(tmp_path: Path, text: str, name: str = "providers.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(
    tmp_path: Path, text: str, environ: Mapping[str, str] | None = None, name: str = "providers.toml"
) -> ProviderSettings:
    return load_providers(write(tmp_path, text, name), ENVIRON if environ is None else environ)


def refused(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None, name: str = "providers.toml") -> str:
    with pytest.raises(ProviderFileError) as info:
        load(tmp_path, text, environ, name)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / name}: "), message
    assert SECRET not in message and TOKEN not in message
    return message.removeprefix(f"{tmp_path / name}: ")


def one(body: str) -> str:
    """A file with one provider ``team-a`` whose table ends with ``body``."""
    return f'[[providers]]\nid = "team-a"\napi_key = "k"\n{body}\n'


# -- the file -----------------------------------------------------------------------------


def test_a_full_toml_file(tmp_path: Path) -> None:
    settings = load(tmp_path, FULL)
    assert (settings.strategy, settings.failover, settings.failure_threshold) == ("round_robin", False, 5)
    assert settings.recovery_timeout_s == 30.0
    a, b, gateway = settings.providers
    assert (a.id, a.name, a.weight, a.enabled, a.max_retries) == ("team-a", "Team A key", 3, True, 3)
    assert dict(a.env) == {
        "ANTHROPIC_API_KEY": SECRET,
        "CLAUDE_CODE_MAX_RETRIES": "3",
        "ANTHROPIC_MODEL": "claude-sonnet-4-5",
        "API_TIMEOUT_MS": "600000",
    }
    assert a.key_hint == "…9f3c" and a.base_url is None
    assert (b.name, b.weight, b.max_retries, b.key_hint) == ("team-b", 1, 4, "…7e21")
    assert dict(b.env) == {
        "ANTHROPIC_AUTH_TOKEN": TOKEN,
        "ANTHROPIC_BASE_URL": "https://gateway.example.com/v1",
        "CLAUDE_CODE_MAX_RETRIES": "4",
    }
    assert gateway.enabled is False and gateway.key_hint is None
    assert dict(gateway.env) == {
        "ANTHROPIC_BASE_URL": "http://llm-gateway.internal:8080",
        "CLAUDE_CODE_MAX_RETRIES": "4",
    }
    with pytest.raises(TypeError):
        a.env["ANTHROPIC_API_KEY"] = "other"  # type: ignore[index]


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, one(""))
    assert (settings.strategy, settings.failover, settings.failure_threshold) == ("weighted", True, 3)
    assert settings.recovery_timeout_s == 60.0
    (p,) = settings.providers
    assert (p.name, p.weight, p.enabled, p.max_retries) == ("team-a", 1, True, 2)
    assert p.env["CLAUDE_CODE_MAX_RETRIES"] == "2"
    assert p.key_hint == "…"  # a key this short is not given away by its last 4 characters


def test_json_is_the_same_file(tmp_path: Path) -> None:
    data = {
        "strategy": "round_robin",
        "recovery_timeout": 2.5,
        "providers": [{"id": "a", "api_key": "${TEAM_A_KEY}", "env": {"ANTHROPIC_MODEL": "opus"}}],
    }
    settings = load(tmp_path, json.dumps(data), name="providers.json")
    assert settings.strategy == "round_robin" and settings.recovery_timeout_s == 2.5
    assert settings.providers[0].env["ANTHROPIC_API_KEY"] == SECRET
    assert settings.providers[0].public()["env_names"] == ["ANTHROPIC_MODEL"]


def test_expansion_and_the_literal(tmp_path: Path) -> None:
    text = one('[providers.env]\nA = "pre-${X}-${Y}-post"\nB = "$${NOT_A_VAR}"\nC = "a $ b $X {c}"')
    (p,) = load(tmp_path, text, {"X": "1", "Y": "${X}"}).providers
    # single pass: a value's own "${X}" is not expanded again
    assert (p.env["A"], p.env["B"], p.env["C"]) == ("pre-1-${X}-post", "${NOT_A_VAR}", "a $ b $X {c}")


def test_an_undefined_variable_is_named_with_its_provider(tmp_path: Path) -> None:
    message = refused(tmp_path, FULL, {"TEAM_B_TOKEN": TOKEN})
    assert message == "providers[0] (team-a): api_key names ${TEAM_A_KEY}, which is not set"
    message = refused(tmp_path, one('[providers.env]\nAPI_TIMEOUT_MS = "${TIMEOUT}"'))
    assert message == "providers[0] (team-a): env.API_TIMEOUT_MS names ${TIMEOUT}, which is not set"


@pytest.mark.parametrize(
    ("value", "environ", "problem"),
    [
        ("${EMPTY}", {"EMPTY": ""}, "api_key must not be empty (from ${EMPTY})"),
        ("", {}, "api_key must not be empty"),
        ("${NL}", {"NL": f"{SECRET}\nmore"}, "api_key must not hold a line break (from ${NL})"),
        ("${NUL}", {"NUL": f"{SECRET}\0"}, "api_key must not hold a NUL character (from ${NUL})"),
        ("${A}${B}", {"A": "x\r", "B": "y"}, "api_key must not hold a line break (after expanding its variables)"),
        ("${lower-case}", {}, "api_key has a ${ that is not ${NAME} (write $${ for a literal ${)"),
        ("${UNCLOSED", {}, "api_key has a ${ that is not ${NAME} (write $${ for a literal ${)"),
    ],
)
def test_bad_expanded_values(tmp_path: Path, value: str, environ: dict[str, str], problem: str) -> None:
    text = f'[[providers]]\nid = "team-a"\napi_key = {json.dumps(value)}\n'
    assert refused(tmp_path, text, environ) == f"providers[0] (team-a): {problem}"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ANTHROPIC_API_KEY", "may not be set here: the provider's api_key sets it"),
        ("ANTHROPIC_AUTH_TOKEN", "may not be set here: the provider's auth_token sets it"),
        ("ANTHROPIC_BASE_URL", "may not be set here: the provider's base_url sets it"),
        ("CLAUDE_CODE_MAX_RETRIES", "may not be set here: the provider's max_retries sets it"),
        ("CLAUDE_SERVER_API_KEY", "may not be set here: CLAUDE_SERVER_* variables are the server's own settings"),
        ("PATH", "may not be set here: the server sets PATH for every CLI it runs"),
        ("HOME", "may not be set here: the server sets HOME for every CLI it runs"),
        ("CLAUDE_CONFIG_DIR", "may not be set here: the server sets CLAUDE_CONFIG_DIR for every CLI it runs"),
        ("lower", "is not a variable name: use A-Z, 0-9 and _, not starting with a digit"),
        ("1ABC", "is not a variable name: use A-Z, 0-9 and _, not starting with a digit"),
    ],
)
def test_forbidden_env_names(tmp_path: Path, name: str, problem: str) -> None:
    message = refused(tmp_path, one(f'[providers.env]\n{name} = "{SECRET}"'))
    assert message == f"providers[0] (team-a): env.{name} {problem}"


def test_an_oauth_token_in_env_is_a_credential(tmp_path: Path) -> None:
    text = '[[providers]]\nid = "sub"\n[providers.env]\nCLAUDE_CODE_OAUTH_TOKEN = "${TEAM_B_TOKEN}"\n'
    (p,) = load(tmp_path, text).providers
    assert p.env["CLAUDE_CODE_OAUTH_TOKEN"] == TOKEN and p.key_hint is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (one("weight = 0"), "providers[0] (team-a): weight must be between 1 and 100, got 0"),
        (one("weight = 101"), "providers[0] (team-a): weight must be between 1 and 100, got 101"),
        (one('weight = "3"'), "providers[0] (team-a): weight must be a whole number, got a string"),
        (one("weight = 1.5"), "providers[0] (team-a): weight must be a whole number, got 1.5"),
        (one("weight = true"), "providers[0] (team-a): weight must be a whole number, got true"),
        (one("max_retries = 11"), "providers[0] (team-a): max_retries must be between 0 and 10, got 11"),
        (one('enabled = "yes"'), "providers[0] (team-a): enabled must be true or false, got a string"),
        (one('name = ""'), "providers[0] (team-a): name must not be empty"),
        (one("env = 3"), "providers[0] (team-a): env must be a table (an object in JSON), got 3"),
        (one("[providers.env]\nN = 3"), "providers[0] (team-a): env.N must be a string, got 3"),
        (
            one('base_url = "ftp://x"'),
            "providers[0] (team-a): base_url must be an http:// or https:// URL with a host name",
        ),
        (
            one('base_url = "https://"'),
            "providers[0] (team-a): base_url must be an http:// or https:// URL with a host name",
        ),
        (
            one('base_url = "https://u:p@host"'),
            "providers[0] (team-a): base_url must not hold a user name or password "
            "(put credentials in api_key or auth_token)",
        ),
        (
            one('base_url = "https://host:99999"'),
            "providers[0] (team-a): base_url must be an http:// or https:// URL with a valid port",
        ),
        (
            one(f'apikey = "{SECRET}"'),
            "providers[0] (team-a): apikey is not a known key (known: id, name, weight, enabled, api_key, auth_token, "
            "base_url, max_retries, env)",
        ),
        (
            '[[providers]]\nid = "Team A"\napi_key = "k"',
            "providers[0]: id must be 1 to 64 lowercase letters, digits, _ or -, starting with a letter or digit, "
            'got "Team A"',
        ),
        ('[[providers]]\nid = "' + "a" * 65 + '"\napi_key = "k"', "providers[0]: id must be 1 to 64"),
        ('[[providers]]\napi_key = "k"', "providers[0]: id is required"),
        ('[[providers]]\nid = "bare"', "providers[0] (bare): needs at least one of api_key, auth_token or base_url"),
        (one("") + 'strategy = "x"', "providers[0] (team-a): strategy is not a known key"),
        ('strategy = "random"\n' + one(""), 'strategy must be weighted or round_robin, got "random"'),
        ("failure_threshold = 0\n" + one(""), "failure_threshold must be between 1 and 100, got 0"),
        ("failure_threshold = 101\n" + one(""), "failure_threshold must be between 1 and 100, got 101"),
        ("recovery_timeout = 0\n" + one(""), "recovery_timeout must be a number of seconds greater than 0, got 0.0"),
        ("recovery_timeout = inf\n" + one(""), "recovery_timeout must be a number of seconds greater than 0, got inf"),
        ("recovery_timeout = nan\n" + one(""), "recovery_timeout must be a number of seconds greater than 0, got nan"),
        ("max_retries = -1\n" + one(""), "max_retries must be between 0 and 10, got -1"),
        ("failover = 1\n" + one(""), "failover must be true or false, got 1"),
        ("unknown = 1\n" + one(""), "unknown is not a known key (known: strategy, failover, failure_threshold, "),
        ("", "providers is required: add at least one [[providers]] table"),
        ("providers = []", "providers must hold at least one provider (a [[providers]] table)"),
        (
            "providers = 3",
            "providers must be a list of tables ([[providers]] in TOML, an array of objects in JSON), got 3",
        ),
    ],
)
def test_refusals_name_the_place(tmp_path: Path, text: str, problem: str) -> None:
    assert refused(tmp_path, text).startswith(problem)


def test_every_problem_is_listed_in_one_message(tmp_path: Path) -> None:
    text = (
        'failure_threshold = 0\n[[providers]]\nid = "team-a"\napi_key = "k"\n[[providers]]\nid = "team-b"\nweight = 0\n'
    )
    assert refused(tmp_path, text) == (
        "failure_threshold must be between 1 and 100, got 0; "
        "providers[1] (team-b): weight must be between 1 and 100, got 0"
    )


def test_duplicate_ids(tmp_path: Path) -> None:
    text = one("") + '[[providers]]\nid = "team-b"\nbase_url = "http://b"\n' + one("")
    assert refused(tmp_path, text) == "providers[2] (team-a): id team-a is already used by providers[0]"


def test_toml_syntax_error_has_its_line(tmp_path: Path) -> None:
    message = refused(tmp_path, '[[providers]]\nid = "a"\nweight = \n')
    assert message.startswith("is not valid TOML: ") and "line 3" in message


def test_json_refusals(tmp_path: Path) -> None:
    message = refused(tmp_path, '{"providers": [\n{"id": "a",\n "api_key": "k" }', name="p.json")
    assert message.startswith("is not valid JSON: ") and "line 3" in message
    assert refused(tmp_path, "[1]", name="p.json") == "must hold a JSON object, not an array"
    assert refused(tmp_path, '{"providers": [{"id": "a", "id": "b"}]}', name="p.json") == (
        'the key "id" appears twice in one JSON object'
    )
    assert refused(tmp_path, '{"recovery_timeout": NaN}', name="p.json") == "NaN is not a JSON number"
    data = {"providers": [{"id": "a", "api_key": None, "auth_token": 5}]}
    assert refused(tmp_path, json.dumps(data), name="p.json") == "providers[0] (a): auth_token must be a string, got 5"


def test_bad_suffix_unreadable_and_not_utf8(tmp_path: Path) -> None:
    assert refused(tmp_path, one(""), name="providers.yaml") == "a providers file must be .toml or .json, not .yaml"
    with pytest.raises(ProviderFileError, match=r"missing\.toml: cannot read the providers file: No such file"):
        load_providers(tmp_path / "missing.toml", {})
    (tmp_path / "latin.toml").write_bytes(b'[[providers]]\nid = "\xe9"\n')
    with pytest.raises(ProviderFileError, match=r"latin\.toml: is not UTF-8 text"):
        load_providers(tmp_path / "latin.toml", {})


def test_directory_named_like_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ProviderFileError, match=r"dir\.toml: cannot read the providers file"):
        load_providers(tmp_path / "dir.toml", {})


# -- secrets ------------------------------------------------------------------------------


def test_provider_env_replaces_the_servers_credentials(tmp_path: Path) -> None:
    a, b, gateway = load(tmp_path, FULL).providers
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/server",
        "ANTHROPIC_API_KEY": "server-key",
        "ANTHROPIC_BASE_URL": "https://server.example.com",
        "ANTHROPIC_MODEL": "server-model",
        "CLAUDE_CODE_OAUTH_TOKEN": "server-oauth",
        "CLAUDE_CODE_MAX_RETRIES": "9",
        "CLAUDE_SERVER_PORT": "8080",
    }
    env_a = provider_env(base, a)
    assert env_a == {
        "PATH": "/usr/bin",
        "HOME": "/home/server",
        "CLAUDE_SERVER_PORT": "8080",
        "ANTHROPIC_API_KEY": SECRET,
        "CLAUDE_CODE_MAX_RETRIES": "3",
        "ANTHROPIC_MODEL": "claude-sonnet-4-5",
        "API_TIMEOUT_MS": "600000",
    }
    # a CLI that ran on team-a hands its environment on: nothing of team-a reaches team-b's
    env_b = provider_env(env_a, b)
    assert SECRET not in env_b.values() and "server-key" not in env_b.values()
    assert "ANTHROPIC_MODEL" not in env_b and "API_TIMEOUT_MS" in env_b  # the one not ANTHROPIC_* stays
    assert env_b["ANTHROPIC_AUTH_TOKEN"] == TOKEN and "ANTHROPIC_API_KEY" not in env_b
    env_gateway = provider_env(base, gateway)
    assert not {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"} & env_gateway.keys()
    assert env_gateway["ANTHROPIC_BASE_URL"] == "http://llm-gateway.internal:8080"
    assert all(name in PROVIDER_VARIABLES or name.startswith("ANTHROPIC_") for name in dict(b.env))


def test_public_and_repr_hold_no_secret(tmp_path: Path) -> None:
    text = FULL.replace('API_TIMEOUT_MS = "600000"', 'API_TIMEOUT_MS = "600000"\nSOME_HEADER = "${TEAM_B_TOKEN}"')
    settings = load(tmp_path, text)
    a = settings.providers[0]
    assert a.public() == {
        "id": "team-a",
        "name": "Team A key",
        "weight": 3,
        "enabled": True,
        "base_url": None,
        "key_hint": "…9f3c",
        "max_retries": 3,
        "env_names": ["ANTHROPIC_MODEL", "API_TIMEOUT_MS", "SOME_HEADER"],
    }
    providers = Providers(settings)
    providers.failed("team-a", "API Error: 401 invalid x-api-key")
    shown = [
        repr(settings),
        repr(a),
        json.dumps([p.public() for p in settings.providers]),
        json.dumps(providers.public()),
    ]
    for text in shown:
        assert SECRET not in text and TOKEN not in text
        assert SECRET[-8:] not in text  # no more than the 4 last characters


# -- choice -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(provider_id: str, weight: int = 1, enabled: bool = True, key: str = "k") -> ProviderConfig:
    env = {"ANTHROPIC_API_KEY": key, "CLAUDE_CODE_MAX_RETRIES": "2"}
    return ProviderConfig(provider_id, provider_id, weight, enabled, env, 2, None, None)


def settings(
    *providers: ProviderConfig, strategy: str = "weighted", failover: bool = True, threshold: int = 3
) -> ProviderSettings:
    return ProviderSettings(strategy, failover, threshold, 60.0, providers)


def make(*providers: ProviderConfig, **kwargs: Any) -> tuple[Providers, Clock]:
    clock = Clock()
    return Providers(settings(*providers, **kwargs), clock=clock, rng=random.Random(7)), clock


def break_(providers: Providers, provider_id: str, times: int = 3) -> None:
    for _ in range(times):
        providers.started(provider_id)
        providers.failed(provider_id, "API Error: 500 internal")


def test_weighted_choice_follows_the_weights() -> None:
    providers, _ = make(config("a", 1), config("b", 3), config("c", 6))
    draws = Counter(providers.choose().id for _ in range(10_000))
    for provider_id, weight in (("a", 1), ("b", 3), ("c", 6)):
        assert abs(draws[provider_id] / 10_000 - weight / 10) <= 0.03, draws


def test_weighted_choice_skips_the_unusable() -> None:
    providers, _ = make(config("a", 1), config("b", 50), config("off", 50, enabled=False))
    break_(providers, "b")
    assert {providers.choose().id for _ in range(200)} == {"a"}


def test_round_robin_in_file_order_skipping_the_unusable() -> None:
    providers, _ = make(config("a"), config("b"), config("c"), config("d", enabled=False), strategy="round_robin")
    assert [providers.choose().id for _ in range(4)] == ["a", "b", "c", "a"]
    break_(providers, "c")
    assert [providers.choose().id for _ in range(4)] == ["b", "a", "b", "a"]
    providers.enable("d")
    assert [providers.choose().id for _ in range(3)] == ["b", "d", "a"]


# -- health -------------------------------------------------------------------------------


def test_the_threshold_makes_it_unhealthy_and_a_success_resets_the_count() -> None:
    providers, clock = make(config("a"), config("b"))
    break_(providers, "a", 2)
    providers.succeeded("a")
    break_(providers, "a", 2)
    assert providers.state("a") == "healthy" and providers.healthy_count() == 2
    break_(providers, "a", 1)
    assert providers.state("a") == "unhealthy" and providers.healthy_count() == 1
    (a,) = [p for p in providers.public() if p["id"] == "a"]
    assert (a["healthy"], a["state"], a["consecutive_failures"], a["failures_total"], a["turns_total"]) == (
        False,
        "unhealthy",
        3,
        5,
        1,
    )
    assert a["last_error"] == "API Error: 500 internal"
    assert a["last_error_at"].endswith("Z") and a["unhealthy_until"] > a["last_error_at"]
    clock.now += 59.9
    assert providers.state("a") == "unhealthy"


def test_recovery_gives_one_trial_and_success_closes_it() -> None:
    providers, clock = make(config("a"), config("b"))
    break_(providers, "a")
    clock.now += 60
    assert providers.state("a") == "half_open" and providers.usable("a")
    providers.started("a")  # the trial
    assert not providers.usable("a")
    assert {providers.choose().id for _ in range(100)} == {"b"}
    assert providers.for_session("a") == (providers.get("b"), True)
    providers.succeeded("a")
    assert providers.state("a") == "healthy" and providers.public()[0]["unhealthy_until"] is None
    break_(providers, "a", 1)  # the trial is over: one failure is one of 3 again
    assert providers.state("a") == "healthy"


def test_a_failed_trial_opens_it_again_for_the_timeout() -> None:
    providers, clock = make(config("a"), config("b"))
    break_(providers, "a")
    clock.now += 60
    providers.started("a")
    providers.failed("a", "API Error: 529 overloaded")  # one failure is enough after a trial
    assert providers.state("a") == "unhealthy"
    clock.now += 59
    assert providers.state("a") == "unhealthy"
    clock.now += 1
    assert providers.state("a") == "half_open" and providers.usable("a")


def test_a_failed_trial_reopens_even_below_a_raised_threshold() -> None:
    providers, clock = make(config("a"))
    break_(providers, "a")
    providers.reload(settings(config("a"), threshold=10))
    clock.now += 60
    providers.started("a")
    providers.failed("a", "API Error: 500 again")  # 4 failures in a row, threshold 10
    assert providers.state("a") == "unhealthy"


def test_finished_frees_the_trial_without_a_verdict() -> None:
    providers, clock = make(config("a"))
    break_(providers, "a")
    clock.now += 60
    providers.started("a")
    with pytest.raises(NoProvider):
        providers.choose()
    providers.finished("a")
    assert providers.state("a") == "half_open" and providers.choose().id == "a"
    providers.finished("a")  # on a healthy provider, or twice: nothing
    assert providers.public()[0]["consecutive_failures"] == 3


def test_no_provider_says_why_and_when() -> None:
    providers, clock = make(config("team-a"), config("team-b", enabled=False))
    break_(providers, "team-a")
    clock.now += 20
    with pytest.raises(NoProvider) as info:
        providers.choose()
    assert str(info.value) == (
        "all 2 providers are unhealthy: team-a (3 failures: API Error: 500 internal), team-b (disabled)"
    )
    assert info.value.retry_after_s == pytest.approx(40)
    clock.now += 39.5
    with pytest.raises(NoProvider) as info:
        providers.choose()
    assert info.value.retry_after_s == 1.0  # at least 1
    clock.now += 1
    providers.started("team-a")
    with pytest.raises(NoProvider) as info:
        providers.choose()
    assert "team-a (a trial turn is running after 3 failures" in str(info.value)
    assert info.value.retry_after_s == 1.0


def test_no_provider_when_all_are_disabled() -> None:
    providers, _ = make(config("a", enabled=False))
    with pytest.raises(NoProvider) as info:
        providers.choose()
    assert str(info.value) == "the only provider is disabled: a" and info.value.retry_after_s == 60


def test_for_session_keeps_the_bound_provider_while_it_works() -> None:
    providers, _ = make(config("a"), config("b", weight=100))
    assert providers.for_session("a") == (providers.get("a"), False)
    chosen, moved = providers.for_session(None)
    assert chosen.id in ("a", "b") and moved is False
    assert providers.for_session("removed-by-a-reload")[1] is True


def test_failover_moves_the_session() -> None:
    providers, _ = make(config("a"), config("b"))
    break_(providers, "a")
    assert providers.for_session("a") == (providers.get("b"), True)
    providers.disable("b")
    providers.reset("a")
    assert providers.for_session("b") == (providers.get("a"), True)


def test_without_failover_the_session_waits_for_its_provider() -> None:
    providers, clock = make(config("a"), config("b"), failover=False)
    break_(providers, "a")
    clock.now += 10
    with pytest.raises(NoProvider) as info:
        providers.for_session("a")
    assert str(info.value) == (
        "the session's provider a is unhealthy (3 failures: API Error: 500 internal), "
        "and failover to another provider is off"
    )
    assert info.value.retry_after_s == pytest.approx(50)
    providers.disable("b")
    with pytest.raises(NoProvider, match="provider b is disabled, and failover"):
        providers.for_session("b")
    providers.enable("b")
    assert providers.for_session("gone") == (providers.get("b"), True)  # its own is gone: moves anyway


def test_enable_disable_reset() -> None:
    providers, _ = make(config("a"), config("b", enabled=False))
    assert providers.enable("b") and providers.disable("a")
    assert [(p["id"], p["enabled"], p["state"]) for p in providers.public()] == [
        ("a", False, "disabled"),
        ("b", True, "healthy"),
    ]
    assert {providers.choose().id for _ in range(50)} == {"b"}
    break_(providers, "b")
    assert providers.reset("b") and providers.state("b") == "healthy"
    public = providers.public()[1]
    assert public["consecutive_failures"] == 0 and public["failures_total"] == 3
    assert not providers.enable("nope") and not providers.disable("nope") and not providers.reset("nope")
    for report in (providers.started, providers.succeeded, providers.finished):
        report("nope")  # a turn on a removed provider: ignored
    providers.failed("nope", "x")


def test_reload_keeps_state_for_the_ids_that_stay() -> None:
    providers, _ = make(config("a"), config("b"), config("c"))
    break_(providers, "a")
    break_(providers, "b")
    providers.disable("b")
    providers.disable("c")
    changes = providers.reload(settings(config("c"), config("b", key="rotated"), config("a"), config("d")))
    assert changes == {"added": ["d"], "removed": [], "changed": ["b"]}
    assert [p["id"] for p in providers.public()] == ["c", "b", "a", "d"]
    assert providers.state("a") == "unhealthy"  # unchanged: kept
    assert providers.state("b") == "unhealthy"  # changed (a new key): health kept, the disable dropped
    assert providers.enabled("b") and not providers.enabled("c")  # c unchanged: still disabled
    assert providers.state("d") == "healthy"
    changes = providers.reload(settings(config("d"), config("a")))
    assert changes == {"added": [], "removed": ["c", "b"], "changed": []}
    assert providers.get("b") is None and providers.for_session("b") == (providers.get("d"), True)
    assert providers.state("a") == "unhealthy" and providers.healthy_count() == 1
