"""/healthz and /metrics"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runix.api.deps import Ctx, CurrentAccount
from runix.errors import Forbidden

router = APIRouter(tags=["platform"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers while the server runs."""
    return {"status": "ok"}


# The errors are JSON although the answer is text: documented as such, or the text/plain class would claim them.
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


@router.get("/metrics", response_class=PlainTextResponse,
            responses={403: {"description": "Not an admin", "content": _JSON_ERROR}})
def metrics(request: Request, account: CurrentAccount, ctx: Ctx) -> PlainTextResponse:
    """Request counts and latencies in the Prometheus text format: server-wide figures, for the operator's admins
    (RUNIX_ADMIN_EMAILS) only."""
    if not ctx.settings.is_admin(account.email):
        raise Forbidden("Metrics are for the operator's admins (RUNIX_ADMIN_EMAILS)")
    return PlainTextResponse(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
