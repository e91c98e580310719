"""Dependency-injection aliases for the routes."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.broker import Publisher
from shared.db import connect
from shared.repository import TaskRepository
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


async def get_repository(
    engine: Annotated[AsyncEngine, Depends(get_engine)],
) -> AsyncIterator[TaskRepository]:
    async with connect(engine) as conn:
        yield TaskRepository(conn)


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
RepositoryDep = Annotated[TaskRepository, Depends(get_repository)]
