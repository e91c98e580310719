"""The Celery peer: the service's claim and finish statements, run as a Celery task.

What a team would otherwise build the service with: Celery on the same RabbitMQ, a prefork
worker `-c 2 --prefetch-multiplier 1` with `acks_late` (two tasks in flight, acked after
they ran, as the service's worker at prefetch 2), and a task that runs the service's claim
and finish (history rows and counters included, `bench.bare.Service`) in PostgreSQL.
`drain` fills its queue, lets a real worker process empty it, and measures tasks/s as the
service's drain is measured.
"""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
from celery import Celery
from psycopg.rows import DictRow, dict_row

from bench import bare

ROOT = Path(__file__).resolve().parents[1]
# The worker is another process: it learns where to connect from its environment.
BROKER_ENV = "CELERY_PEER_BROKER_URL"
DSN_ENV = "CELERY_PEER_DSN"
TASK = "bench.celery_peer.finish"

app = Celery("bench.celery_peer", broker=os.environ.get(BROKER_ENV), set_as_current=False)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,  # no result backend: the task's result is its row
)


STATEMENTS = bare.Service()
# One connection per worker process, opened by its first task: the prefork pool forks its
# children before any task runs, so no connection is shared across a fork.
# Raw cursors take PostgreSQL's own $n placeholders, as the statements are written.
_connection: psycopg.Connection[DictRow] | None = None


def finish(task_id: str) -> None:
    """Claim and finish one task, each statement its own transaction as in bare.consume."""
    global _connection
    if _connection is None:
        _connection = psycopg.connect(
            os.environ[DSN_ENV],
            autocommit=True,
            cursor_factory=psycopg.RawCursor,
            row_factory=dict_row,
        )
    task = uuid.UUID(task_id)
    row = _execute(_connection, STATEMENTS.claim(task))
    # As bare.consume: a task claimed already (a redelivery) finishes nothing.
    _execute(_connection, STATEMENTS.complete(task, row["attempts"] if row else None))


def _execute(conn: "psycopg.Connection[DictRow]", step: tuple[str, list[Any]]) -> DictRow | None:
    sql, arguments = step
    return conn.execute(sql, arguments).fetchone()


app.task(name=TASK)(finish)


async def drain(
    dsn: str, amqp_url: str, queue: str, expected: int, timeout_s: float = 600
) -> float:
    """Tasks per second a Celery worker finishes a backlog of `expected` tasks at."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = [await bare.run(conn, STATEMENTS.create()) for _ in range(expected)]
        ids = [row["id"] for row in rows]
        await asyncio.to_thread(_publish, amqp_url, queue, ids)
        for row in rows:
            await bare.run(conn, STATEMENTS.publish(row["id"], row["dispatch_generation"]))
        worker = _start_worker(dsn, amqp_url, queue)
        try:
            deadline = time.monotonic() + timeout_s
            while await _completed(conn) < expected:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the Celery worker did not finish {expected} tasks")
                await asyncio.sleep(0.2)
        finally:
            _stop(worker)
        span = await conn.fetchrow(
            "SELECT min(started_at) AS a, max(completed_at) AS b FROM tasks "
            "WHERE status = 'COMPLETED'"
        )
        assert span is not None
        return float(expected / (span["b"] - span["a"]).total_seconds())
    finally:
        await conn.close()
        await asyncio.to_thread(_delete_queue, amqp_url, queue)


async def _completed(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM tasks WHERE status = 'COMPLETED'"))


def _publish(amqp_url: str, queue: str, ids: list[uuid.UUID]) -> None:
    """One Celery message per task, as `finish.delay(task_id)` would send it."""
    with app.connection_for_write(amqp_url) as connection:
        producer = app.amqp.Producer(connection)
        for task_id in ids:
            app.send_task(TASK, args=(str(task_id),), queue=queue, producer=producer)


def _start_worker(dsn: str, amqp_url: str, queue: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker"]
    command += ["-c", "2", "--prefetch-multiplier", "1", "--pool", "prefork"]
    command += ["-Q", queue, "--loglevel", "WARNING"]
    env = {**os.environ, BROKER_ENV: amqp_url, DSN_ENV: dsn}
    log = tempfile.NamedTemporaryFile(prefix="celery-peer-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"celery peer: worker output in {log.name}", file=sys.stderr, flush=True)
    # Its own process group: a hung worker is killed with its pool children.
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(worker: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM is Celery's warm shutdown (running tasks finish); SIGKILL if it hangs."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _delete_queue(amqp_url: str, queue: str) -> None:
    """The queue and the direct exchange of the same name that Celery declared for it."""
    with app.connection_for_write(amqp_url) as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)
