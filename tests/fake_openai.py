"""A local HTTP server that speaks the OpenAI chat-completions wire format.

Tests script its responses (JSON or SSE streaming, tool calls, usage, HTTP errors, slow
streams) and drive it through the real ``openai`` client, which never knows the difference.
Like vLLM or Ollama behind a web server, it serves the API under ``/v1`` only: any other path
gets the server's HTML 404 page (what a base URL without ``/v1`` meets).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: a completion (streamed if the request asks), or an HTTP error."""

    content: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, raw JSON arguments)
    status: int = 200
    usage: tuple[int, int] = (0, 0)
    chunk_delay: float = 0.0  # seconds between streamed chunks
    model: str = "gpt-4o-mini-2024-07-18"


NOT_FOUND_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    "<body><center><h1>404 Not Found</h1></center><hr><center>nginx</center></body></html>\n"
)


def tool(name: str, arguments: Any) -> tuple[str, str]:
    return name, arguments if isinstance(arguments, str) else json.dumps(arguments)


class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None  # used when the script runs out
        self.requests: list[dict[str, Any]] = []
        self.misses: list[str] = []  # paths asked for outside /v1
        self.disconnects = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not self.path.startswith("/v1/"):
                    server.misses.append(self.path)
                    return self._html(404, NOT_FOUND_PAGE)
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                reply = server.replies.popleft() if server.replies else server.default
                if reply is None:
                    return self._json(500, {"error": {"message": "script exhausted", "type": "server_error"}})
                if reply.status != 200:
                    return self._json(
                        reply.status,
                        {
                            "error": {
                                "message": f"scripted {reply.status}",
                                "type": "rate_limit" if reply.status == 429 else "server_error",
                            }
                        },
                        {"retry-after-ms": "10"},
                    )
                if body.get("stream"):
                    return self._stream(reply, body)
                return self._json(200, completion(reply))

            def _html(self, status: int, page: str):
                data = page.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, reply: Reply, body: dict):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for chunk in stream_chunks(
                        reply, include_usage=bool((body.get("stream_options") or {}).get("include_usage"))
                    ):
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        if reply.chunk_delay:
                            time.sleep(reply.chunk_delay)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnects += 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)


def _calls(reply: Reply) -> list[dict]:
    return [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(reply.tool_calls)
    ]


def completion(reply: Reply) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = _calls(reply)
    prompt, output = reply.usage
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output},
    }


def stream_chunks(reply: Reply, include_usage: bool) -> list[dict]:
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()), "model": reply.model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    words = reply.content.split(" ")
    for i, word in enumerate(words):
        text = word if i == len(words) - 1 else word + " "
        if text:
            chunks.append({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
    for i, call in enumerate(_calls(reply)):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": arguments[:half]},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": i, "function": {"arguments": arguments[half:]}}]},
                        "finish_reason": None,
                    }
                ],
            }
        )
    chunks.append(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}]}
    )
    if include_usage:
        prompt, output = reply.usage
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output},
            }
        )
    return chunks
