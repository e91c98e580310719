"""`make chaos`: a soak under failure. Submits N tasks while it SIGKILLs and restarts workers
and cuts the broker and the database through proxies; then tallies what became of them.

Exits non-zero if any accepted task was lost, any handler ran twice without a worker dying,
or the counters or the history disagree with the tasks.
Runs on a throwaway database and queue against the local PostgreSQL and RabbitMQ.
"""

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
import uuid
from collections import Counter

import httpx
from sqlalchemy import select, text

from shared.db.engine import create_engine
from shared.db.tables import tasks
from shared.domain.enums import TERMINAL_STATUSES, Role
from shared.messaging.topology import topology
from shared.settings import Settings
from tests.support.databases import alembic, create_database, drop_database
from tests.support.processes import Process, free_port, start_api, start_worker, wait_ready
from tests.support.proxy import TcpProxy, through
from tests.support.services import find_services, host_port
from tests.support.tasks import counts_by_status_and_priority
from tests.support.users import auth, make_user

WORKER_ENV = {"LEASE_SECONDS": "3", "WORKER_SHUTDOWN_TIMEOUT_SECONDS": "2"}
CHAOS_WINDOW_S = 300  # faults stop once every task settled, or after this long
SETTLE_DEADLINE_S = 120  # after the faults stop: lease expiry, reaper and relay need seconds


class Chaos:
    def __init__(self, settings: Settings, workers: int, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng
        self.broker = TcpProxy(*host_port(settings.amqp_url))
        self.db = TcpProxy(*host_port(settings.database_url))
        self.workers: list[Process] = []
        self.size = workers
        self.events: Counter[str] = Counter()

    async def start(self) -> None:
        await self.broker.start()
        await self.db.start()
        self.proxied = through(self.settings, broker=self.broker, db=self.db)
        self.workers = [start_worker(self.proxied, **WORKER_ENV) for _ in range(self.size)]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            action = self.rng.choice(["kill", "kill", "broker", "db"])
            self.events[action] += 1
            if action == "kill":
                victim = self.workers.pop(self.rng.randrange(len(self.workers)))
                victim.signal(signal.SIGKILL)
                victim.stop()
                self.workers.append(start_worker(self.proxied, **WORKER_ENV))
            else:
                proxy = self.broker if action == "broker" else self.db
                await proxy.cut()
                await asyncio.sleep(self.rng.uniform(0.5, 2.0))
                await proxy.restore()

    async def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        await self.broker.cut()
        await self.db.cut()


async def submit(base_url: str, key: str, count: int, rng: random.Random) -> list[uuid.UUID]:
    """Create `count` tasks, 16 at a time; a refused create (503 during a cut) is retried."""
    accepted: list[uuid.UUID] = []
    gate = asyncio.Semaphore(16)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        body = {"title": f"chaos {n}", "params": {"duration": round(rng.uniform(0, 0.3), 3)}}
        async with gate:
            while True:
                try:
                    response = await client.post("/api/v1/tasks", json=body)
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 201:
                    accepted.append(uuid.UUID(response.json()["id"]))
                    return
                await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=auth(key)) as client:
        creating = asyncio.gather(*(one(client, n) for n in range(count)))
        changing = asyncio.create_task(reprioritise(client, accepted, rng))
        await creating
        changing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await changing
    return accepted


# What the re-prioritiser did: a queued task answers 200, a running or finished one 409.
PRIORITY_CHANGES: Counter[str] = Counter()


async def reprioritise(
    client: httpx.AsyncClient, accepted: list[uuid.UUID], rng: random.Random
) -> None:
    """While tasks are created, give random accepted ones a new priority, ten a second."""
    while True:
        await asyncio.sleep(0.1)
        if not accepted:
            continue
        task_id = rng.choice(accepted)
        priority = rng.choice(["LOW", "MEDIUM", "HIGH"])
        try:
            response = await client.patch(f"/api/v1/tasks/{task_id}", json={"priority": priority})
        except httpx.TransportError:
            continue
        PRIORITY_CHANGES[str(response.status_code)] += 1


async def tally(settings: Settings, accepted: list[uuid.UUID], deadline_s: float) -> Counter[str]:
    engine = create_engine(settings)
    wanted = set(accepted)
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(tasks))).mappings().all()
            mine = [row for row in rows if row["id"] in wanted]
            settled = [row for row in mine if row["status"] in TERMINAL_STATUSES]
            if len(settled) == len(wanted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    finally:
        await engine.dispose()
    counts: Counter[str] = Counter(accepted=len(wanted))
    for row in mine:
        counts[row["status"].lower()] += 1
        # Every attempt beyond the first must be explained by a worker that died holding it.
        if row["attempts"] > 1 + row["lost_attempts"]:
            counts["run twice"] += 1
        if row["lost_attempts"]:
            counts["re-run after a lost lease"] += 1
    counts["lost"] = len(wanted) - len(settled)
    return counts


async def bookkeeping_errors(settings: Settings) -> Counter[str]:
    """Whether the counters still equal count(*), and every task's last history row its status."""
    engine = create_engine(settings)
    try:
        kept, counted = await counts_by_status_and_priority(engine)
        async with engine.connect() as conn:
            history_off = (await conn.execute(text(HISTORY_DISAGREES))).scalar_one()
    finally:
        await engine.dispose()
    return Counter(
        {
            "counters off": sum((kept - counted).values()) + sum((counted - kept).values()),
            "history off": int(history_off),
        }
    )


# Tasks whose latest history row does not end in the status the task is in.
HISTORY_DISAGREES = """
SELECT count(*) FROM tasks WHERE status IS DISTINCT FROM (
    SELECT to_status FROM task_events WHERE task_id = tasks.id ORDER BY id DESC LIMIT 1)
"""


async def main(count: int, workers: int, seed: int) -> int:
    rng = random.Random(seed)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with find_services() as services:
        name = f"taskq_chaos_{uuid.uuid4().hex[:8]}"
        database_url = await asyncio.to_thread(create_database, services.admin_database_url, name)
        settings = Settings(
            database_url=database_url,
            amqp_url=services.amqp_url,
            queue_name=name,
            publish_timeout_seconds=1,
        )
        chaos = Chaos(settings, workers, rng)
        api: Process | None = None
        try:
            await asyncio.to_thread(alembic, database_url, "upgrade", "head")
            await chaos.start()
            port = free_port()
            api = start_api(chaos.proxied, port)
            base_url = f"http://127.0.0.1:{port}"
            await wait_ready(api, base_url)
            stop = asyncio.Event()
            chaos_task = asyncio.create_task(chaos.run(stop))
            started = time.monotonic()
            accepted = await submit(base_url, await _admin_key(settings), count, rng)
            # Faults go on while the backlog drains, then stop; the rest must settle in time.
            await tally(settings, accepted, deadline_s=CHAOS_WINDOW_S)
            stop.set()
            await chaos_task
            counts = await tally(settings, accepted, deadline_s=SETTLE_DEADLINE_S)
            counts.update(await bookkeeping_errors(settings))
            elapsed_s = time.monotonic() - started
        finally:
            if api is not None:
                api.stop()
            await chaos.close()
            await asyncio.to_thread(drop_database, services.admin_database_url, name)
            await _delete_queues(settings)
    _report(counts, chaos.events, elapsed_s)
    unexplained = counts["re-run after a lost lease"] > 2 * chaos.events["kill"]
    broken = counts["counters off"] or counts["history off"]
    return 1 if counts["lost"] or counts["run twice"] or unexplained or broken else 0


async def _admin_key(settings: Settings) -> str:
    engine = create_engine(settings, pool_size=1)
    try:
        _, key = await make_user(engine, Role.ADMIN, "chaos")
    finally:
        await engine.dispose()
    return key


async def _delete_queues(settings: Settings) -> None:
    import aio_pika

    connection = await aio_pika.connect(settings.amqp_url)
    async with connection, connection.channel() as channel:
        for spec in topology(settings):
            await channel.queue_delete(spec.name)


def _report(counts: Counter[str], events: Counter[str], elapsed_s: float) -> None:
    keys = ["accepted", "completed", "failed", "cancelled", "lost", "run twice"]
    keys += ["counters off", "history off"]
    print(
        f"\nchaos: {elapsed_s:.0f}s, faults injected: worker SIGKILLs {events['kill']}, "
        f"broker cuts {events['broker']}, database cuts {events['db']}; priority changes "
        f"accepted {PRIORITY_CHANGES['200']}, refused (running or done) {PRIORITY_CHANGES['409']}"
    )
    # Each SIGKILL can cost at most WORKER_PREFETCH (2) running tasks a second run; more
    # re-runs than that would mean leases expired under a live worker.
    print(
        f"re-runs after a lost lease: {counts['re-run after a lost lease']} "
        f"(at most {2 * events['kill']} explained by the SIGKILLs)"
    )
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    print("| " + " | ".join(str(counts[key]) for key in keys) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"chaos: {args.tasks} tasks, {args.workers} workers, seed {args.seed}", flush=True)
    sys.exit(asyncio.run(main(args.tasks, args.workers, args.seed)))
