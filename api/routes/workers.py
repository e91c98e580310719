"""The /api/v1/workers resource: which workers exist and what they run."""

from fastapi import APIRouter

from api.auth import AdminDep
from api.deps import WorkersDep
from api.errors import AUTH_ERRORS, ERRORS
from api.schemas import WorkerList, WorkerOut

router = APIRouter(prefix="/api/v1/workers", tags=["workers"], responses=AUTH_ERRORS)


@router.get("", responses=ERRORS)
async def list_workers(admin: AdminDep, workers: WorkersDep) -> WorkerList:
    """Admin: workers seen in the last day: online, offline (unseen for three heartbeats) or
    stopped (shut down gracefully), with the tasks each runs and its counters."""
    return WorkerList(items=[WorkerOut.model_validate(w) for w in await workers.listing()])
