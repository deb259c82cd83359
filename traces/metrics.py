"""Prometheus metrics of the live path (per process; see the README on multiprocess mode)."""

from prometheus_client import Histogram

EVENT_PERSIST_SECONDS = Histogram(
    "tracesite_event_persist_seconds",
    "Time to store one batch of trace events (group commit).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
