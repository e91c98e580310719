"""Per-test plumbing for the integration tests: a clean table and queue, API client, workers."""

import contextlib
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.main import create_app
from shared.db.engine import create_engine
from shared.db.tasks import TaskRepository
from shared.domain.enums import Role
from shared.messaging.topology import declare_topology, topology
from shared.settings import Settings
from tests.support.processes import Process, StartWorker, start_worker
from tests.support.proxy import TcpProxy
from tests.support.services import host_port
from tests.support.tasks import TEST_OWNER, counts_by_status_and_priority, wait_log
from tests.support.users import auth, make_user


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def amqp(settings: Settings) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(settings.amqp_url)
    yield connection
    async with connection.channel() as channel:
        for spec in topology(settings):
            await channel.queue_delete(spec.name)
    await connection.close()


@pytest.fixture
async def channel(amqp: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    channel = await amqp.channel()
    yield channel
    await channel.close()


@pytest.fixture(autouse=True)
async def clean_state(engine: AsyncEngine, channel: AbstractChannel, settings: Settings) -> None:
    """Every test starts with no tasks and empty queues."""
    async with engine.connect() as conn:
        await conn.execute(
            text(
                "TRUNCATE tasks, task_events, task_counts, workers, sessions, deliveries, "
                "webhooks, api_keys, users"
            )
        )
        await conn.execute(
            text("INSERT INTO users (id, name, role) VALUES (:id, 'test-owner', 'member')"),
            {"id": TEST_OWNER},
        )
    await declare_topology(channel, settings)
    for spec in topology(settings):
        await (await channel.get_queue(spec.name)).purge()


@pytest.fixture
async def repo(engine: AsyncEngine) -> AsyncIterator[TaskRepository]:
    async with engine.connect() as conn:
        yield TaskRepository(conn)


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings, key: str | None = None, wait_for_broker: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this process, lifespan included, over an in-memory transport; it sends
    `key`, or that of a new admin."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if key is None:
            _, key = await make_user(app.state.engine, Role.ADMIN)
        if wait_for_broker:
            await app.state.publisher.wait_connected(timeout_s=5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=auth(key)
        ) as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as client:
        yield client


@pytest.fixture
async def workers(settings: Settings) -> AsyncIterator[StartWorker]:
    """Start a worker process and wait until it consumes the queue, ready for work.

    Every one still running is stopped after the test.
    """
    started: list[Process] = []

    async def start(worker_settings: Settings | None = None, **env: str) -> Process:
        process = start_worker(worker_settings or settings, **env)
        started.append(process)
        await wait_log(process, "worker consuming")  # its own word, whatever others do
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def broker_proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(*host_port(settings.amqp_url))
    await proxy.start()
    yield proxy
    await proxy.cut()


@pytest.fixture
async def db_proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(*host_port(settings.database_url))
    await proxy.start()
    yield proxy
    await proxy.cut()


@pytest.fixture
async def counts_stay_exact(engine: AsyncEngine) -> AsyncIterator[None]:
    """After the test, the counters the transitions keep equal count(*) of the tasks."""
    yield
    kept, counted = await counts_by_status_and_priority(engine)
    assert kept == counted
