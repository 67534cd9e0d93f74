"""/healthz and /metrics"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runix.api.deps import CurrentAccount

router = APIRouter(tags=["platform"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers while the server runs."""
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, account: CurrentAccount) -> PlainTextResponse:
    """Request counts and latencies in the Prometheus text format."""
    return PlainTextResponse(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
