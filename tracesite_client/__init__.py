"""Send an agent's traces to tracesite (``POST /v1/traces``, OTLP), each step live as it starts.

- ``Tracesite``: a small client for code with no instrumentation (no dependency).
- ``tracesite_client.otel.PendingSpanProcessor``: for an app already on OpenTelemetry.
- ``tracesite_client.agents_sdk.TracesiteProcessor``: for the OpenAI Agents SDK.

The last two are imported from their modules, which need their libraries; this package itself
needs only the standard library.
"""

from tracesite_client.client import LlmCall, Span, Step, ToolCall, TraceRun, Tracesite
from tracesite_client.sender import VERSION as __version__

__all__ = ["LlmCall", "Span", "Step", "ToolCall", "TraceRun", "Tracesite", "__version__"]
