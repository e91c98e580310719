"""Dependency-injection aliases for the routes."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.auth import PrincipalDep
from shared.db.engine import connect
from shared.db.events import EventRepository
from shared.db.keys import KeyRepository
from shared.db.stats import StatsRepository
from shared.db.tasks import TaskRepository
from shared.db.users import UserRepository
from shared.db.workers import WorkerRepository
from shared.messaging.publisher import Publisher
from shared.services.submit import Submitter
from shared.settings import Settings


# async on purpose: FastAPI runs a plain `def` dependency in its threadpool, a thread hop
# per dependency per request that the profile showed costing more than the work itself.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


async def get_submitter(request: Request) -> Submitter:
    submitter: Submitter = request.app.state.submitter
    return submitter


async def get_connection(
    engine: Annotated[AsyncEngine, Depends(get_engine)],
) -> AsyncIterator[AsyncConnection]:
    """One pooled connection per request, shared by every repository the route uses."""
    async with connect(engine) as conn:
        yield conn


ConnectionDep = Annotated[AsyncConnection, Depends(get_connection)]


# The principal comes first: FastAPI resolves dependencies in order, and a key lookup (on a
# cache miss) borrows a pooled connection of its own. Resolved after ConnectionDep, every
# request would briefly hold two, and a burst of them could exhaust the pool.
async def get_repository(principal: PrincipalDep, conn: ConnectionDep) -> TaskRepository:
    """The caller's tasks: a member's own, an admin's all; changes are recorded as theirs."""
    return TaskRepository(conn, owner=principal.owner_scope, user_id=principal.user_id)


async def get_events(conn: ConnectionDep) -> EventRepository:
    return EventRepository(conn)


async def get_workers(conn: ConnectionDep) -> WorkerRepository:
    return WorkerRepository(conn)


async def get_stats(principal: PrincipalDep, conn: ConnectionDep) -> StatsRepository:
    return StatsRepository(conn, owner=principal.owner_scope)


async def get_users(conn: ConnectionDep) -> UserRepository:
    return UserRepository(conn)


async def get_keys(conn: ConnectionDep) -> KeyRepository:
    return KeyRepository(conn)


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
RepositoryDep = Annotated[TaskRepository, Depends(get_repository)]
EventsDep = Annotated[EventRepository, Depends(get_events)]
WorkersDep = Annotated[WorkerRepository, Depends(get_workers)]
StatsDep = Annotated[StatsRepository, Depends(get_stats)]
UsersDep = Annotated[UserRepository, Depends(get_users)]
KeysDep = Annotated[KeyRepository, Depends(get_keys)]
