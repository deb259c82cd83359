"""Builds the agent from settings: the model (OpenAI-compatible or built-in), tools, database."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from django.conf import settings

from agents.builtin import BuiltinModel
from agents.chat import ChatModel
from agents.database import QueryError, SqlDatabase, open_database
from agents.loop import Agent
from agents.openai_model import OpenAIChatModel
from agents.pricing import PriceTable
from agents.tools import QueryTool, SchemaTool

BUILTIN = "builtin"
# Sent as the key to an endpoint configured without one: local servers (vLLM, Ollama) need none,
# but the client sends some key.
PLACEHOLDER_KEY = "no-key"

logger = logging.getLogger(__name__)


class AgentDatabases:
    """The process's agent databases, one per configuration, each with its connection pool and
    schema cache: every run of the process shares them. ``close()`` closes the idle connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._databases: dict[str, SqlDatabase] = {}

    def get(self, database: dict[str, Any], **options: Any) -> SqlDatabase:
        key = json.dumps([database, options], sort_keys=True, default=str)
        with self._lock:
            found = self._databases.get(key)
            if found is None:
                found = self._databases[key] = open_database(database, **options)
            return found

    def close(self) -> None:
        with self._lock:
            databases, self._databases = list(self._databases.values()), {}
        for database in databases:
            database.close()


databases = AgentDatabases()


def agent_database() -> SqlDatabase:
    """The configured agent database (``DATABASES["agent"]``), shared by the process's runs."""
    return databases.get(
        settings.DATABASES["agent"],
        row_limit=settings.AGENT_ROW_LIMIT,
        timeout=settings.AGENT_QUERY_TIMEOUT,
        pool_size=settings.AGENT_POOL_SIZE,
        schema_ttl=settings.AGENT_SCHEMA_TTL,
        cell_chars=settings.AGENT_MAX_CELL_CHARS,
        result_bytes=settings.AGENT_MAX_RESULT_BYTES,
    )


def warn_about_privileges(database: SqlDatabase | None = None) -> list[str]:
    """Log a warning for each thing the agent's database user may do beyond reading its own schema
    (``SqlDatabase.privilege_problems``); the server calls this as it starts. Returns them."""
    database = database or agent_database()
    try:
        problems = database.privilege_problems()
    except QueryError as exc:
        logger.warning("cannot check the agent's database user: %s", exc)
        return []
    for problem in problems:
        logger.warning("%s; give the agent a user with SELECT on its own schema only", problem)
    return problems


def allowed_models() -> list[str]:
    """The models a client may ask a run for (``start_agent``'s ``model``): TRACE_ALLOWED_MODELS,
    by default the configured one; the offline built-in model costs nothing and is always allowed."""
    return [*dict.fromkeys([*(settings.TRACE_ALLOWED_MODELS or [settings.OPENAI_MODEL]), BUILTIN])]


def endpoint_configured() -> bool:
    """OPENAI_API_KEY (for OpenAI or OPENAI_BASE_URL), or OPENAI_BASE_URL alone (a server needing no key)."""
    return bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)


def chat_model(name: str | None = None) -> ChatModel:
    """``name`` overrides OPENAI_MODEL; "builtin", or no endpoint configured, gives the offline model."""
    if name == BUILTIN or not endpoint_configured():
        return BuiltinModel()
    if not settings.OPENAI_API_KEY:
        logger.info(
            "OPENAI_BASE_URL is set without OPENAI_API_KEY: calling %s with a placeholder key",
            settings.OPENAI_BASE_URL,
        )
    return OpenAIChatModel(
        api_key=settings.OPENAI_API_KEY or PLACEHOLDER_KEY,
        base_url=settings.OPENAI_BASE_URL or None,
        model=name or settings.OPENAI_MODEL,
        timeout=settings.OPENAI_TIMEOUT,
        max_retries=settings.OPENAI_MAX_RETRIES,
        prices=PriceTable.from_file(settings.AGENT_PRICES_FILE),
    )


def model_label() -> str:
    return settings.OPENAI_MODEL if endpoint_configured() else BUILTIN


def build_agent(model: str | None = None, max_steps: int | None = None, database: SqlDatabase | None = None) -> Agent:
    database = database or agent_database()
    return Agent(
        chat_model(model),
        [SchemaTool(database), QueryTool(database)],
        max_steps=max_steps or settings.AGENT_MAX_STEPS,
        max_text_chars=settings.AGENT_MAX_TEXT_CHARS,
    )
