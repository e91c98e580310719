"""`make chaos`: a soak under failure. Submits N tasks while it SIGKILLs and restarts workers
and notifiers, cuts the broker and the database through proxies and takes the webhook
receiver down; then tallies what became of the tasks and of their notifications.

Exits non-zero if any accepted task was lost, any handler ran twice without a worker dying,
the counters or the history disagree with the tasks, any finished task's notification never
arrived or arrived badly signed, or one arrived twice without a notifier ever dying.
Runs on a throwaway database and queue against the local PostgreSQL and RabbitMQ.
"""

import argparse
import asyncio
import contextlib
import logging
import random
import secrets
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
from sqlalchemy import select, text

from scripts.chaos_notifications import HOOK_STATUSES, Fault, Inbox
from shared.db.engine import create_engine
from shared.db.tables import tasks
from shared.domain.enums import TERMINAL_STATUSES, Role
from shared.messaging.topology import topology
from shared.settings import Settings
from tests.support.databases import alembic, create_database, drop_database
from tests.support.processes import (
    Process,
    free_port,
    start_api,
    start_notifier,
    start_worker,
    wait_ready,
)
from tests.support.proxy import TcpProxy, through
from tests.support.receiver import Receiver
from tests.support.services import find_services, host_port
from tests.support.tasks import counts_by_status_and_priority
from tests.support.users import auth, make_user

WORKER_ENV = {"LEASE_SECONDS": "3", "WORKER_SHUTDOWN_TIMEOUT_SECONDS": "2"}
# The API and the notifiers share a key made for the run; the receiver is on loopback.
HOOK_ENV = {"SECRET_KEY": secrets.token_urlsafe(32), "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}
# Retries in seconds, not hours, and never given up within a soak: a receiver that was down
# is tried again within 2 s of its return; a dead notifier's lease runs out after 2 + 5 s.
NOTIFIER_ENV = {
    **HOOK_ENV,
    "NOTIFIER_POLL_SECONDS": "0.1",
    "NOTIFY_RETRY_SECONDS": "0.5,1,2",
    "NOTIFY_RETRY_REPEAT_SECONDS": "2",
    "NOTIFY_GIVE_UP_SECONDS": "600",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
}
# kill: a worker; notifier: a notifier; broker, db: a cut; receiver: the webhook receiver down.
FAULTS = ["kill", "kill", "notifier", "broker", "db", "receiver"]
CHAOS_WINDOW_S = 300  # faults stop once every task settled, or after this long
SETTLE_DEADLINE_S = 120  # after the faults stop: lease expiry, reaper and relay need seconds
# Notifications lag their tasks by a poll or two; after a fault, by a lease (7 s) or a retry.
NOTIFY_WINDOW_S = 60  # faults go on this long at most while they drain
NOTIFY_DEADLINE_S = 60  # after the faults stop


class Chaos:
    def __init__(
        self,
        settings: Settings,
        rng: random.Random,
        receiver: Receiver,
        *,
        workers: int,
        notifiers: int,
    ) -> None:
        self.settings = settings
        self.rng = rng
        self.receiver = receiver
        self.broker = TcpProxy(*host_port(settings.amqp_url))
        self.db = TcpProxy(*host_port(settings.database_url))
        self.workers: list[Process] = []
        self.notifiers: list[Process] = []
        self.size = (workers, notifiers)
        self.events: Counter[str] = Counter()
        self.faults: list[Fault] = []

    async def start(self) -> None:
        await self.broker.start()
        await self.db.start()
        # Notifiers too reach the database through its proxy: its cuts hit them as well.
        self.proxied = through(self.settings, broker=self.broker, db=self.db)
        self.workers = [self._worker() for _ in range(self.size[0])]
        self.notifiers = [self._notifier() for _ in range(self.size[1])]

    def _worker(self) -> Process:
        return start_worker(self.proxied, **WORKER_ENV)

    def _notifier(self) -> Process:
        return start_notifier(self.proxied, **NOTIFIER_ENV)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            action = self.rng.choice(FAULTS)
            self.events[action] += 1
            start = time.monotonic()
            await self._inject(action)
            self.faults.append(Fault(action, start, time.monotonic()))

    async def _inject(self, action: str) -> None:
        if action == "kill":
            self._kill(self.workers, self._worker)
        elif action == "notifier":
            self._kill(self.notifiers, self._notifier)
        elif action == "receiver":
            await self.receiver.stop()
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            await self.receiver.start()
        else:
            proxy = self.broker if action == "broker" else self.db
            await proxy.cut()
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            await proxy.restore()

    def _kill(self, processes: list[Process], replacement: Callable[[], Process]) -> None:
        """SIGKILL one of `processes` at random, and start another in its place."""
        victim = processes.pop(self.rng.randrange(len(processes)))
        victim.signal(signal.SIGKILL)
        victim.stop()
        processes.append(replacement())

    async def close(self) -> None:
        for process in self.workers + self.notifiers:
            process.stop()
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
    # A create that committed but whose answer was lost (and was made again) is no one's.
    counts["unanswered creates"] = len(rows) - len(mine)
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


async def main(count: int, workers: int, notifiers: int, seed: int) -> int:
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
        inbox = Inbox()
        chaos = Chaos(settings, rng, inbox.receiver, workers=workers, notifiers=notifiers)
        api: Process | None = None
        try:
            await asyncio.to_thread(alembic, database_url, "upgrade", "head")
            await chaos.start()
            port = free_port()
            api = start_api(chaos.proxied, port, **HOOK_ENV)
            base_url = f"http://127.0.0.1:{port}"
            await wait_ready(api, base_url)
            counts, notes, elapsed_s = await soak(settings, chaos, inbox, base_url, count, rng)
        finally:
            if api is not None:
                api.stop()
            await chaos.close()
            await inbox.receiver.stop()
            await asyncio.to_thread(drop_database, services.admin_database_url, name)
            await _delete_queues(settings)
    _report(counts, notes, chaos.events, elapsed_s)
    return _verdict(counts, notes, chaos.events)


async def soak(
    settings: Settings, chaos: Chaos, inbox: Inbox, base_url: str, count: int, rng: random.Random
) -> tuple[Counter[str], Counter[str], float]:
    """Subscribe, submit under fire, stop the faults once all drained, tally what settled."""
    key = await _admin_key(settings)
    await inbox.subscribe(base_url, key)
    checking = asyncio.create_task(inbox.check_signatures())
    stop = asyncio.Event()
    chaos_task = asyncio.create_task(chaos.run(stop))
    started = time.monotonic()
    accepted = await submit(base_url, key, count, rng)
    # Faults go on while the backlog drains (the tasks, then their notifications), then
    # stop; the rest must settle in time.
    await tally(settings, accepted, deadline_s=CHAOS_WINDOW_S)
    await inbox.wait_notified(settings, accepted, deadline_s=NOTIFY_WINDOW_S)
    stop.set()
    await chaos_task
    counts = await tally(settings, accepted, deadline_s=SETTLE_DEADLINE_S)
    counts.update(await bookkeeping_errors(settings))
    outbox = await inbox.wait_notified(settings, accepted, deadline_s=NOTIFY_DEADLINE_S)
    checking.cancel()
    notes = inbox.tally(outbox, chaos.faults)
    notes["finished"] = sum(counts[status.lower()] for status in HOOK_STATUSES)
    return counts, notes, time.monotonic() - started


def _verdict(counts: Counter[str], notes: Counter[str], events: Counter[str]) -> int:
    unexplained = counts["re-run after a lost lease"] > 2 * events["kill"]
    broken = counts["counters off"] or counts["history off"]
    # A delivery arrives twice only if its outcome went unrecorded; without a notifier
    # ever dying, that is a bug.
    twice = notes["duplicates"] and not events["notifier"]
    unnotified = notes["missing"] or notes["notified twice"] or notes["bad signatures"] or twice
    return 1 if counts["lost"] or counts["run twice"] or unexplained or broken or unnotified else 0


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


TASK_COLUMNS = ["accepted", "completed", "failed", "cancelled", "lost", "run twice"]
TASK_COLUMNS += ["counters off", "history off"]
NOTIFICATION_COLUMNS = ["finished", "expected", "received", "missing", "duplicates"]
NOTIFICATION_COLUMNS += ["notified twice", "of other tasks", "bad signatures"]
CAUSES = {
    "notifier": "a notifier SIGKILL",
    "db": "a database cut",
    "receiver": "receiver down",
    "nothing": "no fault (unexplained)",
}


def _report(
    counts: Counter[str], notes: Counter[str], events: Counter[str], elapsed_s: float
) -> None:
    print(
        f"\nchaos: {elapsed_s:.0f}s, faults injected: worker SIGKILLs {events['kill']}, "
        f"notifier SIGKILLs {events['notifier']}, broker cuts {events['broker']}, "
        f"database cuts {events['db']}, receiver down {events['receiver']}; priority changes "
        f"accepted {PRIORITY_CHANGES['200']}, refused (running or done) {PRIORITY_CHANGES['409']}"
    )
    # Each SIGKILL can cost at most WORKER_PREFETCH (2) running tasks a second run; more
    # re-runs than that would mean leases expired under a live worker.
    print(
        f"re-runs after a lost lease: {counts['re-run after a lost lease']} "
        f"(at most {2 * events['kill']} explained by the SIGKILLs); tasks created whose "
        f"answer was lost: {counts['unanswered creates']}"
    )
    causes = ", ".join(
        f"after {label} {notes[f'duplicate after {kind}']}" for kind, label in CAUSES.items()
    )
    print(f"webhook deliveries received twice: {notes['duplicates']} ({causes})")
    _table(counts, TASK_COLUMNS)
    _table(notes, NOTIFICATION_COLUMNS)


def _table(counts: Counter[str], keys: list[str]) -> None:
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    print("| " + " | ".join(str(counts[key]) for key in keys) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--notifiers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(
        f"chaos: {args.tasks} tasks, {args.workers} workers, {args.notifiers} notifiers, "
        f"seed {args.seed}",
        flush=True,
    )
    sys.exit(asyncio.run(main(args.tasks, args.workers, args.notifiers, args.seed)))
