"""OpenTelemetry for the API and the worker: export when asked, near-zero cost when not.

With the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set,
`setup_tracing` installs the SDK's tracer provider with a batching OTLP/HTTP exporter and the
psycopg and Redis instrumentations (the API adds FastAPI's). Without it nothing is installed:
the tracer is OpenTelemetry's no-op one, which still carries a trace context from span to
span, so a submission's trace id reaches the ledger, the job and the log lines all the same,
at the cost of a few dictionary look-ups.

The trace travels with a job as a W3C `traceparent` string: the ledger keeps its `trace_id`
and `span_id`, and the job carries it through Redis (the queue package) to the worker,
whose run is a child span of the submitting request.
"""

from __future__ import annotations

import contextvars
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from .config import APP_CODE

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The instrumentations record nothing in a context holding this key (opentelemetry's plain
# name for it; `opentelemetry.instrumentation.utils.suppress_instrumentation` sets it too).
_SUPPRESS_KEY = "suppress_instrumentation"

_installed: dict[str, bool] = {}


def exporting() -> bool:
    """Whether spans are exported: an OTLP endpoint is set in the environment."""
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def setup_tracing(service: str, *, redis: bool = True) -> bool:
    """Install the SDK, the OTLP/HTTP exporter and the psycopg and Redis instrumentations,
    once per process, when an endpoint is set; returns whether it did (then the caller adds
    its own instrumentations). The exporter reads the standard OTEL_* variables itself.

    The worker leaves Redis out (`redis=False`): arq polls it 100 times a second, each poll a
    trace of its own; a job's run and its SQL are what its trace needs."""
    if not exporting():
        return False
    if _installed.get(service):
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"{APP_CODE}-{service}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    if redis:
        RedisInstrumentor().instrument(tracer_provider=provider)
    _installed[service] = True
    return True


def shutdown_tracing() -> None:
    """Send the spans still buffered (a worker or API that stops)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id (hex), when there is a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def traceparent(trace_id: str | None, span_id: str | None, sampled: bool = True) -> str | None:
    """The W3C `traceparent` for these ids (None without both)."""
    if not trace_id or not span_id:
        return None
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def current_traceparent() -> str | None:
    """The `traceparent` a job submitted now carries: this span is its run's parent."""
    span = trace.get_current_span().get_span_context()
    ids = current_ids()
    return traceparent(*ids, sampled=span.trace_flags.sampled) if ids else None


def context_of(header: str | None) -> otel_context.Context | None:
    """The trace context a `traceparent` value names (None when it names none)."""
    if not header:
        return None
    context = extract({"traceparent": header})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def start_context(headers: dict[str, str]) -> otel_context.Context:
    """The context of a request when no SDK made a span for it: the incoming trace with a new
    span id, or a new trace. Its ids are what the API answers and stores (no-op spans)."""
    parent = trace.get_current_span(extract(headers)).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else int.from_bytes(secrets.token_bytes(16))
    flags = parent.trace_flags if parent.is_valid else TraceFlags(TraceFlags.SAMPLED)
    span = SpanContext(trace_id, int.from_bytes(secrets.token_bytes(8)), False, flags)
    return trace.set_span_in_context(NonRecordingSpan(span))


@contextmanager
def attached(context: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def quiet() -> contextvars.Context:
    """A copy of the current context without a span, in which the instrumentations record
    nothing: for background tasks (`asyncio.create_task(..., context=quiet())`) whose SQL
    belongs to no request or job, or to many (the worker's group commit: each job's own
    ledger-write span stands for its share of a batch)."""
    context = contextvars.copy_context()
    context.run(otel_context.attach, otel_context.set_value(_SUPPRESS_KEY, True, EMPTY))
    return context


EMPTY = otel_context.Context()


def span_attributes(**values: Any) -> dict[str, Any]:
    """Attributes without the None values (OpenTelemetry refuses None)."""
    return {k: v for k, v in values.items() if v is not None}
