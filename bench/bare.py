"""The bare design: the statements and broker operations a task needs, and nothing else.

One process, asyncpg and aio-pika directly: insert, confirmed publish, mark pending (the
producer); claim, finish, ack at prefetch 2 (the consumer). It is the yardstick the project
is measured against in the same run.
"""

import asyncio
import json
import time
import uuid

import aio_pika
import asyncpg

from shared.db.tables import LEGACY_USER_ID

# Owned by the `legacy` user every migrated database has.
INSERT = f"""INSERT INTO tasks (owner_id, title, priority, status, kind, params)
             VALUES ('{LEGACY_USER_ID}', 'bare', 'MEDIUM', 'NEW', 'simulate', '{{"duration": 0}}')
             RETURNING id"""
PUBLISHED = "UPDATE tasks SET status = 'PENDING' WHERE id = $1 AND status = 'NEW'"
CLAIM = """UPDATE tasks SET status = 'IN_PROGRESS', started_at = now(), attempts = attempts + 1
           WHERE id = $1 AND status IN ('NEW', 'PENDING') RETURNING attempts"""
FINISH = """UPDATE tasks SET status = 'COMPLETED', completed_at = now(), result = '{}'
            WHERE id = $1 AND status = 'IN_PROGRESS' AND attempts = $2"""


async def produce(dsn: str, amqp_url: str, queue: str, concurrency: int, seconds: float) -> float:
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
            task_id = await pool.fetchval(INSERT)
            body = json.dumps({"task_id": str(task_id)}).encode()
            message = aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=5
            )
            await channel.default_exchange.publish(message, routing_key=queue)
            await pool.execute(PUBLISHED, task_id)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await connection.close()
    await pool.close()
    return done / elapsed


async def consume(dsn: str, amqp_url: str, queue: str, expected: int, prefetch: int) -> float:
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
        attempts = await pool.fetchval(CLAIM, task_id)
        await pool.execute(FINISH, task_id, attempts)
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
