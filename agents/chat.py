"""The chat-model interface the agent loop talks to: OpenAI-style messages and tool calls."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents.events import TokenUsage

TextCallback = Callable[[str], Awaitable[None]]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def as_dict(self) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=self.total_tokens
        )


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, as the model wrote it

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Completion:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    cost: float = 0.0
    finish_reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class ChatModelError(Exception):
    """The model call failed for good (after the client's retries)."""

    def __init__(self, message: str, error_type: str = "ChatModelError"):
        super().__init__(message)
        self.error_type = error_type


class EndpointHealth:
    """How the process's calls to the model endpoint went lately, for a health check.

    A failure is remembered until a later call succeeds: an endpoint that is unreachable, refuses
    the key or keeps answering 429/5xx makes every run fail, though the service itself is up.
    """

    def __init__(self) -> None:
        self.last_ok: float | None = None  # time.time() of the last call that answered
        self.last_error: str = ""
        self.last_error_at: float | None = None

    def succeeded(self) -> None:
        self.last_ok = time.time()
        self.last_error, self.last_error_at = "", None

    def failed(self, error: ChatModelError) -> None:
        self.last_error, self.last_error_at = f"{error.error_type}: {error}", time.time()


#: The model endpoint of this process (one configuration per process).
ENDPOINT_HEALTH = EndpointHealth()


class ChatModel(ABC):
    #: The model name recorded on traces and shown in the UI.
    name: str = ""
    #: True for the offline built-in model.
    offline: bool = False

    @abstractmethod
    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        on_text: TextCallback | None = None,
    ) -> Completion:
        """One chat-completions call. ``on_text`` receives the answer's text as it streams."""

    def parameters(self) -> dict[str, Any]:
        """The request's parameters besides messages and tools, recorded on each model call."""
        return {"model": self.name}
