"""Prometheus metrics of the live service.

Per process by default. Set PROMETHEUS_MULTIPROC_DIR (an empty directory shared by the server
processes) to aggregate across several daphne processes; see the README.
"""

from prometheus_client import Counter, Gauge, Histogram

EVENT_PERSIST_SECONDS = Histogram(
    "tracesite_event_persist_seconds",
    "Time to store one batch of trace events (group commit).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONNECTIONS = Gauge("tracesite_websocket_connections", "Open WebSocket connections.", multiprocess_mode="livesum")
RUNNING_AGENTS = Gauge("tracesite_running_agents", "Agent runs in progress.", multiprocess_mode="livesum")
MESSAGES_IN = Counter("tracesite_messages_in_total", "Client messages received, by action.", ["action"])
MESSAGES_OUT = Counter("tracesite_messages_out_total", "Messages sent to clients, by event type.", ["event_type"])
REJECTED = Counter("tracesite_messages_rejected_total", "Client messages refused, by reason.", ["reason"])
RUNS = Counter("tracesite_runs_total", "Finished agent runs, by status.", ["status"])
RUN_SECONDS = Histogram(
    "tracesite_run_duration_seconds", "Agent run duration.", buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
)
TOKENS = Counter("tracesite_llm_tokens_total", "LLM tokens, by kind.", ["kind"])
TOOL_CALLS = Counter("tracesite_tool_calls_total", "Tool calls, by tool and status.", ["tool", "status"])
LAYER_ERRORS = Counter(
    "tracesite_channel_layer_errors_total", "Failed channel-layer calls, by operation.", ["operation"]
)
LAYER_UP = Gauge(
    "tracesite_channel_layer_up", "1 while the channel layer answers, 0 during an outage.", multiprocess_mode="livemin"
)
OTLP_SPANS = Counter(
    "tracesite_otlp_spans_total", "Spans received at /v1/traces, by outcome (stored, rejected).", ["outcome"]
)
OTLP_REQUESTS = Counter("tracesite_otlp_requests_total", "Requests to /v1/traces, by HTTP status.", ["status"])
