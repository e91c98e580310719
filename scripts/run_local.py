"""`make run`: create the database if needed, migrate, start the API and WORKERS workers.

Ctrl-C (or SIGTERM) stops them all; workers get their graceful shutdown.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from shared.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]


async def ensure_database(database_url: str) -> None:
    url = make_url(database_url).set(drivername="postgresql")
    admin = await asyncpg.connect(
        url.set(database="postgres").render_as_string(hide_password=False)
    )
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{url.database}"')
            print(f"created database {url.database}", flush=True)
    finally:
        await admin.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    settings = get_settings()
    asyncio.run(ensure_database(settings.database_url))
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True)
    workers = int(os.environ.get("WORKERS", "2"))
    port = os.environ.get("PORT", "8000")
    api = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", port]
    children = [subprocess.Popen(api, cwd=ROOT)]
    # Each worker serves its metrics on a port of its own: 9100, 9101, ...
    metrics_port = int(os.environ.get("WORKER_METRICS_PORT", "9100"))
    children += [
        subprocess.Popen(
            [sys.executable, "-m", "worker"],
            cwd=ROOT,
            env={**os.environ, "WORKER_METRICS_PORT": str(metrics_port + n if metrics_port else 0)},
        )
        for n in range(workers)
    ]
    print(f"API on http://127.0.0.1:{port}/docs with {workers} worker(s); Ctrl-C stops", flush=True)
    # Set both explicitly: a shell that starts us in the background ignores SIGINT.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    return max(child.wait() for child in children)


if __name__ == "__main__":
    raise SystemExit(main())
