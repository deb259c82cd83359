"""Deploying: the container's pieces, proven without a Docker engine (its start sequence and the
Compose file), and the path without Docker (collected static files, checked before serving)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from django.core.checks import run_checks
from django.core.management import call_command

from tests.servers import ROOT, daphne_server, database_url, free_port, http_get, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)
SETTINGS = (ROOT / "tracesite" / "settings.py").read_text() + (ROOT / "tracesite" / "env.py").read_text()


def debug_off(tmp_path, **variables: str) -> dict:
    """The environment of a server with DEBUG off, on this test's database."""
    return {
        **os.environ,
        "TRACESITE_ENV_FILE": "",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url(),
        "STATIC_ROOT": str(tmp_path / "static"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **variables,
    }


@contextlib.contextmanager
def start_sh(tmp_path, **variables: str):
    """The container's start: its static files collected (as the Dockerfile does at build), then
    deploy/start.sh (migrate, then daphne) with DEBUG off on a free loopback port; gives the port."""
    port = free_port()
    env = debug_off(tmp_path, BIND="127.0.0.1", PORT=str(port), **variables)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    server = subprocess.Popen(["deploy/start.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60, server)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def test_the_container_start_sequence_serves_a_healthy_app_with_debug_off(tmp_path):
    """Dockerfile: collectstatic at build, then deploy/start.sh (migrate, daphne), then the HEALTHCHECK."""
    with start_sh(tmp_path, TRACE_METRICS_TOKEN="monitoring-secret") as port:
        status, body = http_get(f"http://127.0.0.1:{port}/health")
        assert status == 200 and json.loads(body) == {"status": "healthy"}  # the details are not public
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/health", headers={"Authorization": "Bearer monitoring-secret"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["checks"]["database"] == "ok"
        status, body = http_get(f"http://127.0.0.1:{port}/static/tracesite.css")
        assert status == 200 and b"--fg" in body  # whitenoise serves the collected, hashed files
        status, _ = http_get(f"http://127.0.0.1:{port}/traces/")
        assert status == 200


def get(port: int, path: str, **headers: str) -> int:
    """The status of a GET, redirects not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": "127.0.0.1", **headers})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


FORGED = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https"}


def test_behind_the_start_sequence_forwarded_headers_count_from_trusted_proxies_only(tmp_path):
    monitoring = {"TRACE_MONITORING_IPS": "10.0.0.0/8", "DJANGO_SSL_REDIRECT": "true"}
    with start_sh(tmp_path, **monitoring) as port:
        # A client on the loopback, not a trusted proxy, claiming an address in TRACE_MONITORING_IPS.
        assert get(port, "/metrics", **FORGED) == 401  # as for any outsider
        assert b"checks" not in http_get(f"http://127.0.0.1:{port}/health")[1]
        assert get(port, "/traces/", **FORGED) == 301  # nor is its https believed: sent to https://
    with start_sh(tmp_path, **monitoring, TRACE_TRUSTED_PROXIES="127.0.0.1") as port:
        # The same request from a trusted proxy: its client is in the network, and asked for https.
        assert get(port, "/metrics", **FORGED) == 200
        assert get(port, "/traces/", **FORGED) == 302  # to the login page, not to https://
        assert get(port, "/metrics", **{**FORGED, "X-Forwarded-For": "203.0.113.9"}) == 401


def test_the_dockerfile_runs_that_sequence_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["deploy/start.sh"]' in dockerfile and "USER tracesite" in dockerfile
    assert "collectstatic --noinput" in dockerfile and "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert "SECRET_KEY=" not in dockerfile.replace("DJANGO_SECRET_KEY=collectstatic-only", "")


def test_the_compose_file_is_complete():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "seed", "mysql", "redis"} <= services.keys()
    for name in ("web", "mysql", "redis"):
        assert "healthcheck" in services[name], name
    assert services["web"]["depends_on"]["mysql"]["condition"] == "service_healthy"
    assert services["web"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["web"]["depends_on"]["seed"]["condition"] == "service_completed_successfully"
    assert "mysql-data" in compose["volumes"]
    init = (ROOT / "deploy" / "mysql-init" / "01-databases.sh").read_text()
    assert "GRANT SELECT, SHOW VIEW ON shop.* TO 'agent_reader'" in init
    assert services["web"]["environment"]["MYSQL_USER"] == "agent_reader"


def test_every_variable_compose_passes_is_one_the_settings_read():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    read = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', SETTINGS)) | {
        "MYSQL_HOST",
        "MYSQL_USER",
        "MYSQL_PASSWORD",
        "MYSQL_DATABASE",
        "MYSQL_PORT",
        "MYSQL_CHARSET",
    }
    for name in ("web", "seed"):
        passed = set(compose["services"][name]["environment"])
        assert passed <= read, passed - read


def test_every_variable_in_env_example_is_read_by_the_settings():
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^# ([A-Z][A-Z0-9_]+)=", example, re.M))
    compose_only = {"MYSQL_ROOT_PASSWORD", "MYSQL_TRACESITE_PASSWORD", "MYSQL_AGENT_PASSWORD", "WEB_PORT"}
    read = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', SETTINGS))
    assert documented - compose_only <= read, (documented - compose_only) - read


PRODUCTION = {  # the README's production settings, behind a proxy that terminates TLS
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "k" * 20 + "Zq8#v!2pL@x9Rt$3mN&w" + "a" * 20,
    "DJANGO_ALLOWED_HOSTS": "traces.example.com",
    "DJANGO_SSL_REDIRECT": "true",
    "DJANGO_HSTS_SECONDS": "31536000",
    "DJANGO_HSTS_PRELOAD": "true",
    "TRACE_TRUSTED_PROXIES": "10.0.0.5",
}


def test_the_documented_production_settings_pass_check_deploy(tmp_path):
    readme = (ROOT / "README.md").read_text()
    for name, value in PRODUCTION.items():
        if name != "DJANGO_SECRET_KEY":
            assert f"{name}={value}" in readme, name
    env = {
        **os.environ,
        "TRACESITE_ENV_FILE": "",
        "TRACESITE_DATA_DIR": str(tmp_path),
        "STATIC_ROOT": str(tmp_path / "static"),
        **PRODUCTION,
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and "no issues" in result.stdout, result.stdout + result.stderr


def production(static_root: Path) -> dict[str, str]:
    """A server's environment with DEBUG off, its static files (to be) collected in ``static_root``."""
    return {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STATIC_ROOT": str(static_root),
    }


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_server_with_debug_off_and_no_collected_static_files_refuses_to_start_naming_collectstatic(tmp_path, server):
    """Its pages could not render (every one would be a 500 while /health said healthy)."""
    port = free_port()
    command = {
        "daphne": ["daphne", "-b", "127.0.0.1", "-p", str(port)],
        "uvicorn": ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"],
    }[server]
    env = {**os.environ, "TRACESITE_ENV_FILE": "", "DATABASE_URL": database_url(), **production(tmp_path / "static")}
    finished = subprocess.run(
        [sys.executable, "-m", *command, "tracesite.asgi:application"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.returncode == 3, finished.stdout + finished.stderr
    assert "tracesite cannot start" in finished.stderr, finished.stderr
    assert "python manage.py collectstatic" in finished.stderr and str(tmp_path / "static") in finished.stderr


@pytest.mark.usefixtures("configured_agent_db")
def test_once_the_static_files_are_collected_the_same_server_serves_its_pages(tmp_path):
    env = {**os.environ, "TRACESITE_ENV_FILE": "", **production(tmp_path / "static")}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    with daphne_server(**production(tmp_path / "static")) as server:
        status, body = http_get(f"http://{server.host}/accounts/login/")
        assert status == 200 and b"/static/tracesite." in body  # the hashed name, from the manifest
        status, body = http_get(f"http://{server.host}/health")
        assert status == 200 and json.loads(body) == {"status": "healthy"}


def uncollected(warnings: list) -> list[str]:
    return [warning.msg for warning in warnings if warning.id == "tracesite.W001"]


@pytest.fixture
def manifest_storage(settings, tmp_path):
    """The static files storage of DEBUG off, collecting into an empty folder."""
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    return settings


def test_check_deploy_warns_until_the_static_files_are_collected(manifest_storage):
    (missing,) = uncollected(run_checks(include_deployment_checks=True))
    assert "python manage.py collectstatic" in missing and str(manifest_storage.STATIC_ROOT) in missing
    assert not uncollected(run_checks())  # a warning of check --deploy only: migrate and collectstatic still run
    call_command("collectstatic", interactive=False, verbosity=0)
    assert not uncollected(run_checks(include_deployment_checks=True))


def test_check_deploy_warns_when_a_static_file_was_added_after_collecting(manifest_storage, tmp_path):
    """An upgrade that brings a new file: the pages that use it would fail until collectstatic runs again."""
    call_command("collectstatic", interactive=False, verbosity=0)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "new-widget.js").write_text("export {};")
    manifest_storage.STATICFILES_DIRS = [*manifest_storage.STATICFILES_DIRS, tmp_path / "more"]
    (stale,) = uncollected(run_checks(include_deployment_checks=True))
    assert "new-widget.js" in stale and "python manage.py collectstatic" in stale


def readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_block(section: str, language: str) -> str:
    """The section's first code block in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)[0]


def grants(sql: str) -> set[str]:
    """The statements that make the databases, the users and their grants, whatever the users' host
    and password."""
    found = set()
    for statement in re.findall(r"^\s*((?:CREATE|GRANT)[^;]*);", sql, re.M):
        statement = " ".join(statement.split()).replace("IF NOT EXISTS ", "")
        statement = re.sub(r"'@'[^']*'", "'@<host>", statement)
        found.add(re.sub(r"IDENTIFIED BY '[^']*'", "IDENTIFIED BY <password>", statement))
    return found


def test_the_readme_creates_the_databases_and_users_compose_does():
    """Both databases utf8mb4, the agent's user read-only: the same statements as deploy/mysql-init/."""
    readme = grants(readme_block(readme_section("Deploying without Docker"), "sql"))
    compose = grants((ROOT / "deploy" / "mysql-init" / "01-databases.sh").read_text())
    assert compose and readme == compose, readme ^ compose


def test_the_readme_environment_without_docker_passes_check_deploy_once_collected(tmp_path):
    section = readme_section("Deploying without Docker")
    lines = [line.split(" #")[0].strip() for line in readme_block(section, "ini").splitlines()]
    documented = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    assert {"DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DATABASE_URL", "MYSQL_DATABASE", "STATIC_ROOT"} <= documented.keys()
    assert documented["DJANGO_DEBUG"] == "false" and documented["DATABASE_URL"].startswith("mysql://")
    assert "python manage.py collectstatic --noinput" in section
    env = {
        **{k: v for k, v in os.environ.items() if not re.match(r"^(DATABASE_URL|REDIS_URL|MYSQL_\w+|OPENAI_\w+)$", k)},
        "TRACESITE_ENV_FILE": "",
        "TRACESITE_DATA_DIR": str(tmp_path),
        **documented,
        "DJANGO_SECRET_KEY": PRODUCTION["DJANGO_SECRET_KEY"],  # the step prints one
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    manage = [sys.executable, "manage.py"]
    before = subprocess.run([*manage, "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert before.returncode == 0 and "tracesite.W001" in before.stderr, before.stdout + before.stderr
    subprocess.run([*manage, "collectstatic", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
    after = subprocess.run([*manage, "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert after.returncode == 0, after.stdout + after.stderr
    assert set(re.findall(r"\((\w+\.[WE]\d+)\)", after.stderr)) <= {"security.W021"}, after.stderr  # as the README says
