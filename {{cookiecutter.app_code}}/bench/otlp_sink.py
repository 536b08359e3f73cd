"""An OTLP/HTTP endpoint that accepts spans and drops them, for measuring what tracing costs.

    .venv/bin/python bench/otlp_sink.py 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make up     # the API and the worker export
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make bench  # and so do the bench's workers

It answers every export with an empty ExportTraceServiceResponse (which is zero bytes) and
decodes nothing, so that it costs the machine as little as a collector elsewhere would; it
prints how many requests and bytes it took when stopped (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

received = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", 0))
        self.rfile.read(size)
        received["requests"] += 1
        received["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str]) -> int:
    port = int(argv[0]) if argv else 4318
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)
    print(f"OTLP/HTTP sink on http://127.0.0.1:{port} (drops every span)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    print(f"received {received['requests']} exports, {received['bytes']:,} bytes", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
