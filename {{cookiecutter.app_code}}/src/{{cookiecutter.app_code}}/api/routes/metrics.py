"""`GET /metrics`: the API's Prometheus metrics, for API_READ_TOKEN (or API_TOKEN).

What is counted (api/observe.py) comes from every API process (prometheus-client's
multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set); what is read (the ledger's counts,
the oldest queued job) is read at the scrape, on the status page's small read pool with its
statement timeout (ledger/reads.py), so a scrape can neither take the connections submissions
need nor scan the ledger.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ...core.metrics import CONTENT_TYPE, exposition
from ...ledger.reads import page_reads
from ..deps import PagePoolDep, require_read
from ..observe import ledger_gauges, live_gauges

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    dependencies=[Depends(require_read)],
    include_in_schema=False,  # Prometheus text, not JSON: documented in the README
)
async def metrics(request: Request, pool: PagePoolDep) -> Response:
    """Prometheus text format; 401 without a token, 503 without PostgreSQL (no half scrape)."""
    live_gauges(request.app.state)
    async with page_reads(pool) as conn:
        ledger = await ledger_gauges(conn)
    return Response(exposition([ledger]), media_type=CONTENT_TYPE)
