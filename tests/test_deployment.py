"""The container's pieces, proven without a Docker engine: its start sequence and the Compose file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.servers import ROOT, database_url, free_port, http_get, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)
SETTINGS = (ROOT / "tracesite" / "settings.py").read_text() + (ROOT / "tracesite" / "env.py").read_text()


def test_the_container_start_sequence_serves_a_healthy_app_with_debug_off(tmp_path):
    """Dockerfile: collectstatic at build, then deploy/start.sh (migrate, daphne), then the HEALTHCHECK."""
    port = free_port()
    env = {
        **os.environ,
        "TRACESITE_ENV_FILE": "",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url(),
        "STATIC_ROOT": str(tmp_path / "static"),
        "BIND": "127.0.0.1",
        "PORT": str(port),
        "TRACE_METRICS_TOKEN": "monitoring-secret",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    server = subprocess.Popen(["deploy/start.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60, server)
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
    finally:
        server.terminate()
        server.wait(10)


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
}


def test_the_documented_production_settings_pass_check_deploy(tmp_path):
    readme = (ROOT / "README.md").read_text()
    for name, value in PRODUCTION.items():
        if name != "DJANGO_SECRET_KEY":
            assert f"{name}={value}" in readme, name
    env = {**os.environ, "TRACESITE_ENV_FILE": "", "TRACESITE_DATA_DIR": str(tmp_path), **PRODUCTION}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and "no issues" in result.stdout, result.stdout + result.stderr


def test_hsts_and_the_https_redirect_follow_the_proxy_header(settings, client):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
    secure = client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200 and secure["Strict-Transport-Security"].startswith("max-age=31536000")
    plain = client.get("/accounts/login/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    assert "Strict-Transport-Security" not in plain
    assert client.get("/health").status_code != 301  # load balancers probe the plain port
