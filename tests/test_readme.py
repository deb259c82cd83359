"""Every command in the README runs: here, in another test, or in CI — so the README cannot rot."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from tests.servers import ROOT, database_url, free_port, http_get, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]

# Commands exercised elsewhere, and where.
ELSEWHERE = {
    "make test": ".ci/run runs it, twice",
    "make lint": ".ci/run runs it",
    "make test-runtime": ".ci/run runs it",
    ".ci/run": "CI runs it",
    "DATABASE_URL=mysql://": ".ci/run's second run is this command",
    "python3 -m venv .venv": "make run does the same (test_make_run_serves_the_live_page_and_the_admin)",
    "pip install -r requirements.txt": "make run does the same",
    "OPENAI_API_KEY=": "make run with a model endpoint; the OpenAI path is tests/test_openai_model.py and tests/test_daphne.py",
    "daphne -b": "tests/test_daphne.py runs daphne processes sharing Redis",
    "cp .env.example .env": "tests/test_deployment.py checks every variable in .env.example",
    "docker compose": "no Docker engine here: tests/test_deployment.py validates the Compose file and runs the image's start sequence",
    "pip install -r requirements-mysql.txt": "make test installs it",
    "BIND=127.0.0.1 PORT=8000 deploy/start.sh": "tests/test_deployment.py runs deploy/start.sh with BIND and PORT",
    "curl -X POST http://localhost:8000/api/traces/": "tests/test_scores.py posts the same score to an ingested trace",
    "curl http://localhost:8000/api/traces/": "tests/test_scores.py lists an ingested trace's scores",
}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


MANAGE = [c for c in readme_commands() if re.match(r"^(\.venv/bin/)?python manage\.py (?!runserver)", c)]


def test_every_readme_command_is_run_somewhere():
    here = set(MANAGE) | {"make run", "python manage.py runserver"}
    for command in readme_commands():
        assert command in here or any(command.startswith(prefix) for prefix in ELSEWHERE), (
            f"README command not tested: {command}"
        )


def embedded_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not re.match(r"^(DATABASE_URL|REDIS_URL|MYSQL_\w+|OPENAI_\w+)$", k)}
    return {**env, "TRACESITE_ENV_FILE": "", "TRACESITE_DATA_DIR": str(tmp_path / "var")}


def serve(command: list[str], env: dict, port: int, paths: list[str]) -> None:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_port(port, 240, process)
        for path in paths:
            status, body = http_get(f"http://127.0.0.1:{port}{path}")
            assert status == 200, (path, status, body[:300])
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


def test_make_run_serves_the_live_page_and_the_admin(tmp_path):
    """The first quick-start command, on the embedded defaults."""
    port = free_port()
    serve(
        ["make", "run", f"PORT={port}", f"VENV={os.path.dirname(os.path.dirname(sys.executable))}"],
        embedded_env(tmp_path),
        port,
        ["/", "/admin/login/", "/static/tracesite.css", "/health"],
    )
    assert (tmp_path / "var" / "demo.sqlite3").exists()  # seeddemo ran


def test_manage_py_runserver_serves_the_app(tmp_path):
    port = free_port()
    env = embedded_env(tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    serve([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env, port, ["/", "/health"])


@pytest.mark.parametrize("command", MANAGE)
def test_the_readme_manage_py_commands_run(command, tmp_path):
    env = {
        **os.environ,
        "TRACESITE_ENV_FILE": "",
        "DATABASE_URL": database_url(),
        "OPENAI_API_KEY": "",
        "STATIC_ROOT": str(tmp_path / "static"),  # collectstatic
    }
    if "<trace-id>" in command:
        run = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "runagent", "how many users?", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        command = command.replace("<trace-id>", run.stdout.splitlines()[0].split('"trace_id":"')[1].split('"')[0])
    if "importtraces" in command:
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "exporttraces", "-o", "errors.jsonl"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
        )
    if "evaluate demo-shop" in command:
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "seeddemo"], cwd=tmp_path, env=env, check=True)
    if "dataset " in command:
        # The README's example items, as a file, in the dataset the command names.
        example = re.search(r"```json\n(\{\"question\".*?)```", (ROOT / "README.md").read_text(), re.S)
        assert example is not None
        (tmp_path / "questions.jsonl").write_text(example.group(1))
        if "dataset import" not in command:
            subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "dataset", "import", "mine", "questions.jsonl"],
                cwd=tmp_path, env=env, check=True, capture_output=True,
            )  # fmt: skip
    args = shlex.split(command)
    args = [sys.executable, str(ROOT / "manage.py"), *args[2:]]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
