"""The API and the worker as real processes, with their output kept for assertions."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def environment(settings: Settings, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        AMQP_URL=settings.amqp_url,
        QUEUE_NAME=settings.queue_name,
        LOG_LEVEL="INFO",
        SIMULATE_MIN_SECONDS=str(settings.simulate_min_seconds),
        SIMULATE_MAX_SECONDS=str(settings.simulate_max_seconds),
        PYTHONUNBUFFERED="1",
        WORKER_METRICS_PORT="0",  # several workers share this machine; a test opts in
    )
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process whose combined output goes to a temporary file."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="taskq-", suffix=".log", delete=False
        )
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()
        finally:
            self._log.close()


# The `workers` fixture: start a worker (optionally with other settings or env) and wait
# until it consumes the queue.
StartWorker = Callable[..., Awaitable["Process"]]


def start_worker(settings: Settings, **overrides: str) -> Process:
    return Process([sys.executable, "-m", "worker"], environment(settings, **overrides))


def start_notifier(settings: Settings, **overrides: str) -> Process:
    return Process([sys.executable, "-m", "notifier"], environment(settings, **overrides))


def start_api(settings: Settings, port: int, **overrides: str) -> Process:
    # As the image runs it (API_PROCESSES among the overrides, if more than one).
    args = [sys.executable, "-m", "api", "--port", str(port)]
    return Process(args, environment(settings, **overrides))


async def wait_ready(api: Process, base_url: str, timeout_s: float = 15) -> None:
    """Wait until the API process answers /ready with 200; fail with its output if not."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base_url) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the API did not become ready:\n{api.output}")
