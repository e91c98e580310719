"""Prometheus metrics (parsed with the Prometheus text parser) and JSON logs."""

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.processes import StartWorker, free_port
from tests.support.tasks import create, wait_all_terminal
from tests.support.waiting import wait_until


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def test_api_metrics_count_requests_by_route_and_tasks_by_priority(
    client: httpx.AsyncClient,
) -> None:
    before = samples((await client.get("/metrics")).text)
    for _ in range(3):
        await client.post("/api/v1/tasks", json={"title": "t", "priority": "HIGH"})
    await client.get("/api/v1/tasks/00000000-0000-4000-8000-000000000000")

    after = samples((await client.get("/metrics")).text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("taskq_tasks_created_total", priority="HIGH") == 3
    route = {"method": "POST", "route": "/api/v1/tasks", "status": "201"}
    assert delta("taskq_api_requests_total", **route) == 3
    assert delta("taskq_api_request_duration_seconds_count", **route) == 3
    # The route template, never the id: one series for every task.
    missing = {"method": "GET", "route": "/api/v1/tasks/{task_id}", "status": "404"}
    assert delta("taskq_api_requests_total", **missing) == 1
    assert ("taskq_relay_backlog", frozenset()) in after


async def test_worker_metrics_count_outcomes_waits_and_durations(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    port = free_port()
    await workers(WORKER_METRICS_PORT=str(port), LOG_FORMAT="json")
    for _ in range(2):
        await create(client, params={"duration": 0})
    await create(client, kind="fail")
    await wait_all_terminal(engine, 3)

    async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with httpx.AsyncClient() as http:
            scraped = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
        done = value(scraped, "taskq_worker_tasks_finished_total", outcome="failed", kind="fail")
        return scraped if done == 1 else {}

    scraped = await wait_until(scrape, what="worker metrics after 3 tasks")
    finished = "taskq_worker_tasks_finished_total"
    assert value(scraped, finished, outcome="completed", kind="simulate") == 2
    assert value(scraped, "taskq_worker_queue_wait_seconds_count") == 3
    assert value(scraped, "taskq_worker_task_duration_seconds_count", kind="simulate") == 2
    assert value(scraped, "taskq_worker_tasks_in_flight") == 0


async def test_json_logs_are_one_object_per_line_with_task_fields(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    workers: StartWorker,
) -> None:
    worker = await workers(LOG_FORMAT="json")
    task_id = await create(client, params={"duration": 0})
    await wait_all_terminal(engine, 1)

    async def completed_line() -> dict[str, object] | None:
        records = [json.loads(line) for line in worker.output.splitlines() if line.strip()]
        done = [
            r
            for r in records
            if r.get("task_id") == str(task_id) and r.get("status") == "COMPLETED"
        ]
        return done[0] if done else None

    record = await wait_until(completed_line, what="the COMPLETED log record")
    assert record["level"] == "INFO" and record["logger"] == "worker.consumer"
    assert record["attempt"] == 1
    assert str(record["worker_id"])
    assert "timestamp" in record
    assert "slept" not in json.dumps(record)  # the result stays out of logs below DEBUG
