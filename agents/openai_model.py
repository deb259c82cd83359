"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` client."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import openai
from openai import AsyncOpenAI

from agents.chat import ENDPOINT_HEALTH, ChatModel, ChatModelError, Completion, TextCallback, ToolCall, Usage
from agents.pricing import PriceTable


class OpenAIChatModel(ChatModel):
    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        prices: PriceTable | None = None,
        stream: bool = True,
    ) -> None:
        self.name = model
        self.stream = stream
        self.prices = prices or PriceTable()
        # Retries with exponential backoff on 408/409/429/5xx and connection errors are the
        # client's own; it honours Retry-After.
        self.client = AsyncOpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=max_retries)
        self.base_url = str(self.client.base_url).rstrip("/")  # named in errors: which endpoint failed

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        on_text: TextCallback | None = None,
    ) -> Completion:
        try:
            completion = await self._complete(messages, tools, on_text)
        except ChatModelError as exc:
            ENDPOINT_HEALTH.failed(exc)
            raise
        ENDPOINT_HEALTH.succeeded()
        return completion

    def parameters(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {"model": self.name, "stream": self.stream}
        if self.stream:
            parameters["stream_options"] = {"include_usage": True}
        return parameters

    async def _complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, on_text: TextCallback | None
    ) -> Completion:
        request: dict[str, Any] = {"model": self.name, "messages": messages}
        if tools:
            request["tools"] = tools
        try:
            if self.stream:
                completion = await self._streamed(request, on_text)
            else:
                completion = self._parse(await self.client.chat.completions.create(**request))
        except openai.APIStatusError as exc:
            raise ChatModelError(self._status_error(exc), type(exc).__name__) from None
        except openai.APITimeoutError:
            raise ChatModelError(
                f"the model endpoint {self.base_url} did not answer within {self.client.timeout} s", "APITimeoutError"
            ) from None
        except openai.APIConnectionError as exc:
            raise ChatModelError(
                f"cannot reach the model endpoint {self.base_url}: {_root_cause(exc)}", "APIConnectionError"
            ) from None
        except openai.OpenAIError as exc:
            raise ChatModelError(str(exc), type(exc).__name__) from None
        completion.cost = self.prices.cost(completion.model or self.name, completion.usage)
        return completion

    def _status_error(self, exc: openai.APIStatusError) -> str:
        message = _error_message(exc.body)
        if exc.status_code == 404 and message is None:
            # Not an OpenAI-style error: the server has no such path, typically a base URL without /v1.
            return (
                f"the model endpoint {self.base_url} answered HTTP 404 for /chat/completions: "
                "check that OPENAI_BASE_URL ends with /v1"
            )
        return f"the model endpoint answered HTTP {exc.status_code}: {message or _body_summary(exc.body)}"

    def _parse(self, response) -> Completion:
        choice = response.choices[0]
        message = choice.message
        calls = [ToolCall(c.id, c.function.name, c.function.arguments or "") for c in (message.tool_calls or [])]
        usage = response.usage
        return Completion(
            content=message.content or "",
            tool_calls=calls,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) if usage else Usage(),
            model=response.model or self.name,
            finish_reason=choice.finish_reason or "",
        )

    async def _streamed(self, request: dict[str, Any], on_text: TextCallback | None) -> Completion:
        stream = await self.client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        content: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        model = self.name
        finish = ""
        try:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        content.append(delta.content)
                        if on_text is not None:
                            await on_text(delta.content)
                    for call in delta.tool_calls or []:
                        entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                        if call.id:
                            entry["id"] = call.id
                        if call.function and call.function.name:
                            entry["name"] += call.function.name
                        if call.function and call.function.arguments:
                            entry["arguments"] += call.function.arguments
                    finish = choice.finish_reason or finish
        finally:
            await stream.close()  # also when cancelled: abandon the HTTP response
        tool_calls = [ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"]) for i, c in sorted(calls.items())]
        return Completion("".join(content), tool_calls, usage, model, finish_reason=finish)


def _error_message(body: object) -> str | None:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), if it is one."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
    return None


def _body_summary(body: object) -> str:
    """Any other body, short: a proxy's HTML error page becomes its text ("502 Bad Gateway nginx")."""
    if isinstance(body, str):
        return " ".join(re.sub(r"<[^>]*>", " ", body).split())[:200] or "(empty body)"
    try:
        return json.dumps(body)[:500]
    except (TypeError, ValueError):
        return str(body)[:500]


def _root_cause(exc: BaseException) -> str:
    """What the network said, from the bottom of the chain: "Connection refused", "Name or service not known"."""
    for _ in range(20):  # a chain is short; the bound only guards against a cycle
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    if isinstance(exc, OSError):
        if exc.errno and exc.errno > 0:
            return os.strerror(exc.errno)
        if exc.strerror:
            return exc.strerror
    return str(exc) or type(exc).__name__
