"""Strict parsing of environment variables for settings.py.

Every reader names the variable it reads in the error it raises, so a bad value fails at
start-up with a message that says what to fix.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def load_dotenv(path: str) -> None:
    """Read ``KEY=value`` lines from ``path`` if it exists; real environment variables win."""
    if path and Path(path).is_file():
        from dotenv import load_dotenv as _load

        _load(path, override=False)


def string(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def required(name: str, why: str) -> str:
    value = string(name)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set: {why}")
    return value


def retired(name: str, instead: str) -> None:
    """A variable that is no longer read: set, it stops start-up rather than be ignored."""
    if string(name):
        raise ImproperlyConfigured(f"{name} is no longer read: {instead}")


def boolean(name: str, default: bool) -> bool:
    raw = string(name)
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def integer(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = string(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}")
    return value


def number(name: str, default: float, minimum: float = 0.0) -> float:
    raw = string(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def strings(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; empty items are dropped."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def networks(name: str) -> list[str]:
    """A comma-separated list of addresses or networks (``10.0.0.0/8``, ``::1``)."""
    import ipaddress

    values = strings(name, [])
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {value!r} is not an IP address or network") from None
    return values


def choice(name: str, default: str, choices: set[str]) -> str:
    value = string(name, default).upper()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(sorted(choices))}, not {value!r}")
    return value


def secret_key(name: str, debug: bool, data_dir: Path) -> str:
    """The secret key; in DEBUG a generated one is kept in ``data_dir`` so sessions survive restarts."""
    value = string(name)
    if value:
        return value
    if not debug:
        raise ImproperlyConfigured(
            f"{name} must be set when DJANGO_DEBUG is off "
            '(generate one with: python -c "import secrets; print(secrets.token_urlsafe(50))")'
        )
    path = data_dir / "dev-secret-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


MYSQL_ENGINE = "django.db.backends.mysql"
SQLITE_ENGINE = "django.db.backends.sqlite3"


def sqlite_database(path: Path) -> dict:
    return {
        "ENGINE": SQLITE_ENGINE,
        "NAME": str(path),
        # Persistent connections leak under ASGI (each thread keeps its own): close after each request.
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            # WAL lets readers (history pages) run while the recorder commits a batch;
            # IMMEDIATE takes the write lock up front instead of failing mid-transaction.
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
        "TEST": {"NAME": str(path.with_name("test_" + path.name))},
    }


def mysql_database(
    name: str, user: str, password: str, host: str, port: int, charset: str = "utf8mb4", options: dict | None = None
) -> dict:
    return {
        "ENGINE": MYSQL_ENGINE,
        "NAME": name,
        "USER": user,
        "PASSWORD": password,
        "HOST": host,
        "PORT": str(port),
        "CONN_MAX_AGE": 0,  # as for SQLite
        "OPTIONS": {
            "charset": charset,
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
            **(options or {}),
        },
        "TEST": {"CHARSET": charset, "COLLATION": f"{charset}_unicode_ci" if charset == "utf8mb4" else None},
    }


def database_url(name: str, default_sqlite: Path) -> dict:
    """``sqlite:///abs/path.sqlite3`` or ``mysql://user:pass@host:port/db?charset=utf8mb4``."""
    raw = string(name)
    if not raw:
        return sqlite_database(default_sqlite)
    parts = urlsplit(raw)
    if parts.scheme == "sqlite":
        # sqlite:////abs/path.sqlite3 is absolute, sqlite:///relative.sqlite3 is relative.
        path = unquote(parts.path)[1:]
        if not path:
            raise ImproperlyConfigured(f"{name} must name a file, e.g. sqlite:////var/lib/tracesite/db.sqlite3")
        return sqlite_database(Path(path))
    if parts.scheme in {"mysql", "mariadb"}:
        db = unquote(parts.path.lstrip("/"))
        if not db:
            raise ImproperlyConfigured(
                f"{name} must name a database, e.g. mysql://user:password@127.0.0.1:3306/tracesite"
            )
        try:
            port = parts.port or 3306
        except ValueError:
            raise ImproperlyConfigured(f"{name} has an invalid port") from None
        options = dict(parse_qsl(parts.query))
        charset = options.pop("charset", "utf8mb4")
        return mysql_database(
            db,
            unquote(parts.username or "root"),
            unquote(parts.password or ""),
            parts.hostname or "127.0.0.1",
            port,
            charset,
            options,
        )
    raise ImproperlyConfigured(f"{name} must start with sqlite:// or mysql://, not {parts.scheme or raw!r}://")


MYSQL_VARIABLES = ("MYSQL_HOST", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE", "MYSQL_PORT", "MYSQL_CHARSET")


def agent_database(default_sqlite: Path) -> dict:
    """The database the agent queries, from the original deployment guide's MYSQL_* variables."""
    if not any(string(var) for var in MYSQL_VARIABLES):
        return sqlite_database(default_sqlite)
    return mysql_database(
        required("MYSQL_DATABASE", "it names the database the agent queries (MYSQL_HOST and friends are set)"),
        string("MYSQL_USER", "root"),
        os.environ.get("MYSQL_PASSWORD", ""),
        string("MYSQL_HOST", "127.0.0.1"),
        integer("MYSQL_PORT", 3306, minimum=1, maximum=65535),
        string("MYSQL_CHARSET", "utf8mb4"),
    )


def same_database(a: dict, b: dict) -> bool:
    if a["ENGINE"] != b["ENGINE"]:
        return False
    if a["ENGINE"] == SQLITE_ENGINE:
        return Path(a["NAME"]).resolve() == Path(b["NAME"]).resolve()
    return (a["HOST"], a["PORT"], a["NAME"]) == (b["HOST"], b["PORT"], b["NAME"])


def redis_url(name: str) -> str:
    raw = string(name)
    if raw and urlsplit(raw).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name} must start with redis://, rediss:// or unix://, not {raw!r}")
    return raw


def ensure_separate(default: dict, agent: dict) -> None:
    """The agent must never be able to reach Django's own tables (users, sessions)."""
    if same_database(default, agent):
        raise ImproperlyConfigured(
            "MYSQL_DATABASE names the same database as DATABASE_URL: the agent's database must be "
            "separate from the one holding Django's tables"
        )


def redis_hosts(url: str) -> list[dict]:
    """channels-redis hosts for ``url``.

    redis-py reads with a 5 s socket timeout by default, the same 5 s channels-redis blocks in
    BZPOPMIN; an idle socket then fails with "Timeout reading from ...". Reads get more time.
    """
    return [{"address": url, "socket_timeout": 15, "socket_connect_timeout": 5}]
