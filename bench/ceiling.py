"""PostgreSQL alone: how fast can any consumer claim and complete tasks on this machine?

The drain targets compare one worker process with the bare consumer and with Celery, all
running the same claim and complete statements. This measures those statements with
nothing around them (no broker, no handler, asyncpg only), two tasks in flight, so the
ceiling the three share is a number rather than a guess:

- `pairs`: each of 2 connections claims and completes one task after another, as every
  consumer at prefetch 2 does (`bench.bare.Service`, the service's own statements);
- `batched`: 1 connection claims 2 tasks in one statement and completes both in one, so
  half the statements and half the commits for the same rows. The statements are written
  out here for the experiment (the service has no many-task claim): they do what the
  service's do, row for row (the task, its history row, two counter rows).

`python -m bench.ceiling` (about a minute): alternates the two, three times, on a
throwaway database of the local PostgreSQL.
"""

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg

from bench import bare
from tests.support.databases import alembic, create_database, drop_database, plain_dsn
from tests.support.services import find_services

TASKS = 3000
ROUNDS = 3
STATEMENTS = bare.Service()
_ROW = """id, owner_id, title, description, priority, status, kind, params, result, error,
    attempts, cancel_requested, max_retries, timeout_seconds, lost_attempts,
    lease_expires_at, dispatch_generation, worker_id, created_at, updated_at, started_at,
    completed_at"""
# As the write path's counters: minus one on the old (status, priority), plus one on the
# new, summed per counter row, locked in key order.
_COUNTED = """counted AS (
    INSERT INTO task_counts (status, owner_id, priority, shard, n)
    SELECT status, owner_id, priority, shard, sum(n)::int FROM (
        SELECT from_status AS status, owner_id, from_priority AS priority,
               get_byte(uuid_send(id), 15) % 16 AS shard, -1 AS n FROM changed
        UNION ALL
        SELECT status, owner_id, priority, get_byte(uuid_send(id), 15) % 16, 1 FROM changed
    ) AS deltas
    GROUP BY status, owner_id, priority, shard
    ORDER BY status, priority, owner_id, shard
    ON CONFLICT (owner_id, status, priority, shard) DO UPDATE SET n = task_counts.n + excluded.n)"""
CLAIM_MANY = f"""
WITH before AS (
    SELECT tasks.id, tasks.status, tasks.priority FROM tasks
    JOIN unnest($1::uuid[]) AS input(id) ON tasks.id = input.id
    WHERE tasks.status IN ('NEW', 'PENDING') AND NOT tasks.cancel_requested
    ORDER BY tasks.id FOR UPDATE OF tasks),
changed AS (
    UPDATE tasks SET status = 'IN_PROGRESS', attempts = tasks.attempts + 1,
        lease_expires_at = now() + interval '3 seconds', worker_id = 'ceiling',
        updated_at = now(), started_at = now()
    FROM before WHERE tasks.id = before.id
        AND tasks.status IN ('NEW', 'PENDING') AND NOT tasks.cancel_requested
    RETURNING tasks.*, before.status AS from_status, before.priority AS from_priority),
event AS (
    INSERT INTO task_events (task_id, from_status, to_status, attempt, worker_id, reason)
    SELECT id, from_status, status, attempts, 'ceiling', 'claimed' FROM changed),
{_COUNTED}
SELECT {_ROW} FROM changed"""
COMPLETE_MANY = f"""
WITH changed AS (
    UPDATE tasks SET status = 'COMPLETED', result = input.result, error = NULL,
        lease_expires_at = NULL, updated_at = now(), completed_at = now()
    FROM unnest($1::uuid[], $2::int[], $3::jsonb[]) AS input(id, attempt, result)
    WHERE tasks.id = input.id AND tasks.status = 'IN_PROGRESS'
        AND tasks.attempts = input.attempt
    RETURNING tasks.*, 'IN_PROGRESS'::varchar AS from_status, tasks.priority AS from_priority),
event AS (
    INSERT INTO task_events (task_id, from_status, to_status, attempt, worker_id, reason)
    SELECT id, from_status, status, attempts, 'ceiling', 'completed' FROM changed),
{_COUNTED}
SELECT {_ROW} FROM changed"""


async def _encode_json(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def fill(pool: asyncpg.Pool) -> list[uuid.UUID]:
    """TASKS pending tasks, made by the service's create and publish statements."""
    ids = []
    async with pool.acquire() as conn:
        for _ in range(TASKS):
            row = await bare.run(conn, STATEMENTS.create())
            await bare.run(conn, STATEMENTS.publish(row["id"], row["dispatch_generation"]))
            ids.append(row["id"])
    return ids


async def pairs(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> float:
    """Tasks/s: 2 connections, each claiming and completing one task at a time."""
    waiting = iter(ids)

    async def one_at_a_time() -> None:
        async with pool.acquire() as conn:
            for task_id in waiting:
                claimed = await bare.run(conn, STATEMENTS.claim(task_id))
                await bare.run(conn, STATEMENTS.complete(task_id, claimed["attempts"]))

    started = time.perf_counter()
    await asyncio.gather(one_at_a_time(), one_at_a_time())
    return len(ids) / (time.perf_counter() - started)


async def batched(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> float:
    """Tasks/s: 1 connection claiming 2 tasks per statement, then completing both."""
    async with pool.acquire() as conn:
        started = time.perf_counter()
        for at in range(0, len(ids), 2):
            claimed = await conn.fetch(CLAIM_MANY, ids[at : at + 2])
            done = [row["id"] for row in claimed]
            attempts = [row["attempts"] for row in claimed]
            await conn.fetch(COMPLETE_MANY, done, attempts, [{}] * len(done))
        return len(ids) / (time.perf_counter() - started)


async def measure(dsn: str) -> dict[str, list[float]]:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2, init=_encode_json)
    results: dict[str, list[float]] = {"pairs": [], "batched": []}
    try:
        for _ in range(ROUNDS):
            for name, way in (("pairs", pairs), ("batched", batched)):
                results[name].append(await way(pool, await fill(pool)))
    finally:
        await pool.close()
    return results


def main() -> None:
    with find_services() as services:
        name = f"taskq_ceiling_{uuid.uuid4().hex[:8]}"
        url = create_database(services.admin_database_url, name)
        try:
            alembic(url, "upgrade", "head")
            results: Any = asyncio.run(measure(plain_dsn(url)))
        finally:
            drop_database(services.admin_database_url, name)
    for name, rates in results.items():
        print(f"{name}: " + ", ".join(f"{rate:.0f}" for rate in rates) + " tasks/s")


if __name__ == "__main__":
    main()
