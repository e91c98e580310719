"""The database engine and the one place that decides which errors mean "database unavailable"."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from shared.domain.errors import DatabaseUnavailable
from shared.settings import Settings


def create_engine(settings: Settings, pool_size: int | None = None) -> AsyncEngine:
    """An engine whose connections autocommit.

    Every repository call is a single statement, so autocommit makes each one atomic and
    saves the BEGIN/COMMIT round trips; multi-statement work uses `transaction()`.
    """
    return create_async_engine(
        settings.database_url,
        isolation_level="AUTOCOMMIT",
        # A fixed pool: overflow connections are closed on return, and under load that
        # meant opening a connection (TLS attempt included) for many requests.
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "server_settings": {"application_name": "taskq"},
        },
    )


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database could not be reached (as opposed to a bad query)."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, PoolTimeoutError | OSError | asyncio.TimeoutError)


@contextmanager
def translate_unavailable() -> Iterator[None]:
    """Turn connection-level failures into DatabaseUnavailable; let real bugs through."""
    try:
        yield
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable() from exc
        raise


@asynccontextmanager
async def connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection; failing to get one raises DatabaseUnavailable."""
    with translate_unavailable():
        conn = await engine.connect()
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside one READ COMMITTED transaction, for multi-statement work."""
    async with connect(engine) as conn, in_transaction(conn) as tx_conn:
        yield tx_conn


@asynccontextmanager
async def in_transaction(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """One READ COMMITTED transaction on a connection that otherwise autocommits."""
    tx_conn = await conn.execution_options(isolation_level="READ COMMITTED")
    with translate_unavailable():
        async with tx_conn.begin():
            yield tx_conn


async def ping(engine: AsyncEngine) -> None:
    """Raise DatabaseUnavailable unless the database answers a trivial query."""
    async with connect(engine) as conn:
        with translate_unavailable():
            await conn.execute(text("SELECT 1"))


# While the database is down, work waits and retries with growing pauses instead of
# spinning (a worker meanwhile keeps its messages unacknowledged, so nothing is lost).
DB_RETRY_INITIAL_S = 0.2
DB_RETRY_MAX_S = 5.0


def until_available(log: logging.Logger, waiting: str) -> AsyncRetrying:
    """Retries a database call for as long as the database is unavailable, logging
    `waiting` before each pause; any other error goes straight through."""
    return AsyncRetrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        wait=wait_exponential_jitter(multiplier=DB_RETRY_INITIAL_S, max=DB_RETRY_MAX_S),
        before_sleep=lambda state: log.warning("database unavailable; %s", waiting),
        reraise=True,
    )
