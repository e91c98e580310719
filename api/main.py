"""Assembles the FastAPI application; `uvicorn api.main:app` serves it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import errors
from api.auth import PrincipalCache, purge_sessions
from api.body_limit import BodyLimitMiddleware
from api.dashboard import pages as dashboard
from api.live.hub import EventHub
from api.live.sse import ExposeTransport
from api.metrics import MetricsMiddleware
from api.query import single_values
from api.routes import events, health, keys, stats, tasks, users, webhooks, workers
from shared import __version__
from shared.background.periodic import Loop, Supervisor
from shared.background.relay import relay_loop
from shared.db.engine import create_engine
from shared.db.wakeups import Wakeups
from shared.logs import configure_logging
from shared.messaging.publisher import Publisher
from shared.services.marks import PublishMarks
from shared.services.submit import Submitter
from shared.settings import Settings, get_settings

# Old sessions are deleted now and then; nothing depends on how soon.
SESSIONS_PURGE_S = 3600


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = create_engine(settings)
        app.state.publisher = Publisher(settings)
        app.state.submitter = Submitter(
            app.state.engine, app.state.publisher, PublishMarks(app.state.engine), settings
        )
        app.state.key_cache = PrincipalCache(settings.auth_cache_seconds)
        app.state.session_cache = PrincipalCache(settings.auth_cache_seconds)
        app.state.event_hub = EventHub(app.state.engine, settings)
        wakeups = Wakeups(app.state.engine)
        wakeups.install()
        loops = Supervisor()
        try:
            await app.state.publisher.start()
            loops.start(
                relay_loop(app.state.engine, app.state.publisher, settings),
                Loop("sessions-purge", SESSIONS_PURGE_S, lambda: purge_sessions(app.state)),
                wakeups.loop(),
                *app.state.event_hub.loops(),
            )
            yield
        finally:
            await loops.stop()
            await app.state.publisher.close()
            await app.state.engine.dispose()

    app = FastAPI(
        title="Task service",
        version=__version__,
        summary="Durable asynchronous tasks on PostgreSQL and a RabbitMQ priority queue",
        lifespan=lifespan,
        dependencies=[Depends(single_values)],
    )
    app.add_middleware(BodyLimitMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware)
    errors.install(app)
    app.include_router(health.router)
    # Fixed paths under /api/v1/tasks before the ones that take a task id.
    app.include_router(stats.router)
    app.include_router(tasks.router)
    app.include_router(workers.router)
    app.include_router(users.router)
    app.include_router(keys.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    dashboard.install(app)
    return app


# uvicorn serves this; ExposeTransport lets a too-slow event stream be cut off at once.
app = ExposeTransport(create_app())
