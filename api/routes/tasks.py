"""The /api/v1/tasks resource."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from api import pagination
from api.auth import PrincipalDep
from api.deps import EventsDep, PublisherDep, RepositoryDep, SubmitterDep
from api.errors import AUTH_ERRORS, BODY_ERRORS, ERRORS
from api.metrics import TASKS_CREATED
from api.schemas import (
    ErrorOut,
    TaskCreate,
    TaskEventList,
    TaskEventOut,
    TaskList,
    TaskOut,
    TaskRetry,
    TaskStatusOut,
    TaskUpdate,
)
from shared.db.tables import TITLE_MAX_CHARS
from shared.domain.enums import TaskPriority, TaskStatus
from shared.domain.records import NewTask
from shared.services.changes import change_task, rerun_task

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=AUTH_ERRORS)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No task has this id"},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**BODY_ERRORS, **ERRORS},
)
async def create_task(
    body: TaskCreate,
    response: Response,
    submitter: SubmitterDep,
    principal: PrincipalDep,
) -> TaskOut:
    """Store a task and queue it. Status PENDING once queued, NEW if the broker is unreachable."""
    new = NewTask(
        owner_id=principal.user_id,
        title=body.title,
        description=body.description,
        priority=body.priority,
        kind=body.kind,
        params=body.params,
        max_retries=body.max_retries,
        timeout_seconds=body.timeout_seconds,
    )
    task = await submitter.submit(new)
    TASKS_CREATED.labels(task.priority.value).inc()
    response.headers["Location"] = f"{router.prefix}/{task.id}"
    return TaskOut.model_validate(task)


@router.get("", responses=ERRORS)
async def list_tasks(
    repo: RepositoryDep,
    status_: Annotated[list[TaskStatus] | None, Query(alias="status")] = None,
    priority: Annotated[list[TaskPriority] | None, Query()] = None,
    owner: Annotated[
        list[uuid.UUID] | None,
        Query(description="Owners' user ids (admins; a member only ever sees their own)"),
    ] = None,
    title_prefix: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=TITLE_MAX_CHARS,
            pattern=r"^[^\x00]*$",
            description="Titles starting with it",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page; fast at any depth"),
    ] = None,
) -> TaskList:
    """Tasks, newest first; `status` and `priority` may each be given several times.

    Page with `cursor` (keyset: every page as fast as the first) or `offset` (slower the
    deeper it goes). `total` is exact up to 1,000 matches, an estimate beyond that.
    """
    after = pagination.decode(cursor) if cursor else None
    page = await repo.list_page(
        statuses=status_ or (),
        priorities=priority or (),
        owners=owner or (),
        title_prefix=title_prefix,
        limit=limit,
        offset=offset,
        after=after,
    )
    more = len(page.items) == limit
    return TaskList(
        items=[TaskOut.model_validate(task) for task in page.items],
        total=page.total,
        total_is_exact=page.total_is_exact,
        limit=limit,
        offset=offset,
        next_cursor=pagination.encode(page.items[-1]) if more else None,
    )


@router.get("/{task_id}", responses={**NOT_FOUND, **ERRORS})
async def get_task(task_id: uuid.UUID, repo: RepositoryDep) -> TaskOut:
    return TaskOut.model_validate(await repo.get(task_id))


@router.get("/{task_id}/status", responses={**NOT_FOUND, **ERRORS})
async def get_task_status(task_id: uuid.UUID, repo: RepositoryDep) -> TaskStatusOut:
    return TaskStatusOut.of(await repo.get(task_id))


@router.get("/{task_id}/events", responses={**NOT_FOUND, **ERRORS})
async def get_task_events(
    task_id: uuid.UUID, repo: RepositoryDep, events: EventsDep
) -> TaskEventList:
    """The task's history, oldest first: its creation and every change of its status."""
    await repo.get(task_id)  # 404 for an unknown task, not an empty history
    return TaskEventList(
        items=[TaskEventOut.model_validate(e) for e in await events.of_task(task_id)]
    )


UPDATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "Finished, or running and asked a new priority"},
    **BODY_ERRORS,
    **NOT_FOUND,
    **ERRORS,
}


@router.patch("/{task_id}", responses=UPDATE_RESPONSES)
async def update_task(
    task_id: uuid.UUID, body: TaskUpdate, repo: RepositoryDep, publisher: PublisherDep
) -> TaskOut:
    """Change title, description and/or priority. NEW or PENDING: anything; a new priority
    re-queues the task at it (its old message can no longer start it). IN_PROGRESS: title
    and description only (409 for a new priority). Finished: 409."""
    task = await change_task(
        repo,
        publisher,
        task_id,
        title=body.title,
        description=body.description,
        priority=body.priority,
    )
    return TaskOut.model_validate(task)


@router.put("/{task_id}", responses=UPDATE_RESPONSES)
async def replace_task_fields(
    task_id: uuid.UUID, body: TaskUpdate, repo: RepositoryDep, publisher: PublisherDep
) -> TaskOut:
    """The same as PATCH, for clients of the task managers that update with PUT."""
    return await update_task(task_id, body, repo, publisher)


@router.post(
    "/{task_id}/retry",
    responses={
        409: {"model": ErrorOut, "description": "Not FAILED nor CANCELLED"},
        **BODY_ERRORS,
        **NOT_FOUND,
        **ERRORS,
    },
)
async def retry_task(
    task_id: uuid.UUID,
    repo: RepositoryDep,
    publisher: PublisherDep,
    body: Annotated[TaskRetry | None, Body()] = None,
) -> TaskOut:
    """Run a FAILED or CANCELLED task again (optionally at another priority): back to NEW,
    then PENDING; `attempts` goes on counting, and the history keeps the earlier outcome."""
    priority = body.priority if body is not None else None
    return TaskOut.model_validate(await rerun_task(repo, publisher, task_id, priority=priority))


CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": TaskOut, "description": "Running: its worker will stop it"},
    409: {"model": ErrorOut, "description": "Already COMPLETED or FAILED"},
    **NOT_FOUND,
    **ERRORS,
}


@router.delete("/{task_id}", responses=CANCEL_RESPONSES)
async def cancel_task(task_id: uuid.UUID, response: Response, repo: RepositoryDep) -> TaskOut:
    """Cancel (never erase) a task: at once if queued, by its worker if running."""
    task = await repo.cancel(task_id)
    if task.status is TaskStatus.IN_PROGRESS:
        response.status_code = status.HTTP_202_ACCEPTED
    return TaskOut.model_validate(task)


@router.post("/{task_id}/cancel", responses=CANCEL_RESPONSES)
async def cancel_task_by_post(
    task_id: uuid.UUID, response: Response, repo: RepositoryDep
) -> TaskOut:
    """Exactly what DELETE /api/v1/tasks/{task_id} does, for clients that cancel by POST."""
    return await cancel_task(task_id, response, repo)
