"""Nothing lost, nothing run twice: workers killed, the broker and the database cut.

Every case ends with the same invariant: each accepted task is in exactly one terminal
state, none is IN_PROGRESS, and `attempts` is 1 except where a worker really died.
"""

import asyncio
import signal
import uuid
from collections.abc import Collection

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.domain.enums import TaskStatus
from shared.domain.records import TaskRecord
from shared.settings import Settings
from tests.integration.conftest import api_client
from tests.support.processes import StartWorker
from tests.support.proxy import TcpProxy, through
from tests.support.tasks import all_tasks, create, wait_all_terminal, wait_consumers
from tests.support.waiting import wait_until

# Every transition these tests cause keeps the counters equal to count(*).
pytestmark = pytest.mark.usefixtures("counts_stay_exact")


def assert_settled(
    done: list[TaskRecord], accepted: Collection[uuid.UUID], rerun: Collection[uuid.UUID] = ()
) -> None:
    assert {task.id for task in done} == set(accepted)
    for task in done:
        assert task.status is TaskStatus.COMPLETED, (task.id, task.status, task.error)
        assert task.attempts == (2 if task.id in rerun else 1), (task.id, task.attempts)


async def running(engine: AsyncEngine, count: int) -> list[TaskRecord]:
    async def probe() -> list[TaskRecord]:
        found = [t for t in await all_tasks(engine) if t.status is TaskStatus.IN_PROGRESS]
        return found if len(found) == count else []

    return await wait_until(probe, timeout_s=15, what=f"{count} running task(s)")


async def test_killed_worker_tasks_run_again_and_only_those(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    doomed = await workers(LEASE_SECONDS="3")
    accepted = [await create(client, params={"duration": 1}) for _ in range(6)]
    in_flight = {task.id for task in await running(engine, 2)}

    doomed.signal(signal.SIGKILL)
    survivor = await workers(LEASE_SECONDS="3")
    done = await wait_all_terminal(engine, 6, timeout_s=40)

    assert_settled(done, accepted, rerun=in_flight)
    assert survivor.output.count("worker lost on attempt 1 -> NEW") == 2
    assert all(task.lost_attempts == 1 for task in done if task.id in in_flight)


async def test_tasks_accepted_while_the_broker_is_cut_complete_once_it_returns(
    engine: AsyncEngine,
    workers: StartWorker,
    settings: Settings,
    broker_proxy: TcpProxy,
) -> None:
    await workers()
    async with api_client(through(settings, broker=broker_proxy)) as client:
        await broker_proxy.cut()
        responses = [await client.post("/api/v1/tasks", json={"title": f"t{n}"}) for n in range(20)]
        assert all(r.status_code == 201 and r.json()["status"] == "NEW" for r in responses)
        await broker_proxy.restore()

        done = await wait_all_terminal(engine, 20, timeout_s=40)

    assert_settled(done, [uuid.UUID(r.json()["id"]) for r in responses])


async def test_broker_cut_mid_task_runs_no_handler_twice_and_consuming_resumes(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
    channel: AbstractChannel,
    settings: Settings,
    broker_proxy: TcpProxy,
) -> None:
    worker = await workers(through(settings, broker=broker_proxy))
    accepted = [await create(client, params={"duration": 1.5}) for _ in range(4)]
    await running(engine, 2)

    await broker_proxy.cut()
    await asyncio.sleep(0.5)  # the outage itself: the handlers keep running through it
    await broker_proxy.restore()
    # The robust consumer must really come back, not just the socket (aio-pika #231, #563).
    await wait_consumers(channel, settings.queue_name, 1)
    accepted.append(await create(client, params={"duration": 0}))

    done = await wait_all_terminal(engine, 5, timeout_s=40)
    assert_settled(done, accepted)
    # The outcomes were recorded though the acks could not be sent; the redeliveries ran nothing.
    assert "could not settle" in worker.output
    assert "not started: it is COMPLETED" in worker.output


async def test_database_cut_mid_task_runs_no_handler_twice(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
    settings: Settings,
    db_proxy: TcpProxy,
) -> None:
    worker = await workers(through(settings, db=db_proxy))
    accepted = [await create(client, params={"duration": 1}) for _ in range(4)]
    await running(engine, 2)

    await db_proxy.cut()
    await asyncio.sleep(2)  # longer than the handlers: their outcomes wait for the database
    await db_proxy.restore()

    done = await wait_all_terminal(engine, 4, timeout_s=40)
    assert_settled(done, accepted)
    assert "database unavailable; retrying" in worker.output


async def test_sigterm_lets_the_worker_hand_back_its_tasks_and_exit_cleanly(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    stopping = await workers(WORKER_SHUTDOWN_TIMEOUT_SECONDS="1")
    accepted = [await create(client, params={"duration": 5}) for _ in range(3)]
    interrupted = {task.id for task in await running(engine, 2)}

    stopping.signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(stopping.popen.wait, 10)
    after_exit = await all_tasks(engine)
    await workers()
    done = await wait_all_terminal(engine, 3, timeout_s=40)

    assert exit_code == 0
    assert not [t for t in after_exit if t.status is TaskStatus.IN_PROGRESS]
    assert "2 handed back" in stopping.output
    # A handed-back attempt did start: attempts counts it, honestly.
    assert_settled(done, accepted, rerun=interrupted)
