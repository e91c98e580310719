"""Hot statements executed on the driver: built by SQLAlchemy, compiled once, run by asyncpg.

SQLAlchemy Core builds every statement (the write path stays the one place that knows how a
transition is written). Executing one through SQLAlchemy, though, costs more CPU than the
database spends on it: per call it computes the cache key of a statement of four CTEs,
wraps the driver's cursor and builds a result; in the worker's profile that was a third of
its time. Here a statement is compiled to PostgreSQL's own text once, the first time it
runs, and then executed by asyncpg on SQLAlchemy's pooled connection (asyncpg prepares it
once per connection and keeps it in its statement cache).

Only on a connection that autocommits: inside a transaction SQLAlchemy sends BEGIN lazily,
before its own first statement, so one sent past it would commit on its own. There the
statement simply goes through SQLAlchemy as before. Hot multi-statement work instead opens
its transaction on the driver (`transaction`), where both kinds of statement run inside it.
"""

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.transaction import Transaction
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import JSON

from shared.db.engine import translate_unavailable
from shared.domain.errors import DatabaseUnavailable

# What can run here: queries and INSERT/UPDATE/DELETE statements, built once at import.
Statement = Select[Any] | UpdateBase
_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
# What asyncpg raises when the database cannot be reached or went away mid-statement (a
# cancelled query, say by statement_timeout, is an error of the statement, not this). Unlike
# SQLAlchemy's path, only the connection that failed is dropped, not every pooled one: after
# a database restart each stale connection fails once, as DatabaseUnavailable. Any other
# error is asyncpg's own (a constraint, bad data), not wrapped in SQLAlchemy's DBAPIError.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement as PostgreSQL text, with how to bind its named values positionally."""

    sql: str
    names: tuple[str, ...]  # the named value for each $n, in order
    fixed: Mapping[str, Any]  # values SQLAlchemy bound itself (literals, IN lists)
    as_json: frozenset[str]  # values sent as JSON text (jsonb parameters)

    @classmethod
    def compile(cls, statement: Statement) -> "DriverStatement":
        compiled = statement.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        binds = compiled.binds.values()
        # IN lists of literals are "expanding" parameters: expand them once, for good.
        given = {bind.key: None for bind in binds if bind.required}
        expanded = compiled.construct_expanded_state(given)
        return cls(
            sql=expanded.statement,
            names=tuple(expanded.positiontup or ()),
            fixed={k: v for k, v in expanded.parameters.items() if k not in given},
            as_json=frozenset(bind.key for bind in binds if isinstance(bind.type, JSON)),
        )

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name in self.names:
            value = values[name] if name in values else self.fixed[name]
            if name in self.as_json and value is not None:
                value = json.dumps(value)
            arguments.append(value)
        return arguments


# By the statement's id, the statement kept alongside so that its id is never reused.
_compiled: dict[int, tuple[Statement, DriverStatement]] = {}
# Per engine, what to call after a statement that writes history committed (the event
# stream's wake-up, see `shared.db.wakeups`); SQLAlchemy's own events never see these.
_history_hooks: "weakref.WeakKeyDictionary[Engine, Callable[[], None]]" = (
    weakref.WeakKeyDictionary()
)


def on_history_written(engine: Engine, hook: Callable[[], None]) -> None:
    _history_hooks[engine] = hook


async def fetch_one(
    conn: AsyncConnection,
    statement: Statement,
    values: Mapping[str, Any],
    *,
    records_history: bool = False,
) -> Mapping[Any, Any] | None:
    """The statement's one row (or None), run on the driver if `conn` autocommits, else
    through SQLAlchemy; DatabaseUnavailable if the database cannot be reached."""
    rows = await fetch_all(conn, statement, values, records_history=records_history)
    return rows[0] if rows else None


async def fetch_all(
    conn: AsyncConnection,
    statement: Statement,
    values: Mapping[str, Any],
    *,
    records_history: bool = False,
) -> Sequence[Mapping[Any, Any]]:
    """The statement's rows, run as `fetch_one` runs it."""
    driver = await _driver_of(conn)
    if driver is None:
        return await _through_sqlalchemy(conn, statement, values)
    compiled = _compiled_once(statement)
    try:
        rows: list[asyncpg.Record] = await driver.fetch(compiled.sql, *compiled.arguments(values))
    except _UNAVAILABLE as exc:
        await conn.invalidate()  # the pool must not hand this connection out again
        raise DatabaseUnavailable() from exc
    if records_history and rows:
        hook = _history_hooks.get(conn.sync_engine)
        if hook is not None:
            hook()
    return rows


@asynccontextmanager
async def transaction(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """One READ COMMITTED transaction begun on the driver, on a connection that otherwise
    autocommits: the statements `fetch_*` are given inside it run on asyncpg, and any that
    go through SQLAlchemy run inside it too (autocommitting, SQLAlchemy sends no BEGIN)."""
    driver = await _driver_of(conn)
    if driver is None:
        raise RuntimeError("driver.transaction needs a connection that autocommits")
    async with _unavailable_translated(conn):
        steps = driver.transaction()  # raises at once if the connection was closed
        await steps.start()
    try:
        yield conn
    except BaseException:
        await _roll_back(conn, steps)
        raise
    async with _unavailable_translated(conn):
        await steps.commit()


async def _roll_back(conn: AsyncConnection, steps: Transaction) -> None:
    """Best effort: the caller sees the error that ended the transaction. A connection
    that cannot roll back (gone, still busy with a cancelled statement, or cancelled
    again) is dropped: back in the pool mid-transaction, its next user would join it."""
    try:
        await steps.rollback()
    except asyncio.CancelledError:
        await conn.invalidate()
        raise
    except Exception:
        await conn.invalidate()


@asynccontextmanager
async def _unavailable_translated(conn: AsyncConnection) -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        await conn.invalidate()  # the pool must not hand this connection out again
        raise DatabaseUnavailable() from exc


async def _driver_of(conn: AsyncConnection) -> asyncpg.Connection | None:
    """The asyncpg connection under `conn`, if it autocommits (else None)."""
    sync = conn.sync_connection
    # The pooled connection is at hand once checked out; asking for it through
    # get_raw_connection() costs a greenlet switch, needed only to reconnect.
    raw = sync.connection if sync is not None and not sync.invalidated else None
    if raw is None:
        raw = await conn.get_raw_connection()
    if not raw.dbapi_connection.autocommit:  # type: ignore[union-attr]
        return None
    driver: asyncpg.Connection = raw.driver_connection
    return driver


def _compiled_once(statement: Statement) -> DriverStatement:
    known = _compiled.get(id(statement))
    if known is None:
        known = _compiled[id(statement)] = (statement, DriverStatement.compile(statement))
    return known[1]


async def _through_sqlalchemy(
    conn: AsyncConnection, statement: Statement, values: Mapping[str, Any]
) -> Sequence[Mapping[Any, Any]]:
    with translate_unavailable():
        return (await conn.execute(statement, dict(values))).mappings().all()
