"""The container image's install steps, run the same way in a fresh virtual environment: the
wheel built with ``pip wheel``, installed with its dependencies into a new venv, the CLI from
``npm ci --omit=dev`` of the project's package files, and the installed ``claude-server``
started with the Dockerfile's environment (every address, so with a key) for one real turn."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FAKE_API_KEY, ROOT, base_environ, free_port
from tests.fake_anthropic import FakeAnthropic

pytestmark = pytest.mark.e2e

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
KEY = "sk-operator-install-test"


def run(argv: list[str], cwd: Path, timeout: float = 600) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def dockerfile_env() -> dict[str, str]:
    """The ENV instruction of the Dockerfile's last stage."""
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE, re.MULTILINE)
    assert block is not None
    pairs = re.findall(r"(\w+)=(\S+)", block.group(1))
    return dict(pairs)


def get(url: str, key: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_images_install_steps_give_a_server_that_runs_a_turn(tmp_path: Path, fake_api: FakeAnthropic) -> None:
    # The wheel, as the image's "wheel" stage builds it.
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        ROOT,
    )
    (wheel,) = (tmp_path / "dist").glob("claude_server-*.whl")
    # Installed with its dependencies into an empty venv: nothing from the repository or its venv.
    run([sys.executable, "-m", "venv", str(tmp_path / "venv")], tmp_path)
    run([str(tmp_path / "venv/bin/pip"), "install", "--quiet", f"{wheel}[postgres]"], tmp_path)
    run([str(tmp_path / "venv/bin/python"), "-c", "import asyncpg"], tmp_path)
    # The CLI, as the image's "cli" stage installs it, and the path the image links it from.
    cli_dir = tmp_path / "cli"
    cli_dir.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / name, cli_dir / name)
    run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"], cli_dir)
    linked = re.search(r"ln -s /opt/claude-code/(\S+) /usr/local/bin/claude", DOCKERFILE)
    assert linked is not None
    cli = cli_dir / "node_modules" / linked.group(1)
    assert cli.is_file(), f"the Dockerfile links {linked.group(1)}, which npm ci --omit=dev does not install"
    assert not (cli_dir / "node_modules/eventsource").exists()  # development packages stay out

    env = dockerfile_env()
    assert env["CLAUDE_SERVER_HOST"] == "0.0.0.0"
    port = free_port()
    (tmp_path / "home").mkdir()
    environ = {
        **base_environ(tmp_path / "home"),
        **env,
        "CLAUDE_SERVER_DATA_DIR": str(tmp_path / "data"),
        "CLAUDE_SERVER_PORT": str(port),
        "CLAUDE_SERVER_CLAUDE_BIN": str(cli),
        "CLAUDE_SERVER_API_KEYS": KEY,
        "ANTHROPIC_BASE_URL": fake_api.base_url,
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "IS_SANDBOX": "1",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(tmp_path / "venv/bin/claude-server")], env=environ, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, health = get(f"{base}/health")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200, (tmp_path / "server.log").read_text()
        assert health["status"] == "ok", health
        assert get(f"{base}/api/sessions")[0] == 401  # every address, so keys are required
        body = json.dumps({"prompt": "hello from the image", "stream": False}).encode()
        request = urllib.request.Request(
            f"{base}/api/claude",
            data=body,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
        assert answer["result"].endswith("hello from the image"), answer
        assert (tmp_path / "data" / "sessions.db").is_file()
        assert any((tmp_path / "data" / "workspace").iterdir())
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
