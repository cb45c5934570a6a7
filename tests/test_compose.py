"""compose.yaml, deploy/nginx.conf and scripts/openwebui_setup.py.

No container runs here: the file is checked against the server's own settings (every
``CLAUDE_SERVER_*`` it sets loads, with the image's environment, into the settings the replicas
need), and the setup script runs as a subprocess against a fake Open WebUI that answers as
Open WebUI 0.12.4's source does (tests/fake_open_webui.py).
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp.test_utils import TestServer

from claude_server.config import OPTIONS, load
from claude_server.origin import OriginPolicy, host_name
from tests.fake_open_webui import FakeOpenWebUI, User

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
NGINX = ROOT / "deploy" / "nginx.conf"
EXAMPLE_ENV = ROOT / "deploy" / "example.env"
SETUP = ROOT / "scripts" / "openwebui_setup.py"
PIPE = ROOT / "open_webui" / "claude_code.py"
REPLICAS = ("claude-server-1", "claude-server-2")

EMAIL = "admin@example.com"
PASSWORD = "pw-0f3b9c2e-not-shown"
API_KEY = "sk-7d1e5a90-not-shown"
SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "CLAUDE_SERVER_API_KEY": API_KEY,
    "POSTGRES_PASSWORD": "pgsecret",
    "WEBUI_ADMIN_EMAIL": EMAIL,
    "WEBUI_ADMIN_PASSWORD": PASSWORD,
}
INTERPOLATION_RE = re.compile(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}")


# ---- compose.yaml --------------------------------------------------------------------------


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}."""

    def value(m: re.Match[str]) -> str:
        name, kind, arg = m.groups()
        if env.get(name):
            return env[name]
        if kind == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if kind == ":-" else ""

    return INTERPOLATION_RE.sub(value, text)


def compose(env: dict[str, str] = SECRETS) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), env))
    return loaded


def image_env() -> dict[str, str]:
    """The CLAUDE_SERVER_* variables the Dockerfile's ENV instructions set."""
    instructions = re.findall(r"^ENV\s+((?:.*\\\n)*.*)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    found = dict(re.findall(r"(CLAUDE_SERVER_\w+)=(\S+)", " ".join(instructions)))
    assert found, "no ENV in the Dockerfile"
    return found


def replica_env(service: dict[str, Any]) -> dict[str, str]:
    return {**image_env(), **{k: str(v) for k, v in service["environment"].items()}}


def test_every_required_variable_is_in_the_example_env_and_a_missing_one_fails() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required == set(SECRETS)
    listed = set(re.findall(r"^#?\s*(\w+)=", EXAMPLE_ENV.read_text(), re.MULTILINE))
    assert required <= listed
    for name in required:
        with pytest.raises(KeyError, match=name):
            compose({k: v for k, v in SECRETS.items() if k != name})


def test_every_claude_server_variable_is_a_real_setting_and_loads() -> None:
    names = {opt.env for opt in OPTIONS}
    services = compose()["services"]
    for replica in REPLICAS:
        env = replica_env(services[replica])
        set_here = {k for k in services[replica]["environment"] if k.startswith("CLAUDE_SERVER_")}
        assert set_here and set_here <= names, set_here - names
        load(environ=env)  # a bad value is a ConfigError


def test_the_replicas_share_database_workspaces_and_configuration_with_their_own_identity() -> None:
    doc = compose()
    services = doc["services"]
    settings = {name: load(environ=replica_env(services[name])) for name in REPLICAS}
    one, two = (settings[name] for name in REPLICAS)
    assert one.db_is_url and one.database == two.database
    db = urlsplit(one.db_path)
    assert db.hostname == "postgres" and db.port == 5432 and db.password == SECRETS["POSTGRES_PASSWORD"]
    pg_env = services["postgres"]["environment"]
    assert (db.username, db.path.lstrip("/")) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"])
    assert one.workspace_root_path == two.workspace_root_path
    assert one.claude_config_dir == two.claude_config_dir
    assert one.lease_seconds == two.lease_seconds
    assert one.api_keys == two.api_keys == (API_KEY,)
    assert services[REPLICAS[0]]["volumes"] == services[REPLICAS[1]]["volumes"]
    for name in REPLICAS:
        s = settings[name]
        assert s.replica_name == name
        url = urlsplit(s.replica_url)
        assert (url.hostname, url.port) == (name, s.port)
        # Both shared directories live on named volumes, declared at the top.
        mounts = {Path(v.split(":")[1]): v.split(":")[0] for v in services[name]["volumes"]}
        for directory in (s.workspace_root_path, s.claude_config_dir):
            volume = next(source for target, source in mounts.items() if directory.is_relative_to(target))
            assert volume in doc["volumes"]
        assert services[name]["build"] == "."
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert one.replica_name != two.replica_name and one.replica_url != two.replica_url


def test_the_names_requests_arrive_with_pass_the_host_check() -> None:
    """The balancer's name (nginx passes Host on) and each replica's advertise URL (its peer
    forwards there): a 421 for any of them would break the deployment."""
    services = compose()["services"]
    setup = " ".join(services["open-webui-setup"]["command"])
    server_url = re.search(r"--server-url[= ](\S+)", setup)
    assert server_url is not None
    balancer = urlsplit(server_url.group(1))
    assert balancer.hostname in services
    for name in REPLICAS:
        settings = load(environ=replica_env(services[name]))
        policy = OriginPolicy.of(settings, own_names=())
        for url in (server_url.group(1), *(load(environ=replica_env(services[r])).replica_url for r in REPLICAS)):
            assert policy.allows_host(host_name(urlsplit(url).netloc)), url
        assert not policy.allows_host("elsewhere.example.com")


def test_postgres_and_open_webui_services() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["volumes"][0].split(":")[0] in compose()["volumes"]
    webui = services["open-webui"]
    assert webui["image"].startswith("ghcr.io/open-webui/open-webui:")
    assert webui["environment"]["WEBUI_ADMIN_EMAIL"] == EMAIL
    setup = services["open-webui-setup"]
    assert setup["environment"]["CLAUDE_SERVER_API_KEY"] == API_KEY
    assert setup["depends_on"]["open-webui"]["condition"] == "service_started"


def test_mounted_files_exist_and_the_setup_command_names_them() -> None:
    services = compose()["services"]
    targets: dict[str, Path] = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (ROOT / source).is_file(), source
                targets[target] = (ROOT / source).resolve()
    command = services["open-webui-setup"]["command"]
    assert command[:2] == ["python", next(t for t, s in targets.items() if s == SETUP)]
    assert f"--pipe={next(t for t, s in targets.items() if s == PIPE)}" in command
    assert targets["/etc/nginx/conf.d/default.conf"] == NGINX


def test_nginx_balances_both_replicas_and_does_not_buffer() -> None:
    conf = re.sub(r"#.*", "", NGINX.read_text())
    directives = {" ".join(d.split()) for d in conf.replace("{", ";").replace("}", ";").split(";")}
    port = load(environ=image_env()).port
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    assert upstream is not None
    assert re.findall(r"server\s+(\S+);", upstream.group(2)) == [f"{r}:{port}" for r in REPLICAS]
    for needed in (
        f"proxy_pass http://{upstream.group(1)}",
        "proxy_http_version 1.1",
        "proxy_buffering off",
        "proxy_request_buffering off",
        "client_max_body_size 0",
        f"listen {port}",
    ):
        assert needed in directives, needed
    timeout = next(d for d in directives if d.startswith("proxy_read_timeout"))
    assert int(timeout.split()[1].rstrip("s")) > load(environ=image_env()).turn_timeout_s
    assert not any(d.startswith(("ip_hash", "hash ", "sticky")) for d in directives)


# ---- scripts/openwebui_setup.py ------------------------------------------------------------


async def run_setup(
    url: str, *extra: str, env: dict[str, str] | None = None, pipe: Path = PIPE
) -> tuple[int, str, str]:
    environment = {"WEBUI_ADMIN_EMAIL": EMAIL, "WEBUI_ADMIN_PASSWORD": PASSWORD, "CLAUDE_SERVER_API_KEY": API_KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SETUP),
        f"--url={url}",
        f"--pipe={pipe}",
        "--server-url=http://balancer:3000",
        "--wait=10",
        *extra,
        env=environment if env is None else env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text and PASSWORD not in text
        assert "Traceback" not in text


def assert_one_line_failure(code: int, out: str, err: str, *words: str) -> None:
    assert code == 1, (out, err)
    assert err.count("\n") == 1 and err.startswith("openwebui_setup: "), err
    for word in words:
        assert word in err, err
    assert_no_secret(out, err)


async def start(fake: FakeOpenWebUI) -> TestServer:
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    return server


def fake_open_webui(**kwargs: Any) -> FakeOpenWebUI:
    return FakeOpenWebUI(users=[User(EMAIL, PASSWORD), User("user@example.com", "pw", role="user")], **kwargs)


def description_of(content: str) -> str:
    found = re.search(r"^description:\s*(.+)$", content, re.MULTILINE)
    assert found is not None
    return found.group(1).strip()


async def test_installs_switches_on_and_configures_the_pipe_then_a_rerun_changes_nothing() -> None:
    fake = fake_open_webui(starting_polls=2)
    server = await start(fake)
    try:
        url = str(server.make_url("")).rstrip("/")
        code, out, err = await run_setup(url)
        assert code == 0, err
        function = fake.functions["claude_code"]
        assert function["content"] == PIPE.read_text()
        assert function["name"] == "Claude Code"
        assert function["meta"]["description"] == description_of(PIPE.read_text())
        assert function["is_active"] is True
        assert fake.valves["claude_code"] == {"SERVER_URL": "http://balancer:3000", "API_KEY": API_KEY}
        assert "created" in out and "switched on" in out
        assert_no_secret(out, err)
        assert fake.count("GET /health") == 3  # waited through two 503s

        # An admin's own valve survives a rerun; nothing else is written again.
        fake.valves["claude_code"] = {**fake.valves["claude_code"], "MODEL": "opus"}
        code, out, err = await run_setup(url)
        assert code == 0, err
        assert out.count("unchanged") == 2 and "already on" in out
        assert fake.functions["claude_code"]["is_active"] is True
        assert fake.count("POST /api/v1/functions/id/{id}/toggle") == 1
        assert fake.count("POST /api/v1/functions/id/{id}/update") == 0
        assert fake.count("POST /api/v1/functions/id/{id}/valves/update") == 1
        assert fake.valves["claude_code"]["MODEL"] == "opus"
        assert_no_secret(out, err)
    finally:
        await server.close()


async def test_a_new_pipe_version_updates_the_content_and_valves_in_place(tmp_path: Path) -> None:
    fake = fake_open_webui()
    server = await start(fake)
    try:
        url = str(server.make_url("")).rstrip("/")
        assert (await run_setup(url))[0] == 0
        fake.functions["claude_code"]["is_active"] = False  # switched off by hand meanwhile
        newer = tmp_path / "claude_code.py"
        newer.write_text(PIPE.read_text() + "\n# a newer version\n")
        code, out, err = await run_setup(url, "--server-url=http://other:3000", pipe=newer)
        assert code == 0, err
        assert "updated" in out and "switched on" in out
        assert fake.functions["claude_code"]["content"] == newer.read_text()
        assert fake.functions["claude_code"]["is_active"] is True
        assert fake.valves["claude_code"] == {"SERVER_URL": "http://other:3000", "API_KEY": API_KEY}
        assert fake.count("POST /api/v1/functions/create") == 1
    finally:
        await server.close()


async def test_a_wrong_password_or_a_user_who_is_not_admin_fails_in_one_line() -> None:
    fake = fake_open_webui()
    server = await start(fake)
    try:
        url = str(server.make_url("")).rstrip("/")
        env = {"WEBUI_ADMIN_EMAIL": EMAIL, "WEBUI_ADMIN_PASSWORD": "wrong", "CLAUDE_SERVER_API_KEY": API_KEY}
        code, out, err = await run_setup(url, env=env)
        assert_one_line_failure(code, out, err, "signing in as admin@example.com failed", "400", "incorrect")
        env = {"WEBUI_ADMIN_EMAIL": "user@example.com", "WEBUI_ADMIN_PASSWORD": "pw", "CLAUDE_SERVER_API_KEY": API_KEY}
        code, out, err = await run_setup(url, env=env)
        assert_one_line_failure(code, out, err, "user@example.com is not an admin")
        assert fake.functions == {}
    finally:
        await server.close()


async def test_content_open_webui_refuses_fails_in_one_line(tmp_path: Path) -> None:
    fake = fake_open_webui()
    server = await start(fake)
    try:
        broken = tmp_path / "broken.py"
        broken.write_text("def pipe(:\n")
        code, out, err = await run_setup(str(server.make_url("")), pipe=broken)
        assert_one_line_failure(code, out, err, "POST /api/v1/functions/create: 400")
        assert fake.functions == {}
    finally:
        await server.close()


async def test_an_unreachable_or_hanging_open_webui_fails_within_the_wait() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = await run_setup(f"http://127.0.0.1:{port}", "--wait=1")
    assert_one_line_failure(code, out, err, f"Open WebUI at http://127.0.0.1:{port} did not answer within 1 s")

    fake = fake_open_webui(health_delay_s=5)
    server = await start(fake)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        code, out, err = await run_setup(str(server.make_url("")).rstrip("/"), "--wait=2")
        assert_one_line_failure(code, out, err, "did not answer within 2 s", "timed out")
        assert loop.time() - started < 10
    finally:
        await server.close()


async def test_a_missing_secret_or_pipe_file_fails_before_any_request(tmp_path: Path) -> None:
    fake = fake_open_webui()
    server = await start(fake)
    try:
        url = str(server.make_url("")).rstrip("/")
        code, out, err = await run_setup(url, env={"WEBUI_ADMIN_EMAIL": EMAIL, "WEBUI_ADMIN_PASSWORD": PASSWORD})
        assert_one_line_failure(code, out, err, "CLAUDE_SERVER_API_KEY (claude-server API key) is not set")
        code, out, err = await run_setup(url, pipe=tmp_path / "missing.py")
        assert_one_line_failure(code, out, err, "cannot read the pipe")
        assert fake.calls == []
    finally:
        await server.close()
