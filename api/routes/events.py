"""GET /api/v1/events: a Server-Sent Events stream of the history rows the caller may see."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from api.auth import CredentialDep, PrincipalDep
from api.errors import AUTH_ERRORS, ERRORS
from api.live.sse import EventStream
from api.schemas import ErrorOut
from shared.db.engine import connect
from shared.db.events import EventRepository, StreamFilter, StreamPosition
from shared.domain.enums import TaskStatus
from shared.domain.errors import DatabaseUnavailable, NotAuthenticated, UnknownEventId

router = APIRouter(prefix="/api/v1/events", tags=["events"], responses=AUTH_ERRORS)

# Enough for a dashboard page or a program following its batch; more is a list query.
MAX_TASK_IDS = 100


@router.get(
    "",
    response_class=EventStream,
    status_code=200,
    response_description="`text/event-stream`: `event: task`, `id: <history row id>`, "
    "`data: <JSON>` per event; `: keep-alive` comments when idle",
    responses={400: {"model": ErrorOut, "description": "Last-Event-ID names no event"}, **ERRORS},
)
async def stream_events(
    request: Request,
    principal: PrincipalDep,
    credential: CredentialDep,
    task_id: Annotated[
        list[uuid.UUID] | None, Query(max_length=MAX_TASK_IDS, description="Only these tasks")
    ] = None,
    status_: Annotated[
        list[TaskStatus] | None, Query(alias="status", description="Only changes to these")
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(
            ge=0,
            le=2**63 - 1,
            description="Resume after this event (0: from the first); sent by "
            "EventSource on reconnection",
        ),
    ] = None,
) -> EventStream:
    """Task events as they happen: `event: task`, `id:` the history row's id, `data:` the
    change (from, to, attempt, reason, at) and the task's current summary. A member sees
    their own tasks' events, an admin everybody's. Keep-alive comments come when idle."""
    state = request.app.state
    wanted = StreamFilter(
        owner=principal.owner_scope,
        task_ids=frozenset(task_id or ()),
        statuses=frozenset(status_ or ()),
    )
    after = await _resume_position(request, last_event_id)

    async def still_valid() -> bool:
        try:
            now = await credential.principal(state)
        except NotAuthenticated:
            return False
        except DatabaseUnavailable:
            return True  # a database blip ends no stream; the next check decides
        # Demoted or promoted: the stream's scope was fixed when it opened.
        return now.user_id == principal.user_id and now.owner_scope == principal.owner_scope

    await state.event_hub.position()  # 503 now, not inside a stream that answered 200
    return EventStream(
        state.event_hub,
        wanted,
        after,
        still_valid=still_valid,
        recheck_s=state.settings.stream_recheck_seconds,
    )


async def _resume_position(request: Request, last_event_id: int | None) -> StreamPosition | None:
    if last_event_id is None:
        return None
    async with connect(request.app.state.engine) as conn:
        position = await EventRepository(conn).position_of(last_event_id)
    if position is None:
        raise UnknownEventId()
    return position
