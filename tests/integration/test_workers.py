"""The workers registry: several workers on one host, their states, and a heartbeat that
survives its own crash without letting a task run twice."""

import asyncio
import logging
import signal
import uuid
from collections.abc import Collection
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.workers import WorkerRepository
from shared.domain.enums import TaskStatus
from shared.settings import Settings
from tests.support.metrics import loop_failures
from tests.support.processes import StartWorker, free_port
from tests.support.tasks import create, wait_all_terminal
from tests.support.waiting import wait_until
from worker.main import run_worker

pytestmark = pytest.mark.usefixtures("counts_stay_exact")

WORKERS_URL = "/api/v1/workers"


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(WORKERS_URL)
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_states(client: httpx.AsyncClient, expected: Collection[str]) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        items = await listed(client)
        return items if sorted(w["state"] for w in items) == sorted(expected) else []

    return await wait_until(probe, timeout_s=20, what=f"workers {sorted(expected)}")


async def test_two_workers_with_identical_settings_both_consume_and_are_listed(
    client: httpx.AsyncClient, engine: AsyncEngine, workers: StartWorker
) -> None:
    # The same environment for both, metrics port included: the second cannot have it.
    same = {"WORKER_METRICS_PORT": str(free_port()), "LEASE_SECONDS": "1.5"}
    first = await workers(**same)
    second = await workers(**same)
    ids = [await create(client, params={"duration": 0.3}) for _ in range(12)]

    done = await wait_all_terminal(engine, len(ids))

    assert all(task.status is TaskStatus.COMPLETED for task in done)
    assert first.output.count(" COMPLETED") > 0 and second.output.count(" COMPLETED") > 0
    assert "metrics off: port" in second.output and "WORKER_METRICS_PORT" in second.output
    online = await wait_states(client, ["online", "online"])
    assert {w["pid"] for w in online} == {first.popen.pid, second.popen.pid}
    # Counters reach the registry with the heartbeat; every attempt is counted once.
    counted = await wait_until(
        lambda: _total_processed(client, len(ids)), timeout_s=10, what="processed counts"
    )
    assert counted == len(ids)

    first.signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.popen.wait, 15) == 0
    second.signal(signal.SIGKILL)
    final = await wait_states(client, ["offline", "stopped"])

    by_pid = {w["pid"]: w for w in final}
    assert by_pid[first.popen.pid]["state"] == "stopped"
    assert by_pid[first.popen.pid]["stopped_at"] is not None
    assert by_pid[second.popen.pid]["state"] == "offline"
    assert by_pid[second.popen.pid]["stopped_at"] is None


async def _total_processed(client: httpx.AsyncClient, expected: int) -> int | None:
    total = sum(w["processed"] for w in await listed(client))
    return total if total == expected else None


async def test_a_worker_lists_the_tasks_it_runs(
    client: httpx.AsyncClient, engine: AsyncEngine, workers: StartWorker
) -> None:
    worker = await workers()
    ids = {await create(client, params={"duration": 30}) for _ in range(2)}

    async def running_both() -> list[dict[str, Any]]:
        items = await listed(client)
        return items if items and {uuid.UUID(i) for i in items[0]["running"]} == ids else []

    [row] = await wait_until(running_both, timeout_s=15, what="both tasks listed as running")
    assert row["pid"] == worker.popen.pid and row["prefetch"] == 2
    for task_id in ids:
        await client.delete(f"/api/v1/tasks/{task_id}")
    await wait_all_terminal(engine, 2)


async def test_a_crashing_heartbeat_is_restarted_and_logged_and_nothing_runs_twice(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Tasks run longer than their lease: only renewals keep them from being run again.
    quick_lease = settings.model_copy(update={"lease_seconds": 4.0, "worker_metrics_port": 0})
    beat = WorkerRepository.beat
    injected = 0

    async def crashes_once_while_tasks_run(self: WorkerRepository, *args: Any, **kw: Any) -> Any:
        nonlocal injected
        if kw["owned"] and injected == 0:
            injected += 1
            raise RuntimeError("injected heartbeat fault")
        return await beat(self, *args, **kw)

    monkeypatch.setattr(WorkerRepository, "beat", crashes_once_while_tasks_run)
    before = loop_failures("heartbeat")
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO):
        worker = asyncio.create_task(run_worker(quick_lease, "in-process-worker", stop))
        await wait_until(lambda: _logged(caplog, "worker consuming"), what="worker consuming")
        ids = [await create(client, params={"duration": 6}) for _ in range(2)]
        done = await wait_all_terminal(engine, 2, timeout_s=30)
        stop.set()
        await asyncio.wait_for(worker, timeout=15)

    assert injected == 1
    assert loop_failures("heartbeat") - before == 1
    [crash] = [r for r in caplog.records if "heartbeat crashed" in r.getMessage()]
    assert crash.exc_info is not None and "injected heartbeat fault" in str(crash.exc_info[1])
    assert {task.id for task in done} == set(ids)
    assert all(t.status is TaskStatus.COMPLETED and t.attempts == 1 for t in done)


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def test_a_worker_that_cannot_renew_in_time_gives_its_task_up(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Renewals that keep failing stop the handler before the lease runs out: the task
    is then run again elsewhere, once, and never by two workers at the same time."""
    quick_lease = settings.model_copy(update={"lease_seconds": 3.0, "worker_metrics_port": 0})

    async def always_fails(self: WorkerRepository, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("renewals broken")

    monkeypatch.setattr(WorkerRepository, "beat", always_fails)
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO):
        broken = asyncio.create_task(run_worker(quick_lease, "broken-heartbeat", stop))
        await wait_until(lambda: _logged(caplog, "worker consuming"), what="worker consuming")
        task_id = await create(client, params={"duration": 8})
        await wait_until(
            lambda: _logged(caplog, "lease could not be renewed in time"),
            timeout_s=10,
            what="the handler given up",
        )
        stop.set()
        await asyncio.wait_for(broken, timeout=15)
    monkeypatch.undo()
    await workers(LEASE_SECONDS="3")

    [task] = await wait_all_terminal(engine, 1, timeout_s=40)

    assert task.id == task_id and task.status is TaskStatus.COMPLETED
    assert (task.attempts, task.lost_attempts) == (2, 1)
    assert await _logged(caplog, f"task {task_id}: attempt 1 given up")
