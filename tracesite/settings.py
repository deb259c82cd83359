"""Settings, read from the environment (and a ``.env`` file in the project root).

With nothing set, everything is embedded: SQLite files under ``var/``, the in-memory channel
layer, DEBUG on and the offline built-in model. ``.env.example`` documents every variable.
"""

import os
from datetime import timedelta
from pathlib import Path

from tracesite import env

BASE_DIR = Path(__file__).resolve().parent.parent
env.load_dotenv(env.string("TRACESITE_ENV_FILE", str(BASE_DIR / ".env")))

DEBUG = env.boolean("DJANGO_DEBUG", default=True)
DATA_DIR = Path(env.string("TRACESITE_DATA_DIR") or BASE_DIR / "var")
SECRET_KEY = env.secret_key("DJANGO_SECRET_KEY", debug=DEBUG, data_dir=DATA_DIR)
ALLOWED_HOSTS = env.strings("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not ALLOWED_HOSTS:
    raise env.ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG is off (e.g. traces.example.com)"
    )
CSRF_TRUSTED_ORIGINS = env.strings("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Extra WebSocket/CORS origins, e.g. a separately served front end on http://localhost:3000.
TRACE_ALLOWED_ORIGINS = env.strings("TRACE_ALLOWED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # first: makes runserver the ASGI server
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",  # the login throttle
    "channels",
    "csp",
    "evals",
    "traces",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "traces.pages.staticfiles.StaticFilesMiddleware",  # WhiteNoise, on the event loop under ASGI
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "traces.security.LoginRequired",  # with TRACE_REQUIRE_AUTH on: every page needs a login
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: a locked-out login's answer is the lockout page
]

ROOT_URLCONF = "tracesite.urls"
# A login refused because the browser dropped the Secure CSRF cookie over plain HTTP says why.
CSRF_FAILURE_VIEW = "traces.pages.csrf.csrf_failure"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "traces:live"
LOGOUT_REDIRECT_URL = "login"
ASGI_APPLICATION = "tracesite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "evals.context_processors.evaluation",  # "Add to dataset" and accuracy on the traces' pages
            ],
        },
    },
]

# Django's own tables and the trace history. The agent's data lives in "agent", never here.
DATABASES = {
    "default": env.database_url("DATABASE_URL", default_sqlite=DATA_DIR / "tracesite.sqlite3"),
    "agent": env.agent_database(default_sqlite=DATA_DIR / "demo.sqlite3"),
}
env.ensure_separate(DATABASES["default"], DATABASES["agent"])
DATABASE_ROUTERS = ["tracesite.routers.AgentDatabaseRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.redis_url("REDIS_URL")
# Messages a channel of the layer may hold. The layer carries one message per stored batch to the
# other server processes and cancel requests (traces/live/bus.py); a process that misses some
# catches up from the database by seq.
CHANNEL_CAPACITY = env.integer("CHANNEL_CAPACITY", 1000, minimum=10)
# Every layer call goes through traces.live.layer.BestEffortLayer: a layer that is down never fails a
# run or a socket (see its docstring).
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "traces.live.layer.BestEffortLayer",
            "CONFIG": {
                "backend": "traces.compat.RedisChannelLayer",
                "config": {
                    "hosts": env.redis_hosts(REDIS_URL),
                    "capacity": CHANNEL_CAPACITY,
                    # channels-redis queues the messages of *all* of a process's sockets in one Redis
                    # list and applies the capacity to that list: a process's share must be far larger
                    # than one socket's, or a burst to many sockets at once is dropped.
                    "channel_capacity": {"specific.*": max(100_000, CHANNEL_CAPACITY)},
                    "expiry": 60,
                },
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "traces.live.layer.BestEffortLayer",
            "CONFIG": {
                "backend": "traces.compat.InMemoryChannelLayer",
                "config": {"capacity": CHANNEL_CAPACITY, "expiry": 60},
            },
        }
    }

# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# The login throttle: after this many failed logins for one username from one client address, that
# username is refused from that address, right password or not, until the cool-off has passed
# since the last failure. Counted per pair, so neither a user elsewhere nor others behind the same
# address are locked out by somebody guessing one user's password.
AXES_FAILURE_LIMIT = env.integer("TRACE_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env.number("TRACE_LOGIN_COOLOFF_SECONDS", 900.0, minimum=1.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The client's address behind trusted proxies only (traces/proxies.py), never a header's say-so.
AXES_CLIENT_IP_CALLABLE = "traces.proxies.client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Its log lines name the client's address; not the username, which may be a mistyped password.
AXES_SENSITIVE_PARAMETERS = ["username"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.string("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.string("STATIC_ROOT") or BASE_DIR / "staticfiles")
# In DEBUG, serve straight from the source folders (no collectstatic needed).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.boolean("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # HTTPS only: redirect http:// (not /health and /metrics, which load balancers and scrapers call
    # on the plain port), and HSTS, sent on https responses only (SecurityMiddleware).
    SECURE_SSL_REDIRECT = env.boolean("DJANGO_SSL_REDIRECT", default=False)
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.integer("DJANGO_HSTS_SECONDS", 0, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.boolean("DJANGO_HSTS_PRELOAD", default=False)

# Reverse proxies (addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto say who the
# client is and whether it asked for https (traces/proxies.py); from any other peer, and with none
# set, those headers are ignored. Django's SECURE_PROXY_SSL_HEADER stays unset: it would believe
# any client.
TRACE_TRUSTED_PROXIES = env.networks("TRACE_TRUSTED_PROXIES")
env.retired("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto counts from the proxies in TRACE_TRUSTED_PROXIES")

# Content-Security-Policy (django-csp): scripts, styles, images and connections from this origin
# only, no inline script anywhere; inline style attributes are allowed (the waterfall's bar
# positions), which cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# The agent.
OPENAI_API_KEY = env.string("OPENAI_API_KEY")
OPENAI_BASE_URL = env.string("OPENAI_BASE_URL")
OPENAI_MODEL = env.string("OPENAI_MODEL", "gpt-4o-mini")
# The models a client's start_agent may name (the endpoint is paid for): by default OPENAI_MODEL alone.
TRACE_ALLOWED_MODELS = env.strings("TRACE_ALLOWED_MODELS", [])
OPENAI_TIMEOUT = env.number("OPENAI_TIMEOUT", 60.0, minimum=1.0)
OPENAI_MAX_RETRIES = env.integer("OPENAI_MAX_RETRIES", 3, minimum=0, maximum=10)
# JSON file of extra prices, {"model": {"prompt": usd_per_1m, "completion": usd_per_1m}}.
AGENT_PRICES_FILE = env.string("AGENT_PRICES_FILE")
AGENT_MAX_STEPS = env.integer("AGENT_MAX_STEPS", 10, minimum=1, maximum=50)
AGENT_ROW_LIMIT = env.integer("AGENT_ROW_LIMIT", 200, minimum=1, maximum=10000)
AGENT_QUERY_TIMEOUT = env.number("AGENT_QUERY_TIMEOUT", 5.0, minimum=0.1)
# Read-only connections to the agent's database kept open per process, and how long its schema
# (tables, columns, estimates, samples) is cached before it is read again.
AGENT_POOL_SIZE = env.integer("AGENT_POOL_SIZE", 4, minimum=1, maximum=100)
AGENT_SCHEMA_TTL = env.number("AGENT_SCHEMA_TTL", 300.0, minimum=0.0)
# What one event may carry: a query result's values and rows, the model's text, the whole event.
# Beyond each, the rest is cut with a visible marker and the model is told its result was cut.
AGENT_MAX_CELL_CHARS = env.integer("AGENT_MAX_CELL_CHARS", 2000, minimum=16)
AGENT_MAX_RESULT_BYTES = env.integer("AGENT_MAX_RESULT_BYTES", 256 * 1024, minimum=1024)
AGENT_MAX_TEXT_CHARS = env.integer("AGENT_MAX_TEXT_CHARS", 100_000, minimum=100)

# The trace store.
# One stored event at most (its envelope); beyond it its longest values are cut, with markers.
TRACE_MAX_EVENT_BYTES = env.integer("TRACE_MAX_EVENT_BYTES", 1024 * 1024, minimum=4096)
# A server stores its batches of events in a process of its own (traces/store/sinks.py): the rows'
# Python work runs beside the sockets' instead of taking turns with it. Off: on a thread.
TRACE_WRITER_PROCESS = env.boolean("TRACE_WRITER_PROCESS", default=True)
# Seconds the writer process has to come up when a server starts; if it does not, the server stops
# with an error saying so.
TRACE_WRITER_START_SECONDS = env.number("TRACE_WRITER_START_SECONDS", 60.0, minimum=0.01)
# Allocations between collections of the youngest generation, in a server and its writer process
# (traces/gctune.py); 0 keeps Python's default (700).
TRACE_GC_THRESHOLD = env.integer("TRACE_GC_THRESHOLD", 50_000, minimum=0)
# A running trace whose process has not written a heartbeat for this many seconds was interrupted
# (the process was killed or crashed): it is closed as an error (traces/store/liveness.py). Each
# server process looks for such traces when it starts and every TRACE_REAP_SECONDS.
TRACE_RUNNER_TIMEOUT = env.number("TRACE_RUNNER_TIMEOUT", 60.0, minimum=1.0)
TRACE_REAP_SECONDS = env.number("TRACE_REAP_SECONDS", 30.0, minimum=0.1)

# The live service.
TRACE_REQUIRE_AUTH = env.boolean("TRACE_REQUIRE_AUTH", default=not DEBUG)
# With auth on: traces that have no owner (runagent without --user) are seen by staff only, or, with
# this on, by every logged-in user.
TRACE_SHARE_UNOWNED = env.boolean("TRACE_SHARE_UNOWNED", default=False)
TRACE_RATE_LIMIT = env.integer("TRACE_RATE_LIMIT", 10, minimum=1)
# Open sockets one user may hold on one server process; the one past it is closed with 4408.
TRACE_MAX_SOCKETS_PER_USER = env.integer("TRACE_MAX_SOCKETS_PER_USER", 50, minimum=1)
# Seconds between checks that open sockets' API tokens and logins are still valid (revoked tokens,
# ended sessions and deactivated users close their sockets with 4001; actions are checked at once).
TRACE_AUTH_RECHECK_SECONDS = env.number("TRACE_AUTH_RECHECK_SECONDS", 30.0, minimum=0.1)
# A client that stops reading: above this many unsent bytes its socket waits for it to catch up,
# and is dropped if it has not within TRACE_SLOW_CLIENT_SECONDS (it resumes by seq on return).
TRACE_SEND_BUFFER_BYTES = env.integer("TRACE_SEND_BUFFER_BYTES", 1024 * 1024, minimum=16 * 1024)
TRACE_SLOW_CLIENT_SECONDS = env.number("TRACE_SLOW_CLIENT_SECONDS", 10.0, minimum=0.1)
# Agent runs at once per server process: they mostly wait on the model, so many fit on a core.
# Beyond it a run waits its turn (its trace says it is queued, and where); beyond the queue too,
# start_agent is refused with server_busy and a retry hint.
TRACE_MAX_CONCURRENT_RUNS = env.integer("TRACE_MAX_CONCURRENT_RUNS", max(32, 16 * (os.cpu_count() or 1)), minimum=1)
TRACE_MAX_QUEUED_RUNS = env.integer("TRACE_MAX_QUEUED_RUNS", 500, minimum=0)
# Seconds between a server process re-joining the processes' channel-layer group (traces/live/bus.py;
# after a Redis restart, or the membership's expiry).
TRACE_GROUP_REFRESH = env.number("TRACE_GROUP_REFRESH", 30.0, minimum=0.1)

# OTLP/HTTP ingestion (POST /v1/traces, traces.ingest.ingestor): a request's body at most (before and after
# decompression), spans in one request, one attribute value (longer ones are cut with a marker).
TRACE_OTLP_MAX_BODY_BYTES = env.integer("TRACE_OTLP_MAX_BODY_BYTES", 16 * 1024 * 1024, minimum=1024)
TRACE_OTLP_MAX_SPANS = env.integer("TRACE_OTLP_MAX_SPANS", 10_000, minimum=1)
TRACE_OTLP_MAX_ATTRIBUTE_BYTES = env.integer("TRACE_OTLP_MAX_ATTRIBUTE_BYTES", 64 * 1024, minimum=256)
# An ingested trace completes this long after its root span ended with nothing under it open (late
# exports of its children still land in it); a span open with no news this long is abandoned.
TRACE_OTLP_COMPLETE_AFTER_SECONDS = env.number("TRACE_OTLP_COMPLETE_AFTER_SECONDS", 2.0, minimum=0.0)
TRACE_OTLP_ABANDON_SECONDS = env.number("TRACE_OTLP_ABANDON_SECONDS", 600.0, minimum=1.0)
# A server decodes bodies larger than this in a process of its own (traces/ingest/decoding.py), so
# that a large export does not stall the other sockets; compressed bodies count 8 times their size.
TRACE_OTLP_DECODE_INLINE_BYTES = env.integer("TRACE_OTLP_DECODE_INLINE_BYTES", 256 * 1024, minimum=0)

# Who may read /metrics and the details of /health (anybody gets /health's status): DEBUG, staff,
# a bearer token (this one, or a staff user's API token), or these addresses (traces.pages.health).
TRACE_METRICS_TOKEN = env.string("TRACE_METRICS_TOKEN")
TRACE_MONITORING_IPS = env.networks("TRACE_MONITORING_IPS")

LOG_LEVEL = env.choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
LOG_FILE = env.string("LOG_FILE")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        **({"file": {"class": "logging.FileHandler", "filename": LOG_FILE, "formatter": "plain"}} if LOG_FILE else {}),
    },
    "root": {"handlers": ["console", "file"] if LOG_FILE else ["console"], "level": LOG_LEVEL},
    "loggers": {
        # daphne logs every connection at INFO; our own consumer logs one line per connection.
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        # django-axes announces its configuration at every start, management commands included.
        "axes.apps": {"level": "WARNING"},
    },
}
