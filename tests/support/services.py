"""Finding a real PostgreSQL and RabbitMQ for the tests: env vars, then localhost, then Docker."""

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Services:
    admin_database_url: str  # a database to connect to while creating the test's own
    amqp_url: str


LOCAL_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOCAL_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


def host_port(url: str) -> tuple[str, int]:
    """Where a service URL points: (host, port)."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def answers(url: str) -> bool:
    try:
        with socket.create_connection(host_port(url), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def find_services() -> Iterator[Services]:
    """TEST_DATABASE_URL / TEST_AMQP_URL when set, else the local services, else containers."""
    database_url = os.environ.get("TEST_DATABASE_URL") or LOCAL_POSTGRES
    amqp_url = os.environ.get("TEST_AMQP_URL") or LOCAL_RABBITMQ
    with contextlib.ExitStack() as stack:
        if not answers(database_url):
            database_url = stack.enter_context(_postgres_container())
        if not answers(amqp_url):
            amqp_url = stack.enter_context(_rabbitmq_container())
        yield Services(admin_database_url=database_url, amqp_url=amqp_url)


@contextlib.contextmanager
def _postgres_container() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15-alpine", driver="asyncpg") as container:
        yield str(container.get_connection_url())


@contextlib.contextmanager
def _rabbitmq_container() -> Iterator[str]:
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management-alpine") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"amqp://guest:guest@{host}:{port}/"
