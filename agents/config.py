"""Builds the agent from settings: the model (OpenAI-compatible or built-in), tools, database."""

from __future__ import annotations

from django.conf import settings

from agents.builtin import BuiltinModel
from agents.chat import ChatModel
from agents.database import SqlDatabase, open_database
from agents.loop import Agent
from agents.openai_model import OpenAIChatModel
from agents.pricing import PriceTable
from agents.tools import QueryTool, SchemaTool

BUILTIN = "builtin"


def agent_database() -> SqlDatabase:
    return open_database(
        settings.DATABASES["agent"], row_limit=settings.AGENT_ROW_LIMIT, timeout=settings.AGENT_QUERY_TIMEOUT
    )


def chat_model(name: str | None = None) -> ChatModel:
    """``name`` overrides OPENAI_MODEL; "builtin", or no OPENAI_API_KEY, gives the offline model."""
    if name == BUILTIN or not settings.OPENAI_API_KEY:
        return BuiltinModel()
    return OpenAIChatModel(
        api_key=settings.OPENAI_API_KEY,
        base_url=settings.OPENAI_BASE_URL or None,
        model=name or settings.OPENAI_MODEL,
        timeout=settings.OPENAI_TIMEOUT,
        max_retries=settings.OPENAI_MAX_RETRIES,
        prices=PriceTable.from_file(settings.AGENT_PRICES_FILE),
    )


def model_label() -> str:
    return settings.OPENAI_MODEL if settings.OPENAI_API_KEY else BUILTIN


def build_agent(model: str | None = None, max_steps: int | None = None, database: SqlDatabase | None = None) -> Agent:
    database = database or agent_database()
    return Agent(
        chat_model(model), [SchemaTool(database), QueryTool(database)], max_steps=max_steps or settings.AGENT_MAX_STEPS
    )
