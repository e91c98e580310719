"""The bare design: the statements and broker operations a task needs, and nothing else.

One process, asyncpg and aio-pika directly: insert, confirmed publish, mark pending (the
producer); claim, finish, ack at prefetch 2 (the consumer). It is the yardstick the project
is measured against in the same run.

It runs the service's own statements (`SERVICE`: `shared.db.tasks.HOT_PATH`, compiled as
the service runs them, history rows and counters included), so that what is compared is
everything around the database work, not the work itself. `MINIMAL` are the four
one-line statements the yardstick ran before tasks had history, kept as a reference point
for what history rows cost.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

import aio_pika
import asyncpg

from shared.db.driver import DriverStatement
from shared.db.tables import LEGACY_USER_ID
from shared.db.tasks import HOT_PATH

OWNER = uuid.UUID(LEGACY_USER_ID)  # the `legacy` user every migrated database has
LEASE = timedelta(seconds=3)


class Executor(Protocol):
    async def fetchrow(self, query: str, *args: Any) -> Any: ...


class Statements(Protocol):
    """What each step sends: SQL text and its positional arguments."""

    def create(self) -> tuple[str, list[Any]]: ...
    def publish(self, task_id: uuid.UUID, generation: int) -> tuple[str, list[Any]]: ...
    def claim(self, task_id: uuid.UUID) -> tuple[str, list[Any]]: ...
    def complete(self, task_id: uuid.UUID, attempt: int | None) -> tuple[str, list[Any]]: ...


class Service:
    """The write path's statements, as the service's driver path sends them."""

    def __init__(self) -> None:
        self.compiled = {name: DriverStatement.compile(s) for name, s in HOT_PATH.items()}
        self.nobody = {"actor": None, "actor_user": None, "owner": None}

    def _bound(self, name: str, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        statement = self.compiled[name]
        return statement.sql, statement.arguments({**self.nobody, **values})

    def create(self) -> tuple[str, list[Any]]:
        return self._bound(
            "create",
            {
                "actor_user": OWNER,
                "owner_id": OWNER,
                "title": "bare",
                "description": "",
                "priority": "MEDIUM",
                "kind": "simulate",
                "params": {"duration": 0},
                "max_retries": 3,
                "timeout_seconds": 300,
            },
        )

    def publish(self, task_id: uuid.UUID, generation: int) -> tuple[str, list[Any]]:
        values = {"actor_user": OWNER, "task_id": task_id, "generation": generation}
        return self._bound("publish", values)

    def claim(self, task_id: uuid.UUID) -> tuple[str, list[Any]]:
        values = {"actor": "bare", "task_id": task_id, "lease": LEASE, "generation": None}
        return self._bound("claim", values)

    def complete(self, task_id: uuid.UUID, attempt: int | None) -> tuple[str, list[Any]]:
        values = {"actor": "bare", "task_id": task_id, "attempt": attempt}
        return self._bound("complete", {**values, "result": {}, "error": None})


class Minimal:
    """One short statement per step, no history rows or counters."""

    def create(self) -> tuple[str, list[Any]]:
        sql = f"""INSERT INTO tasks (owner_id, title, priority, status, kind, params)
                  VALUES ('{LEGACY_USER_ID}', 'bare', 'MEDIUM', 'NEW', 'simulate',
                          '{{"duration": 0}}')
                  RETURNING id, dispatch_generation"""
        return sql, []

    def publish(self, task_id: uuid.UUID, generation: int) -> tuple[str, list[Any]]:
        return "UPDATE tasks SET status = 'PENDING' WHERE id = $1 AND status = 'NEW'", [task_id]

    def claim(self, task_id: uuid.UUID) -> tuple[str, list[Any]]:
        sql = """UPDATE tasks SET status = 'IN_PROGRESS', started_at = now(),
                 attempts = attempts + 1
                 WHERE id = $1 AND status IN ('NEW', 'PENDING') RETURNING attempts"""
        return sql, [task_id]

    def complete(self, task_id: uuid.UUID, attempt: int | None) -> tuple[str, list[Any]]:
        sql = """UPDATE tasks SET status = 'COMPLETED', completed_at = now(), result = '{}'
                 WHERE id = $1 AND status = 'IN_PROGRESS' AND attempts = $2"""
        return sql, [task_id, attempt]


DESIGNS: dict[str, Statements] = {"service": Service(), "minimal": Minimal()}


async def run(db: Executor, step: tuple[str, list[Any]]) -> Any:
    sql, arguments = step
    return await db.fetchrow(sql, *arguments)


async def produce(
    dsn: str, amqp_url: str, queue: str, concurrency: int, seconds: float, design: Statements
) -> float:
    """Tasks per second: `concurrency` loops of insert, confirmed publish, mark published."""
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(queue, durable=True, arguments={"x-max-priority": 10})
    deadline = time.monotonic() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            row = await run(pool, design.create())
            body = json.dumps({"task_id": str(row["id"])}).encode()
            message = aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=5
            )
            await channel.default_exchange.publish(message, routing_key=queue)
            await run(pool, design.publish(row["id"], row["dispatch_generation"]))
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await connection.close()
    await pool.close()
    return done / elapsed


async def consume(
    dsn: str, amqp_url: str, queue: str, expected: int, prefetch: int, design: Statements
) -> float:
    """Tasks per second to drain `expected` messages: claim, finish, ack, `prefetch` at once."""
    pool = await asyncpg.create_pool(dsn, min_size=prefetch, max_size=prefetch)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    declared = await channel.declare_queue(queue, durable=True, arguments={"x-max-priority": 10})
    finished = asyncio.Event()
    done = 0
    started = time.monotonic()

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal done
        task_id = uuid.UUID(message.body.decode()[13:49])
        claimed = await run(pool, design.claim(task_id))
        await run(pool, design.complete(task_id, claimed and claimed["attempts"]))
        await message.ack()
        done += 1
        if done == expected:
            finished.set()

    await declared.consume(handle)
    await finished.wait()
    elapsed = time.monotonic() - started
    await connection.close()
    await pool.close()
    return expected / elapsed
