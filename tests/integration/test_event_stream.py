"""GET /api/v1/events against real API processes: filters, scoping, resuming, the order of
late commits, fan-out across processes, slow clients, revoked keys and keep-alives."""

import asyncio
import contextlib
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.engine import connect, in_transaction
from shared.db.events import EventRepository
from shared.db.tables import task_events
from shared.db.tasks import TaskRepository
from shared.domain import transitions as t
from shared.domain.enums import Role, TaskPriority
from shared.domain.errors import NotAuthenticated, UnknownEventId
from shared.settings import Settings
from tests.support.metrics import served_metric
from tests.support.processes import Process, StartWorker, free_port, start_api, wait_ready
from tests.support.sse import Message, SseStream, open_stream, refusal
from tests.support.tasks import TEST_OWNER, URL, make_task
from tests.support.users import auth, make_user
from tests.support.waiting import wait_until

# The shared API process: quick polls (the test's own writes send no NOTIFY), quick
# keep-alives and credential checks; its relay stays out of the way of tasks made here.
POLL_S = 0.1
KEEPALIVE_S = 0.3
RECHECK_S = 0.5
AUTH_CACHE_S = 0.5
API_ENV = {
    "EVENTS_POLL_SECONDS": str(POLL_S),
    "STREAM_KEEPALIVE_SECONDS": str(KEEPALIVE_S),
    "STREAM_RECHECK_SECONDS": str(RECHECK_S),
    "RELAY_INTERVAL_SECONDS": "60",
    "AUTH_CACHE_SECONDS": str(AUTH_CACHE_S),
}
OPEN = "taskq_api_streams_open"
DROPPED = "taskq_api_streams_dropped_total"


@contextlib.asynccontextmanager
async def api_processes(settings: Settings, count: int, **env: str) -> AsyncIterator[list[str]]:
    """`count` API processes on the test database, ready; their base URLs."""
    ports = [free_port() for _ in range(count)]
    processes: list[Process] = [start_api(settings, port, **env) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        await asyncio.gather(*(wait_ready(p, u) for p, u in zip(processes, urls, strict=True)))
        yield urls
    finally:
        for process in processes:
            process.stop()


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[str]:
    async with api_processes(settings, 1, **API_ENV) as [url]:
        yield url


@pytest.fixture
async def admin_key(engine: AsyncEngine) -> str:
    _, key = await make_user(engine, Role.ADMIN)
    return key


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with connect(engine) as conn:
        yield conn


async def history(engine: AsyncEngine) -> list[int]:
    """Every history row's id, in the stream's order."""
    async with connect(engine) as conn:
        rows = await conn.execute(
            select(task_events.c.id).order_by(task_events.c.xact_id, task_events.c.id)
        )
        return [int(event_id) for event_id in rows.scalars()]


async def last_event_of(conn: AsyncConnection, task_id: uuid.UUID) -> int:
    """The id of the task's newest history row (as this connection sees it)."""
    found = await conn.execute(
        select(task_events.c.id)
        .where(task_events.c.task_id == task_id)
        .order_by(task_events.c.id.desc())
        .limit(1)
    )
    return int(found.scalar_one())


def ids(messages: list[Message]) -> list[int]:
    return [message.event_id for message in messages]


def is_event(event_id: int) -> Callable[[Message], bool]:
    return lambda message: message.event_id == event_id


async def load(conn: AsyncConnection, task_id: uuid.UUID, count: int, reason: str = "load") -> None:
    """`count` history rows for one task in one statement: load, not a real transition."""
    await conn.execute(
        text(
            "INSERT INTO task_events (task_id, from_status, to_status, attempt, reason) "
            "SELECT :task_id, 'NEW', 'NEW', 0, :reason FROM generate_series(1, :count)"
        ),
        {"task_id": task_id, "count": count, "reason": reason},
    )


# 1. Filters


async def test_task_id_and_status_filters_deliver_exactly_the_matching_events(
    api: str, admin_key: str, engine: AsyncEngine, conn: AsyncConnection
) -> None:
    repo = TaskRepository(conn)
    a, b, c = [await make_task(repo, title=title) for title in "abc"]
    created = await last_event_of(conn, c.id)
    by_task = {"task_id": [str(a.id), str(c.id)]}
    by_status = {"status": ["IN_PROGRESS", "COMPLETED"]}
    both = {"task_id": [str(a.id)], "status": ["COMPLETED"]}
    async with (
        open_stream(api, admin_key, last_event_id=created) as everything,
        open_stream(api, admin_key, params=by_task, last_event_id=created) as tasks_a_c,
        open_stream(api, admin_key, params=by_status, last_event_id=created) as to_status,
        open_stream(api, admin_key, params=both, last_event_id=created) as a_completed,
    ):
        await repo.claim(b.id, lease_s=30)  # b: neither filter's task, but to IN_PROGRESS
        await repo.claim(a.id, lease_s=30)
        await repo.cancel(c.id)
        await repo.finish(b.id, transition=t.FAIL, attempt=1, error="boom")
        await repo.finish(a.id, transition=t.COMPLETE, attempt=1, result={"n": 1})
        last = await last_event_of(conn, a.id)  # every filter admits it: each stream's end

        got = {
            name: ids(await stream.until(is_event(last)))
            for name, stream in {
                "everything": everything,
                "tasks_a_c": tasks_a_c,
                "to_status": to_status,
                "a_completed": a_completed,
            }.items()
        }

    async with connect(engine) as read:
        rows = (
            await read.execute(
                select(task_events.c.id, task_events.c.task_id, task_events.c.to_status)
                .where(task_events.c.id > created)
                .order_by(task_events.c.xact_id, task_events.c.id)
            )
        ).all()
    assert got == {
        "everything": [row.id for row in rows],
        "tasks_a_c": [row.id for row in rows if row.task_id in (a.id, c.id)],
        "to_status": [row.id for row in rows if row.to_status in ("IN_PROGRESS", "COMPLETED")],
        "a_completed": [
            row.id for row in rows if (row.task_id, row.to_status) == (a.id, "COMPLETED")
        ],
    }
    assert len(got["everything"]) == 5 and len(got["tasks_a_c"]) == 3
    # The same filters on a stream's backlog (read from the database, not the hub).
    for name, params in {"tasks_a_c": by_task, "to_status": by_status, "a_completed": both}.items():
        async with open_stream(api, admin_key, params=params, last_event_id=created) as again:
            assert ids(await again.until(is_event(last))) == got[name], name


async def test_an_event_message_carries_the_change_and_the_tasks_summary(
    api: str, admin_key: str, conn: AsyncConnection
) -> None:
    repo = TaskRepository(conn, worker_id="w-1")
    task = await make_task(repo, title="summarised")
    created = await last_event_of(conn, task.id)
    wanted = {"task_id": [str(task.id)]}
    async with open_stream(api, admin_key, params=wanted, last_event_id=created) as stream:
        claimed = await repo.claim(task.id, lease_s=30)
        message = await stream.next()

    assert claimed is not None
    assert message.event == "task"
    body = message.json
    assert body["id"] == message.event_id == await last_event_of(conn, task.id)
    assert {k: v for k, v in body.items() if k not in ("id", "at", "task")} == {
        "task_id": str(task.id),
        "from": "NEW",
        "to": "IN_PROGRESS",
        "attempt": 1,
        "reason": None,
        "worker_id": "w-1",
    }
    assert datetime.fromisoformat(body["at"]).tzinfo is not None
    assert body["task"] == {
        "id": str(task.id),
        "owner_id": str(TEST_OWNER),
        "title": "summarised",
        "priority": "MEDIUM",
        "status": "IN_PROGRESS",
        "kind": "simulate",
        "created_at": task.created_at.isoformat(),
    }


# 2. Scoping


async def test_a_members_stream_carries_only_their_own_tasks_and_an_admins_everyones(
    api: str, admin_key: str, engine: AsyncEngine
) -> None:
    alice, alice_key = await make_user(engine, Role.MEMBER, "alice")
    bob, bob_key = await make_user(engine, Role.MEMBER, "bob")
    async with (
        httpx.AsyncClient(base_url=api, headers=auth(alice_key)) as as_alice,
        httpx.AsyncClient(base_url=api, headers=auth(bob_key)) as as_bob,
        open_stream(api, alice_key) as alices,
        open_stream(api, bob_key) as bobs,
        open_stream(api, admin_key) as admins,
    ):

        async def create(client: httpx.AsyncClient) -> str:
            response = await client.post(URL, json={"title": "mine"})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        async def cancel(client: httpx.AsyncClient, task_id: str) -> int:
            response = await client.post(f"{URL}/{task_id}/cancel")
            assert response.status_code == 200, response.text
            events = (await client.get(f"{URL}/{task_id}/events")).json()["items"]
            assert events[-1]["to_status"] == "CANCELLED"
            return int(events[-1]["id"])

        # Interleaved, so each member's stream has the other's events to leave out.
        alice_task = await create(as_alice)
        bob_task = await create(as_bob)
        alice_last = await cancel(as_alice, alice_task)
        bob_last = await cancel(as_bob, bob_task)

        alice_got = await alices.until(is_event(alice_last))
        bob_got = await bobs.until(is_event(bob_last))
        admin_got = await admins.until(is_event(bob_last))

    assert {m.json["task"]["owner_id"] for m in alice_got} == {str(alice.id)}
    assert {m.json["task"]["owner_id"] for m in bob_got} == {str(bob.id)}
    everything = await history(engine)
    assert ids(admin_got) == everything[: everything.index(bob_last) + 1]
    assert ids(alice_got) == [m.event_id for m in admin_got if m.json["task_id"] == alice_task]
    assert ids(bob_got) == [m.event_id for m in admin_got if m.json["task_id"] == bob_task]
    assert len(ids(alice_got)) >= 2 and len(ids(bob_got)) >= 2  # created ... cancelled


async def test_a_stream_without_a_valid_key_is_refused_with_a_401_json_answer(api: str) -> None:
    for headers in ({}, auth("tq_" + "A" * 43), auth("not even a key")):
        response = await refusal(api, headers)

        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": NotAuthenticated().args[0]}


# 3. Resuming with Last-Event-ID


async def test_a_resumed_stream_gets_every_event_after_its_last_id_once_then_live_ones(
    api: str, admin_key: str, engine: AsyncEngine, conn: AsyncConnection
) -> None:
    repo = TaskRepository(conn)
    async with open_stream(api, admin_key) as watcher:
        async with open_stream(api, admin_key) as first:
            tasks = [await make_task(repo) for _ in range(3)]
            await repo.claim(tasks[0].id, lease_s=30)
            seen = await first.take(2)  # two more were sent, never read: the client goes
        last_seen = seen[-1].event_id
        # While disconnected: more than one page (500 rows) of backlog, then a transition.
        await load(conn, tasks[1].id, 1200)
        await repo.claim(tasks[2].id, lease_s=30)
        # Once the hub is past them all, the resumed stream reads them from the database.
        await watcher.until(is_event(await last_event_of(conn, tasks[2].id)), timeout_s=10)
    everything = await history(engine)
    missed = everything[everything.index(last_seen) + 1 :]

    async with open_stream(api, admin_key, last_event_id=last_seen) as resumed:
        backlog = await resumed.take(len(missed), timeout_s=10)
        await repo.finish(tasks[0].id, transition=t.COMPLETE, attempt=1)
        live = await resumed.next()

    assert ids(seen) == everything[:2]
    assert ids(backlog) == missed  # in order: none skipped, none repeated
    assert len(missed) == 2 + 1200 + 1
    assert live.event_id == await last_event_of(conn, tasks[0].id)
    assert live.json["to"] == "COMPLETED"


async def test_last_event_id_0_replays_the_whole_history_then_live_events(
    api: str, admin_key: str, engine: AsyncEngine, conn: AsyncConnection
) -> None:
    repo = TaskRepository(conn)
    task = await make_task(repo)
    await repo.claim(task.id, lease_s=30)
    await make_task(repo)
    everything = await history(engine)

    async with open_stream(api, admin_key, last_event_id=0) as stream:
        replayed = await stream.take(len(everything))
        await repo.finish(task.id, transition=t.FAIL, attempt=1, error="boom")
        live = await stream.next()

    assert ids(replayed) == everything and len(everything) == 3
    assert live.event_id == await last_event_of(conn, task.id)


async def test_an_unknown_last_event_id_is_refused_with_a_400_json_detail(
    api: str, admin_key: str, conn: AsyncConnection
) -> None:
    task = await make_task(TaskRepository(conn))
    unknown = await last_event_of(conn, task.id) + 1_000_000

    response = await refusal(api, {**auth(admin_key), "Last-Event-ID": str(unknown)})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": UnknownEventId().args[0]}


# 4. A row whose id was allocated first but whose transaction commits last


async def test_a_row_committed_after_a_higher_id_is_held_back_until_then_and_never_skipped(
    engine: AsyncEngine, conn: AsyncConnection
) -> None:
    repo = TaskRepository(conn)
    # Of different priorities: their claims then move different counter rows, and the
    # second does not wait for the first's transaction.
    first = await make_task(repo, priority=TaskPriority.HIGH)
    second = await make_task(repo, priority=TaskPriority.LOW)
    events = EventRepository(conn)
    before = await events.position_of(await last_event_of(conn, second.id))
    assert before is not None

    async with connect(engine) as holder, in_transaction(holder) as tx:
        assert await TaskRepository(tx).claim(first.id, lease_s=30) is not None
        low = await last_event_of(tx, first.id)  # its id is allocated, not committed
        assert await repo.claim(second.id, lease_s=30) is not None
        high = await last_event_of(conn, second.id)  # committed
        assert low < high

        # A reader going by id alone would take `high` now, and then wait for ids above it.
        assert await visible_ids_after(conn, before[1]) == [high]
        held_back = await events.settled_after(before, limit=10)

    assert held_back == []  # nothing past `before` while the older transaction runs
    assert await visible_ids_after(conn, high) == []  # what that naive reader would get

    async def both() -> list[int]:
        found = [event.id for event in await events.settled_after(before, limit=10)]
        return found if len(found) >= 2 else []

    assert await wait_until(both, timeout_s=5, what="both events settled") == [low, high]


async def visible_ids_after(conn: AsyncConnection, event_id: int) -> list[int]:
    rows = await conn.execute(
        select(task_events.c.id).where(task_events.c.id > event_id).order_by(task_events.c.id)
    )
    return [int(found) for found in rows.scalars()]


async def test_a_live_stream_gets_a_late_committed_row_first_and_resumes_past_it_correctly(
    api: str, admin_key: str, conn: AsyncConnection
) -> None:
    repo = TaskRepository(conn)
    # Of different priorities: their claims then move different counter rows, and the
    # second does not wait for the first's transaction.
    first = await make_task(repo, priority=TaskPriority.HIGH)
    second = await make_task(repo, priority=TaskPriority.LOW)
    async with open_stream(api, admin_key, last_event_id=0) as stream:
        await stream.take(2)  # the creations: the stream is past them
        async with connect(conn.engine) as holder, in_transaction(holder) as tx:
            await TaskRepository(tx).claim(first.id, lease_s=30)
            low = await last_event_of(tx, first.id)
            await repo.claim(second.id, lease_s=30)
            high = await last_event_of(conn, second.id)
            # The hub reads every POLL_S: had it taken `high`, it would have come by now.
            await stream.quiet(5 * POLL_S)
            # A second row of the older transaction, with an id above `high`.
            await TaskRepository(tx).finish(first.id, transition=t.COMPLETE, attempt=1)
            later = await last_event_of(tx, first.id)
        got = await stream.take(3)

    assert low < high < later
    assert ids(got) == [low, later, high]  # the transactions' order: none missing
    # Resuming after `later` (a higher id than `high`) must still give `high`.
    async with open_stream(api, admin_key, last_event_id=later) as resumed:
        assert (await resumed.next()).event_id == high


# 5. Several API processes, a real worker


async def test_streams_on_two_api_processes_get_a_workers_event_within_a_second(
    settings: Settings, admin_key: str, workers: StartWorker
) -> None:
    # Polls far apart: only the worker's wake-up (NOTIFY) can make it within a second.
    async with api_processes(settings, 2, EVENTS_POLL_SECONDS="5") as urls:
        await workers()
        completed = {"status": ["COMPLETED"]}
        async with contextlib.AsyncExitStack() as stack:
            streams: list[SseStream] = [
                await stack.enter_async_context(open_stream(url, admin_key, params=completed))
                for url in urls
            ]
            async with httpx.AsyncClient(base_url=urls[0], headers=auth(admin_key)) as client:
                response = await client.post(URL, json={"title": "fan out"})
                assert response.status_code == 201, response.text
            task_id = response.json()["id"]
            got = [await stream.next(timeout_s=15) for stream in streams]

    for message in got:
        body = message.json
        assert (body["task_id"], body["to"]) == (task_id, "COMPLETED")
        assert body["worker_id"] is not None  # written by the worker
        delay = message.received_at - datetime.fromisoformat(body["at"]).timestamp()
        assert 0 <= delay < 1.0, delay
    assert got[0].event_id == got[1].event_id


# 6. A client that stops reading


def held_by_a_process(server_port: int, client_port: int) -> bool:
    """Whether a process still holds the server's end of this loopback connection: its row
    in /proc/net/tcp (Linux) names a socket inode; 0 is an orphan only the kernel keeps."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) == (
            server_port,
            client_port,
        ):
            return inode != "0"
    return False


async def read_to_eof(sock: socket.socket, timeout_s: float) -> int:
    """Read everything until the peer's end (EOF or reset); how many bytes came."""
    loop = asyncio.get_running_loop()
    total = 0
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                return total
            if not chunk:
                return total
            total += len(chunk)


async def test_a_client_that_stops_reading_is_dropped_and_its_connection_closed(
    settings: Settings, admin_key: str, conn: AsyncConnection
) -> None:
    # Long titles and reasons: ~1 kB an event, 8 MB in all, more than the socket buffers
    # (up to 4 MB each way here) can hide.
    task = await make_task(TaskRepository(conn), title="x" * 200)
    count = 8000
    small = {"STREAM_BUFFER_EVENTS": "20", "EVENTS_POLL_SECONDS": str(POLL_S)}
    async with api_processes(settings, 1, **small) as [url]:
        port = int(url.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
            slow.setblocking(False)
            await loop.sock_connect(slow, ("127.0.0.1", port))
            request = (
                f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"X-API-Key: {admin_key}\r\nAccept: text/event-stream\r\n\r\n"
            )
            await loop.sock_sendall(slow, request.encode())

            def streams_open(expected: int) -> Callable[[], Awaitable[bool]]:
                async def probe() -> bool:
                    return await served_metric(url, OPEN) == expected

                return probe

            await wait_until(streams_open(1), timeout_s=5, what="the stream open")
            await load(conn, task.id, count, reason="r" * 200)

            async def dropped() -> float:
                return await served_metric(url, DROPPED, {"reason": "too_slow"})

            await wait_until(dropped, timeout_s=15, what="the slow stream dropped")
            await wait_until(streams_open(0), timeout_s=5, what="no stream open")

            async def let_go() -> bool:
                return not held_by_a_process(port, slow.getsockname()[1])

            await wait_until(let_go, timeout_s=3, what="the server to let go")
            received = await read_to_eof(slow, timeout_s=15)  # EOF or reset, not a hang
        assert await dropped() == 1
        assert received < count * 1000  # not all of them: it was cut off


async def test_a_client_that_keeps_reading_gets_a_burst_larger_than_its_buffer(
    settings: Settings, admin_key: str, conn: AsyncConnection
) -> None:
    task = await make_task(TaskRepository(conn))
    created = await last_event_of(conn, task.id)
    count = 2000
    small = {"STREAM_BUFFER_EVENTS": "20", "EVENTS_POLL_SECONDS": str(POLL_S)}
    async with (
        api_processes(settings, 1, **small) as [url],
        open_stream(url, admin_key, last_event_id=created) as stream,
    ):
        await load(conn, task.id, count)
        got = await stream.take(count, timeout_s=15)
        dropped = await served_metric(url, DROPPED, {"reason": "too_slow"})

    assert dropped == 0
    assert ids(got) == sorted(ids(got)) and len(set(ids(got))) == count


# 7. Revocation


async def test_a_stream_ends_within_the_recheck_interval_once_its_key_is_revoked(
    api: str, admin_key: str, engine: AsyncEngine, conn: AsyncConnection
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    ended_before = await served_metric(api, DROPPED, {"reason": "credential_ended"})
    async with (
        httpx.AsyncClient(base_url=api, headers=auth(key)) as as_member,
        open_stream(api, key) as members,
        open_stream(api, admin_key) as admins,
    ):
        key_id = (await as_member.get("/api/v1/keys")).json()["items"][0]["id"]
        assert (await as_member.delete(f"/api/v1/keys/{key_id}")).status_code == 200
        revoked_at = time.monotonic()

        end = await members.end(timeout_s=5)
        took = time.monotonic() - revoked_at
        # The admin's stream goes on: it gets the next event.
        task = await make_task(TaskRepository(conn))
        assert (await admins.next()).event_id == await last_event_of(conn, task.id)

    assert end.error is None  # the server ended the response properly
    assert took < RECHECK_S + AUTH_CACHE_S + 0.5, took
    assert await served_metric(api, DROPPED, {"reason": "credential_ended"}) == ended_before + 1
    assert (await refusal(api, auth(key))).status_code == 401


async def test_a_stream_opened_as_admin_ends_once_its_user_is_demoted(
    api: str, admin_key: str, engine: AsyncEngine
) -> None:
    user, key = await make_user(engine, Role.ADMIN)
    async with (
        httpx.AsyncClient(base_url=api, headers=auth(admin_key)) as admin,
        open_stream(api, key) as demoted,
    ):
        changed = await admin.patch(f"/api/v1/users/{user.id}", json={"role": "member"})
        end = await demoted.end(timeout_s=5)  # its scope was everybody's tasks: no longer

    assert changed.status_code == 200 and end.error is None


# 8. Keep-alive


async def test_an_idle_stream_gets_a_keep_alive_comment_every_interval(
    api: str, admin_key: str
) -> None:
    nothing = {"task_id": [str(uuid.uuid4())]}
    async with open_stream(api, admin_key, params=nothing) as stream:
        comments = [await stream.comment(timeout_s=KEEPALIVE_S + 1) for _ in range(3)]

    assert [comment.text for comment in comments] == ["keep-alive"] * 3
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(comments)]
    assert all(KEEPALIVE_S * 0.8 < gap < KEEPALIVE_S + 0.5 for gap in gaps), gaps
