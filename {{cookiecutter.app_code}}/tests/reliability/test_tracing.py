"""Traces from request to job, exported over OTLP/HTTP to a real receiver.

The test runs a small OTLP/HTTP receiver (an HTTP server that decodes the protobuf requests
with opentelemetry-proto), an API and a worker of its own pointed at it
(OTEL_EXPORTER_OTLP_ENDPOINT), with the stack's worker stopped so that the job runs on the
test's. One job submitted with a `traceparent` must come back as spans of that trace: the
API's request (a child of the caller's span), its ledger insert, the worker's run (a child of
the request), the run's ledger writes and the job's own SQL (children of the run); and the
job's log lines carry the trace and the run's span.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .conftest import Process, SpawnApi

pytestmark = pytest.mark.reliability

TRACE_ID = "5b8efff798038103d269b633813fc60c"
CALLER_SPAN = "eee19b7ec3c1b174"
SPAN_WAIT_SECONDS = 20.0


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: every span it was sent, with its service's name."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[str, Span]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def of_trace(self, trace_id: str) -> list[tuple[str, Span]]:
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id.hex() == trace_id]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                service = attrs.get("service.name", "")
                for scope in resource_spans.scope_spans:
                    self.server.spans.extend((service, span) for span in scope.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_stack_worker(stack: ModuleType) -> Iterator[None]:
    stack.stop_service("worker")
    yield  # the suite's finalizer starts it again


def _one(spans: list[tuple[str, Span]], what: str, match: Callable[[str, Span], bool]) -> Span:
    found = [s for svc, s in spans if match(svc, s)]
    names = sorted(f"{svc}:{s.name}" for svc, s in spans)
    assert found, f"no span for {what} among {names}"
    return found[0]


def _sql(span: Span) -> str:
    for attribute in span.attributes:
        if attribute.key in ("db.statement", "db.query.text"):
            return attribute.value.string_value
    return ""


def test_one_job_is_one_trace_from_the_request_to_the_jobs_sql(
    receiver: Receiver,
    no_stack_worker: None,
    spawn_worker: Callable[..., Process],
    spawn_api: SpawnApi,
    auth: dict[str, str],
    job_id: Callable[[str], str],
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s (the SDK's default: 5 s)
        "WORKER_METRICS_PORT": "0",  # the stack's worker holds the port (stopped or not)
    }
    worker = spawn_worker(**env)
    _, api = spawn_api(**env)
    jid = job_id("otlp")
    body = {"job_id": jid, "function": "hello", "params": {"name": "otlp"}}
    caller = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
    response = api.post("/api/v1/jobs", json=body, headers={**auth, "traceparent": caller})
    assert response.status_code == 202, response.text
    assert response.json()["trace_id"] == TRACE_ID

    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    while time.monotonic() < deadline:
        spans = receiver.of_trace(TRACE_ID)
        if any("INSERT INTO hello" in _sql(s) for _, s in spans):
            time.sleep(1)  # the run's last ledger write follows the job's SQL
            break
        time.sleep(0.2)
    spans = receiver.of_trace(TRACE_ID)
    assert spans, f"no span of trace {TRACE_ID} arrived in {SPAN_WAIT_SECONDS:.0f} s"
    app = "{{ cookiecutter.app_code }}"

    request = _one(
        spans,
        "the API's request",
        lambda svc, s: svc == f"{app}-api" and s.kind == Span.SPAN_KIND_SERVER,
    )
    assert request.parent_span_id.hex() == CALLER_SPAN
    assert response.headers["traceparent"] == f"00-{TRACE_ID}-{request.span_id.hex()}-01"
    assert "/api/v1/jobs" in request.name
    submit_sql = _one(spans, "the API's ledger insert", lambda _, s: "INSERT INTO job" in _sql(s))
    assert submit_sql.parent_span_id == request.span_id

    run = _one(
        spans, "the worker's run", lambda svc, s: svc == f"{app}-worker" and s.name == "job hello"
    )
    assert run.parent_span_id == request.span_id, "the run is a child of the request"
    assert run.kind == Span.SPAN_KIND_CONSUMER
    start = _one(spans, "the ledger write of the start", lambda _, s: s.name == "ledger job.start")
    end = _one(spans, "the ledger write of the end", lambda _, s: s.name == "ledger job.succeed")
    own = _one(spans, "the job's own SQL", lambda _, s: "INSERT INTO hello" in _sql(s))
    assert start.parent_span_id == run.span_id
    assert end.parent_span_id == run.span_id
    assert own.parent_span_id == run.span_id
    assert start.end_time_unix_nano <= own.start_time_unix_nano <= end.start_time_unix_nano

    # The job's log lines: JSON objects with its job_id, the trace and the run's span.
    lines = [json.loads(x) for x in worker.log.read_text().splitlines() if x.startswith("{")]
    about = [x for x in lines if x.get("job_id") == jid]
    assert [x["message"] for x in about] == ["hello otlp: started", "hello otlp: complete"]
    assert {(x["trace_id"], x["span_id"]) for x in about} == {(TRACE_ID, run.span_id.hex())}
