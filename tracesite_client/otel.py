"""Live steps for an app on OpenTelemetry: a span processor that announces each span as it starts.

An OTLP exporter sends a span when it ends, so a viewer sees a step only once it is over. Add
``PendingSpanProcessor`` beside the app's own ``BatchSpanProcessor`` and each span is also sent
when it starts, as a *pending copy* (Logfire's convention, ``tracesite_client.otlp``): tracesite
shows the step running at once and fills it in when the real span arrives.

    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, headers=auth)))
    provider.add_span_processor(PendingSpanProcessor(OTLPSpanExporter(endpoint=url, headers=auth)))

The copies go through the SDK's own ``BatchSpanProcessor`` machinery (a bounded queue, one
worker thread, drops instead of blocking), with a short delay so they leave at once. Give this
processor an exporter of its own: each processor shuts its exporter down.
"""

from __future__ import annotations

import logging

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from tracesite_client.otlp import PENDING, PENDING_PARENT, PENDING_TYPE

logger = logging.getLogger("tracesite_client")


def pending_copy(span: ReadableSpan, span_id: int) -> ReadableSpan | None:
    """The pending copy of a span that has just started: a child of it with its own ``span_id``,
    the span's attributes, the span's parent in ``logfire.pending_parent_id``, ending as it starts."""
    context = span.get_span_context()
    if context is None or not context.is_valid:
        return None
    parent = span.parent
    attributes = {
        **(span.attributes or {}),
        PENDING_TYPE: PENDING,
        PENDING_PARENT: trace_api.format_span_id(parent.span_id) if parent is not None else "",
    }
    return ReadableSpan(
        name=span.name,
        context=trace_api.SpanContext(
            context.trace_id,
            span_id,
            is_remote=False,
            trace_flags=context.trace_flags,
            trace_state=context.trace_state,
        ),
        parent=context,
        resource=span.resource,
        attributes=attributes,
        kind=span.kind,
        start_time=span.start_time,
        end_time=span.start_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class PendingSpanProcessor(SpanProcessor):
    """Exports a pending copy of every span when it starts, through ``exporter``, in the
    background. The spans themselves are the app's ``BatchSpanProcessor``'s to export."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        schedule_delay_millis: float = 100,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
    ) -> None:
        self._batch = BatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
        )
        self._ids = RandomIdGenerator()
        self._failed = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            copy = pending_copy(span, self._ids.generate_span_id())
            if copy is not None:
                self._batch.on_end(copy)
        except Exception as exc:  # noqa: BLE001 - the app's span goes on whatever happens here
            if not self._failed:
                self._failed = True
                logger.warning("tracesite: no pending copy of span %r: %r", span.name, exc)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        self._batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)
