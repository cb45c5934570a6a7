"""Settings: every setting has a flag and a variable, the README documents each, and bad
values are refused with the name of what was wrong."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from claude_server import config
from claude_server.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_has_one_option_with_the_same_default() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(config.Settings) if f.name not in ("environ", "pinned")}
    options = {o.name: o.default for o in config.OPTIONS}
    assert fields == options


def test_every_variable_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [o.env for o in config.OPTIONS if o.env not in text]
    assert missing == []


def test_flag_beats_variable_beats_default() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    env = {"CLAUDE_SERVER_PORT": "4000", "CLAUDE_SERVER_HOST": "0.0.0.0"}
    settings = config.load(parser.parse_args(["--port", "5000"]), env)
    assert settings.port == 5000 and settings.host == "0.0.0.0" and settings.db_path == ""


def test_values_are_parsed() -> None:
    settings = config.load(
        None,
        {
            "CLAUDE_SERVER_MAX_BODY_SIZE": "2M",
            "CLAUDE_SERVER_CORS_ORIGINS": "http://a, http://b",
            "CLAUDE_SERVER_ALLOW_SKIP_PERMISSIONS": "false",
            "CLAUDE_SERVER_PERMISSION_MODES": "plan,default",
            "CLAUDE_SERVER_SESSION_RETENTION_DAYS": "0",
            "CLAUDE_SERVER_INSECURE_NO_AUTH": "yes",
            "CLAUDE_SERVER_LOG_LEVEL": "debug",
        },
    )
    assert settings.max_body_bytes == 2 * 1024 * 1024
    assert settings.cors_origins == ("http://a", "http://b")
    assert settings.allow_skip_permissions is False
    assert settings.permission_modes == ("plan", "default")
    assert settings.session_retention_days == 0
    assert settings.insecure_no_auth is True
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CLAUDE_SERVER_PORT", "abc", "CLAUDE_SERVER_PORT must be a number between 1 and 65535, got 'abc'"),
        ("CLAUDE_SERVER_PORT", "1e3", "CLAUDE_SERVER_PORT must be a number between 1 and 65535, got '1e3'"),
        ("CLAUDE_SERVER_MAX_QUEUE", "-1", "CLAUDE_SERVER_MAX_QUEUE must be a whole number, 0 or more, got '-1'"),
        (
            "CLAUDE_SERVER_MAX_CONCURRENT",
            "1.5",
            "CLAUDE_SERVER_MAX_CONCURRENT must be a whole number greater than 0, got '1.5'",
        ),
        (
            "CLAUDE_SERVER_TURN_TIMEOUT",
            "nan",
            "CLAUDE_SERVER_TURN_TIMEOUT must be a number of seconds greater than 0, got 'nan'",
        ),
        (
            "CLAUDE_SERVER_MAX_BODY_SIZE",
            "1e999",
            "CLAUDE_SERVER_MAX_BODY_SIZE must be a size in bytes greater than 0, such as 16M (K, M and G suffixes "
            "allowed), got '1e999'",
        ),
        (
            "CLAUDE_SERVER_HEALTH_AUTH",
            "maybe",
            "CLAUDE_SERVER_HEALTH_AUTH must be true or false (or 1/0, yes/no, on/off), got 'maybe'",
        ),
        ("CLAUDE_SERVER_LOG_FORMAT", "xml", "CLAUDE_SERVER_LOG_FORMAT must be text or json, got 'xml'"),
        (
            "CLAUDE_SERVER_LOG_LEVEL",
            "loud",
            "CLAUDE_SERVER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'loud'",
        ),
    ],
)
def test_bad_values_say_what_the_setting_must_be(name: str, value: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(None, {name: value})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLAUDE_SERVER_PORT", "http"),
        ("CLAUDE_SERVER_PORT", "70000"),
        ("CLAUDE_SERVER_TURN_TIMEOUT", "0"),
        ("CLAUDE_SERVER_MAX_BODY_SIZE", "lots"),
        ("CLAUDE_SERVER_MAX_CONCURRENT", "0"),
        ("CLAUDE_SERVER_PERMISSION_MODES", "yolo"),
        ("CLAUDE_SERVER_ALLOW_SKIP_PERMISSIONS", "maybe"),
        ("CLAUDE_SERVER_LOG_LEVEL", "loud"),
        ("CLAUDE_SERVER_LOG_FORMAT", "xml"),
        ("CLAUDE_SERVER_SESSION_RETENTION_DAYS", "-1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load(None, {name: value})


def test_the_insecure_switch_takes_no_value() -> None:
    args = build_parser().parse_args(["--insecure-no-auth"])
    assert config.load(args, {}).insecure_no_auth is True


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--health-auth"], True),
        (["--health-auth=false"], False),
        (["--health-auth=1"], True),
        (["--health-auth=OFF"], False),
        (["--health-auth", "no"], False),  # the form --health-auth took before it was a switch
        (["--health-auth", "yes", "serve"], True),
        (["--health-auth", "serve"], True),
        (["--health-auth", "purge", "--dry-run"], True),
        (["serve", "--health-auth"], True),
        (["serve", "--health-auth=off"], False),
    ],
)
def test_a_boolean_flag_alone_means_true_and_takes_a_value_too(argv: list[str], expected: bool) -> None:
    args = build_parser().parse_args(argv)
    assert config.load(args, {}).health_auth is expected
    assert args.command == next((a for a in argv if a in ("serve", "purge")), None)


def test_every_boolean_takes_both_forms() -> None:
    booleans = [o for o in config.OPTIONS if o.boolean]
    assert {o.name for o in booleans} >= {"insecure_no_auth", "health_auth", "allow_skip_permissions"}
    for opt in booleans:
        for argv, expected in (([opt.flag], True), ([f"{opt.flag}=false"], False), ([opt.flag, "on"], True)):
            assert getattr(config.load(build_parser().parse_args([*argv, "serve"]), {}), opt.name) is expected, argv


def test_a_bare_boolean_before_a_subcommand_leaves_the_subcommand_alone() -> None:
    args = build_parser().parse_args(["--insecure-no-auth", "keys", "revoke", "alice"])
    assert args.command == "keys" and args.key == "alice"
    assert config.load(args, {}).insecure_no_auth is True


def test_nothing_after_a_double_dash_is_rewritten() -> None:
    assert config.attach_boolean_values(["--health-auth", "--", "--health-auth"]) == [
        "--health-auth=true",
        "--",
        "--health-auth",
    ]


def test_data_goes_to_the_xdg_data_directory_by_default() -> None:
    settings = config.load(None, {"HOME": "/home/ann"})
    assert settings.data_dir_path == Path("/home/ann/.local/share/claude-server")
    assert settings.db_file == Path("/home/ann/.local/share/claude-server/sessions.db")
    assert settings.workspace_root_path == Path("/home/ann/.local/share/claude-server/workspace")
    xdg = config.load(None, {"HOME": "/home/ann", "XDG_DATA_HOME": "/data"})
    assert xdg.db_file == Path("/data/claude-server/sessions.db")
    # The XDG spec: a relative XDG_DATA_HOME is invalid and ignored.
    relative = config.load(None, {"HOME": "/home/ann", "XDG_DATA_HOME": "data"})
    assert relative.data_dir_path == settings.data_dir_path


def test_the_data_directory_setting_moves_both_and_explicit_paths_win(tmp_path: Path) -> None:
    env = {"HOME": "/home/ann", "CLAUDE_SERVER_DATA_DIR": str(tmp_path)}
    settings = config.load(None, env)
    assert settings.db_file == tmp_path / "sessions.db" and settings.workspace_root_path == tmp_path / "workspace"
    args = build_parser().parse_args(["--data-dir=~/srv", "--db", str(tmp_path / "x.db")])
    settings = config.load(args, env)
    assert settings.db_file == tmp_path / "x.db"
    assert settings.workspace_root_path == Path("/home/ann/srv/workspace")
    args = build_parser().parse_args(["--workspace-root", str(tmp_path / "ws")])
    settings = config.load(args, env)
    assert settings.workspace_root_path == tmp_path / "ws" and settings.db_file == tmp_path / "sessions.db"


def test_the_key_commands_find_the_database_in_the_data_directory(tmp_path: Path) -> None:
    args = build_parser().parse_args(["keys", "list", "--data-dir", str(tmp_path)])
    assert config.load(args, {}).db_file == tmp_path / "sessions.db"


def test_subcommand_flags_do_not_reset_main_ones() -> None:
    args = build_parser().parse_args(["--db", "/tmp/x.db", "purge", "--dry-run"])
    assert config.load(args, {}).db_path == "/tmp/x.db"
