"""The container's pieces, proven without a Docker engine: its start sequence and the Compose file."""

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

from tests.servers import ROOT, database_url, free_port, http_get, wait_for_port

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
    """deploy/start.sh (migrate, then daphne) with DEBUG off on a free loopback port; gives the port."""
    port = free_port()
    env = debug_off(tmp_path, BIND="127.0.0.1", PORT=str(port), **variables)
    server = subprocess.Popen(["deploy/start.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60, server)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def test_the_container_start_sequence_serves_a_healthy_app_with_debug_off(tmp_path):
    """Dockerfile: collectstatic at build, then deploy/start.sh (migrate, daphne), then the HEALTHCHECK."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT, env=debug_off(tmp_path), check=True, capture_output=True,
    )  # fmt: skip
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
    env = {**os.environ, "TRACESITE_ENV_FILE": "", "TRACESITE_DATA_DIR": str(tmp_path), **PRODUCTION}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and "no issues" in result.stdout, result.stdout + result.stderr
