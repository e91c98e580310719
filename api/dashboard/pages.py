"""The dashboard's pages. Each live part of a page has a fragment route of its own
(`.../rows`, `.../detail`), which the page's script fetches again when the event stream
says something changed: one template renders a part, first and every time after."""

import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncConnection

from api import pagination
from api.auth import SESSION_COOKIE, end_session
from api.dashboard.access import (
    LOGIN_COOKIE,
    SignInRequired,
    Viewer,
    ViewerDep,
    read_form,
    remember_login_token,
    sign_in,
)
from api.deps import ConnectionDep, SettingsDep
from shared.db.events import EventRepository
from shared.db.tables import TITLE_MAX_CHARS
from shared.db.tasks import PagePosition, TaskRepository
from shared.db.workers import WorkerRepository
from shared.domain import sessions
from shared.domain.enums import TaskPriority, TaskStatus
from shared.domain.errors import TaskNotFound
from shared.domain.records import TaskPage

HERE = Path(__file__).parent
PAGE_SIZE = 50
# The pages load nothing from elsewhere and run no inline script: say so to the browser.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/dashboard", include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")


def _when(moment: datetime | None, precise: bool = False) -> str:
    if moment is None:
        return "\u2013"  # an en dash: no time yet
    shown = moment.astimezone(UTC)
    return shown.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if precise else f"{shown:%Y-%m-%d %H:%M:%S}"


def _pretty(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


templates.env.filters["when"] = _when
templates.env.filters["pretty"] = _pretty


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.add_exception_handler(SignInRequired, _sign_in_required)


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    if request.url.path.endswith(("/rows", "/detail")):  # fetched by a script
        return JSONResponse({"detail": "signed out"}, status_code=status.HTTP_401_UNAUTHORIZED)
    return RedirectResponse("/dashboard/login", status_code=status.HTTP_303_SEE_OTHER)


def _page(request: Request, name: str, context: dict[str, Any], code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=code)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return _login_page(request, error=None)


def _login_page(request: Request, error: str | None) -> HTMLResponse:
    token = secrets.token_urlsafe(16)
    context = {"error": error, "login_token": token}
    response = _page(request, "login.html", context, 401 if error else 200)
    remember_login_token(response, request, token)
    return response


@router.post("/login")
async def login(request: Request, settings: SettingsDep) -> Response:
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_COOKIE)
    sent = form.get("login_token", "").encode()
    if not expected or not hmac.compare_digest(expected.encode(), sent):
        return _login_page(request, "The sign-in form expired; please try again.")
    response = RedirectResponse("/dashboard", status_code=status.HTTP_303_SEE_OTHER)
    lifetime = timedelta(hours=settings.dashboard_session_hours)
    key = form.get("key", "")
    if not await sign_in(
        request.app.state, key, lifetime=lifetime, response=response, request=request
    ):
        return _login_page(request, "That key is not valid.")
    return response


@router.post("/logout")
async def logout(request: Request, viewer: ViewerDep) -> Response:
    form = await read_form(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    if not sessions.csrf_matches(token, form.get("csrf_token")):
        return _page(request, "error.html", {"viewer": viewer, "message": "Refused."}, 403)
    await end_session(request.app.state, token)
    response = RedirectResponse("/dashboard/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("")
async def overview(request: Request, viewer: ViewerDep) -> HTMLResponse:
    context = {"viewer": viewer, "statuses": list(TaskStatus), "nav": "overview"}
    return _page(request, "overview.html", context)


E = TypeVar("E", TaskStatus, TaskPriority)


def _choice(kind: type[E], value: str) -> E | None:
    """The member named `value`; None for "any" (empty) or anything unknown."""
    try:
        return kind(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class TaskFilters:
    """The Tasks page's query: as typed in its form, so nothing in it is ever a 422."""

    status: str = ""
    priority: str = ""
    q: str = ""
    cursor: str = ""


async def task_filters(
    status_: Annotated[str, Query(alias="status", max_length=20)] = "",
    priority: Annotated[str, Query(max_length=20)] = "",
    q: Annotated[str, Query(max_length=TITLE_MAX_CHARS)] = "",
    cursor: Annotated[str, Query(max_length=200)] = "",
) -> TaskFilters:
    return TaskFilters(status=status_, priority=priority, q=q, cursor=cursor)


FiltersDep = Annotated[TaskFilters, Depends(task_filters)]


async def _task_page(conn: AsyncConnection, viewer: Viewer, filters: TaskFilters) -> TaskPage:
    repo = TaskRepository(conn, owner=viewer.principal.owner_scope)
    query = filters.q.strip().replace("\x00", "")[:TITLE_MAX_CHARS]
    try:
        task_id = uuid.UUID(query)
    except ValueError:
        task_id = None
    if task_id is not None:
        try:
            return TaskPage(items=[await repo.get(task_id)], total=1)
        except TaskNotFound:
            return TaskPage(items=[], total=0)
    chosen_status = _choice(TaskStatus, filters.status)
    chosen_priority = _choice(TaskPriority, filters.priority)
    return await repo.list_page(
        statuses=[chosen_status] if chosen_status else (),
        priorities=[chosen_priority] if chosen_priority else (),
        title_prefix=query or None,
        limit=PAGE_SIZE,
        after=_position(filters.cursor),
        with_total=False,
    )


def _position(cursor: str) -> PagePosition | None:
    """Where the page starts; a cursor that is not one starts at the newest."""
    try:
        return pagination.decode(cursor) if cursor else None
    except RequestValidationError:
        return None


@router.get("/tasks")
async def task_list(
    request: Request, viewer: ViewerDep, conn: ConnectionDep, filters: FiltersDep
) -> HTMLResponse:
    page = await _task_page(conn, viewer, filters)
    context = {
        "viewer": viewer,
        "nav": "tasks",
        "page": page,
        "next_cursor": _next_cursor(page),
        "filters": filters,
        "statuses": list(TaskStatus),
        "priorities": list(TaskPriority),
    }
    return _page(request, "tasks.html", context)


@router.get("/tasks/rows")
async def task_rows(
    request: Request, viewer: ViewerDep, conn: ConnectionDep, filters: FiltersDep
) -> HTMLResponse:
    page = await _task_page(conn, viewer, filters)
    return _page(request, "_task_rows.html", {"page": page})


def _next_cursor(page: TaskPage) -> str | None:
    return pagination.encode(page.items[-1]) if len(page.items) == PAGE_SIZE else None


async def _task_context(
    conn: ConnectionDep, viewer: ViewerDep, task_id: uuid.UUID
) -> dict[str, Any]:
    repo = TaskRepository(conn, owner=viewer.principal.owner_scope)
    task = await repo.get(task_id)
    events = await EventRepository(conn).of_task(task_id)
    return {
        "viewer": viewer,
        "nav": "tasks",
        "task": task,
        "events": events,
        "priorities": list(TaskPriority),
    }


@router.get("/tasks/{task_id}")
async def task_page(
    request: Request, task_id: uuid.UUID, viewer: ViewerDep, conn: ConnectionDep
) -> HTMLResponse:
    try:
        context = await _task_context(conn, viewer, task_id)
    except TaskNotFound:
        message = f"No task {task_id}."
        return _page(request, "error.html", {"viewer": viewer, "message": message}, 404)
    return _page(request, "task.html", context)


@router.get("/tasks/{task_id}/detail")
async def task_detail(
    request: Request, task_id: uuid.UUID, viewer: ViewerDep, conn: ConnectionDep
) -> HTMLResponse:
    try:
        context = await _task_context(conn, viewer, task_id)
    except TaskNotFound:
        return HTMLResponse("", status_code=404)
    return _page(request, "_task_detail.html", context)


@router.get("/workers")
async def workers_page(request: Request, viewer: ViewerDep, conn: ConnectionDep) -> HTMLResponse:
    if not viewer.principal.is_admin:
        message = "Only an admin may see the workers."
        return _page(request, "error.html", {"viewer": viewer, "message": message}, 403)
    listing = await WorkerRepository(conn).listing()
    return _page(request, "workers.html", {"viewer": viewer, "nav": "workers", "workers": listing})


@router.get("/workers/rows")
async def worker_rows(request: Request, viewer: ViewerDep, conn: ConnectionDep) -> HTMLResponse:
    if not viewer.principal.is_admin:
        return HTMLResponse("", status_code=403)
    listing = await WorkerRepository(conn).listing()
    return _page(request, "_worker_rows.html", {"workers": listing})
