"""Assembles the FastAPI application; `uvicorn api.main:app` serves it."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.body_limit import BodyLimitMiddleware
from api.metrics import MetricsMiddleware
from api.routes import health, tasks
from shared.broker import Publisher
from shared.db import create_engine
from shared.logs import configure_logging
from shared.relay import run_relay
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = create_engine(settings)
        app.state.publisher = Publisher(settings)
        relay: asyncio.Task[None] | None = None
        try:
            await app.state.publisher.start()
            relay = asyncio.create_task(
                run_relay(app.state.engine, app.state.publisher, settings), name="relay"
            )
            yield
        finally:
            if relay is not None:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
            await app.state.publisher.close()
            await app.state.engine.dispose()

    app = FastAPI(
        title="Task service",
        version="0.1.0",
        summary="Durable asynchronous tasks on PostgreSQL and a RabbitMQ priority queue",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(MetricsMiddleware)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(tasks.router)
    return app


app = create_app()
