"""Liveness and readiness, for orchestrators and load balancers."""

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from api.deps import EngineDep, PublisherDep
from api.metrics import metrics_response
from api.schemas import ApiHealth, ErrorOut
from shared import __version__
from shared.db.engine import ping
from shared.domain.errors import DatabaseUnavailable

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process answers. Checks no dependency, so a database outage never restarts it."""
    return {"status": "ok"}


@router.get("/api/v1/health")
async def api_health() -> ApiHealth:
    """Like /health, with the service version and the server's clock."""
    return ApiHealth(status="ok", version=__version__, time=datetime.now(UTC))


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics of this API process, in the text exposition format."""
    return metrics_response()


@router.get(
    "/ready",
    responses={503: {"model": ErrorOut, "description": "A dependency is unreachable"}},
)
async def ready(engine: EngineDep, publisher: PublisherDep) -> JSONResponse:
    """Whether PostgreSQL and RabbitMQ are reachable; a 503 names the ones that are not."""
    failing = []
    try:
        await ping(engine)
    except DatabaseUnavailable:
        failing.append("database")
    if not publisher.connected:
        failing.append("broker")
    if failing:
        return JSONResponse({"detail": f"unavailable: {', '.join(failing)}"}, status_code=503)
    return JSONResponse({"status": "ready"})
