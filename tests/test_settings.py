"""Settings come from the environment, with embedded defaults; bad values fail loudly."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tracesite import env

SETTINGS = Path(__file__).resolve().parent.parent / "tracesite" / "settings.py"
VARIABLES = [
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "REDIS_URL",
    "LOG_LEVEL",
    "LOG_FILE",
    "TRACE_ALLOWED_ORIGINS",
    "TRACE_REQUIRE_AUTH",
    "TRACE_RATE_LIMIT",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "AGENT_MAX_STEPS",
    "CHANNEL_CAPACITY",
    "TRACE_TRUSTED_PROXIES",
    "DJANGO_SECURE_PROXY_SSL_HEADER",
    "TRACE_LOGIN_FAILURE_LIMIT",
    "TRACE_LOGIN_COOLOFF_SECONDS",
    *env.MYSQL_VARIABLES,
]


@pytest.fixture
def load(monkeypatch, tmp_path):
    """Evaluate settings.py afresh with exactly the given variables set."""

    def _load(**variables: str) -> dict:
        for name in VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("TRACESITE_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("TRACESITE_ENV_FILE", "")
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(str(SETTINGS))

    return _load


def test_it_uses_embedded_defaults(load, tmp_path):
    s = load()
    assert s["DEBUG"] is True
    assert s["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert s["DATABASES"]["default"]["NAME"] == str(tmp_path / "data" / "tracesite.sqlite3")
    assert s["DATABASES"]["agent"]["NAME"] == str(tmp_path / "data" / "demo.sqlite3")
    assert "journal_mode=WAL" in s["DATABASES"]["default"]["OPTIONS"]["init_command"]
    assert s["CHANNEL_LAYERS"]["default"]["BACKEND"] == "traces.live.layer.BestEffortLayer"
    assert s["CHANNEL_LAYERS"]["default"]["CONFIG"]["backend"] == "traces.compat.InMemoryChannelLayer"
    assert s["OPENAI_API_KEY"] == ""
    assert s["TRACE_REQUIRE_AUTH"] is False
    assert s["DATABASES"]["default"]["CONN_MAX_AGE"] == 0 and s["DATABASES"]["agent"]["CONN_MAX_AGE"] == 0


def test_it_generates_a_dev_secret_once(load):
    first = load()["SECRET_KEY"]
    assert len(first) >= 50
    assert load()["SECRET_KEY"] == first


def test_it_reads_every_variable(load):
    s = load(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="s3cret-" * 8,
        DJANGO_ALLOWED_HOSTS="traces.example.com, .example.org",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://traces.example.com",
        DATABASE_URL="mysql://app:p%40ss@db.internal:3307/history",
        REDIS_URL="redis://cache:6379/2",
        LOG_LEVEL="debug",
        TRACE_ALLOWED_ORIGINS="http://localhost:3000",
        MYSQL_HOST="analytics",
        MYSQL_USER="reader",
        MYSQL_PASSWORD="pw",
        MYSQL_DATABASE="shop",
        MYSQL_PORT="3308",
        MYSQL_CHARSET="utf8mb4",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL="http://llm:8000/v1",
        OPENAI_MODEL="qwen2.5",
        TRACE_RATE_LIMIT="20",
    )
    assert s["DEBUG"] is False
    assert s["SECRET_KEY"] == "s3cret-" * 8
    assert s["ALLOWED_HOSTS"] == ["traces.example.com", ".example.org"]
    assert s["CSRF_TRUSTED_ORIGINS"] == ["https://traces.example.com"]
    default = s["DATABASES"]["default"]
    assert (
        default["ENGINE"],
        default["NAME"],
        default["USER"],
        default["PASSWORD"],
        default["HOST"],
        default["PORT"],
    ) == ("django.db.backends.mysql", "history", "app", "p@ss", "db.internal", "3307")
    assert default["OPTIONS"]["charset"] == "utf8mb4"
    agent = s["DATABASES"]["agent"]
    assert (agent["NAME"], agent["USER"], agent["HOST"], agent["PORT"]) == ("shop", "reader", "analytics", "3308")
    layer = s["CHANNEL_LAYERS"]["default"]
    assert (layer["BACKEND"], layer["CONFIG"]["backend"]) == (
        "traces.live.layer.BestEffortLayer",
        "traces.compat.RedisChannelLayer",
    )
    assert layer["CONFIG"]["config"]["hosts"][0]["address"] == "redis://cache:6379/2"
    assert s["LOG_LEVEL"] == "DEBUG"
    assert s["TRACE_ALLOWED_ORIGINS"] == ["http://localhost:3000"]
    assert s["TRACE_REQUIRE_AUTH"] is True  # follows DEBUG off
    assert (s["OPENAI_API_KEY"], s["OPENAI_BASE_URL"], s["OPENAI_MODEL"]) == (
        "sk-test",
        "http://llm:8000/v1",
        "qwen2.5",
    )
    assert s["TRACE_RATE_LIMIT"] == 20
    assert s["STORAGES"]["staticfiles"]["BACKEND"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"


def test_in_production_no_proxy_is_trusted_unless_configured(load):
    production = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "k" * 50, "DJANGO_ALLOWED_HOSTS": "x.example.com"}
    s = load(**production)
    # Django's own header check would believe X-Forwarded-Proto from any client (traces/proxies.py reads it).
    assert s["TRACE_TRUSTED_PROXIES"] == [] and "SECURE_PROXY_SSL_HEADER" not in s
    s = load(**production, TRACE_TRUSTED_PROXIES="10.0.0.5, 2001:db8::/64")
    assert s["TRACE_TRUSTED_PROXIES"] == ["10.0.0.5", "2001:db8::/64"]


def test_the_login_throttle_reads_its_limit_and_cool_off(load):
    from datetime import timedelta

    s = load()
    assert (s["AXES_FAILURE_LIMIT"], s["AXES_COOLOFF_TIME"]) == (10, timedelta(minutes=15))
    s = load(TRACE_LOGIN_FAILURE_LIMIT="5", TRACE_LOGIN_COOLOFF_SECONDS="3600")
    assert (s["AXES_FAILURE_LIMIT"], s["AXES_COOLOFF_TIME"]) == (5, timedelta(hours=1))
    assert s["AXES_LOCKOUT_PARAMETERS"] == [["username", "ip_address"]]
    assert s["AXES_CLIENT_IP_CALLABLE"] == "traces.proxies.client_address"


def test_it_reads_a_sqlite_database_url(load, tmp_path):
    s = load(DATABASE_URL=f"sqlite:///{tmp_path}/history.sqlite3")
    assert s["DATABASES"]["default"]["NAME"] == f"{tmp_path}/history.sqlite3"


def test_it_reads_the_dotenv_file(load, tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("OPENAI_MODEL=from-dotenv\nLOG_LEVEL=WARNING\n")
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    monkeypatch.setenv("LOG_LEVEL", "ERROR")  # the real environment wins over .env
    monkeypatch.setattr(env, "string", env.string)
    for name in VARIABLES:
        if name != "LOG_LEVEL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACESITE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRACESITE_ENV_FILE", str(dotenv))
    s = runpy.run_path(str(SETTINGS))
    assert s["OPENAI_MODEL"] == "from-dotenv"
    assert s["LOG_LEVEL"] == "ERROR"


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be true or false"),
        ({"DJANGO_DEBUG": "false", "DJANGO_ALLOWED_HOSTS": "x.example.com"}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "k" * 50}, "DJANGO_ALLOWED_HOSTS must be set"),
        ({"DATABASE_URL": "postgres://localhost/db"}, "DATABASE_URL must start with sqlite:// or mysql://"),
        ({"DATABASE_URL": "mysql://root@localhost"}, "DATABASE_URL must name a database"),
        ({"DATABASE_URL": "mysql://root@localhost:port/db"}, "DATABASE_URL has an invalid port"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL must start with redis://"),
        ({"MYSQL_HOST": "db"}, "MYSQL_DATABASE must be set"),
        ({"MYSQL_DATABASE": "shop", "MYSQL_PORT": "abc"}, "MYSQL_PORT must be an integer"),
        ({"MYSQL_DATABASE": "shop", "MYSQL_PORT": "70000"}, "MYSQL_PORT must be at most 65535"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"TRACE_RATE_LIMIT": "0"}, "TRACE_RATE_LIMIT must be at least 1"),
        ({"AGENT_MAX_STEPS": "ten"}, "AGENT_MAX_STEPS must be an integer"),
        ({"TRACE_TRUSTED_PROXIES": "10.0.0.5, proxy.internal"}, "TRACE_TRUSTED_PROXIES: 'proxy.internal' is not"),
        ({"DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}, "TRACE_TRUSTED_PROXIES"),
        ({"TRACE_LOGIN_FAILURE_LIMIT": "0"}, "TRACE_LOGIN_FAILURE_LIMIT must be at least 1"),
        ({"TRACE_LOGIN_COOLOFF_SECONDS": "soon"}, "TRACE_LOGIN_COOLOFF_SECONDS must be a number"),
        (
            {"DATABASE_URL": "mysql://root@127.0.0.1:3306/shop", "MYSQL_HOST": "127.0.0.1", "MYSQL_DATABASE": "shop"},
            "the agent's database must be separate",
        ),
    ],
)
def test_it_rejects_bad_values_naming_the_variable(load, variables, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        load(**variables)


def test_it_refuses_to_start_without_a_secret_in_production(tmp_path):
    """The real start-up path: manage.py exits with the message naming the variable."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=SETTINGS.parent.parent,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "x",
            "TRACESITE_DATA_DIR": str(tmp_path),
            "TRACESITE_ENV_FILE": "",
        },
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_it_logs_to_a_file_when_asked(load, tmp_path):
    s = load(LOG_FILE=str(tmp_path / "websocket_trace.log"), LOG_LEVEL="DEBUG")
    assert s["LOGGING"]["handlers"]["file"]["filename"] == str(tmp_path / "websocket_trace.log")
    assert s["LOGGING"]["root"] == {"handlers": ["console", "file"], "level": "DEBUG"}
    assert s["LOGGING"]["loggers"]["daphne"]["level"] == "WARNING"  # not one line per message
    assert "file" not in load()["LOGGING"]["handlers"]
