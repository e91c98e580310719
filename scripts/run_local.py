"""`make run`: create the database if needed, migrate, start the API and WORKERS workers.

Ctrl-C (or SIGTERM) stops them all; workers get their graceful shutdown.
"""

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from api.admin import create_key, create_user
from shared.domain.errors import NameTaken
from shared.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
# The local admin's key, made once by `make run`; git ignores the folder.
ADMIN_KEY_FILE = ROOT / ".taskq" / "admin.key"
LOCAL_ADMIN = "admin"
SECRET_KEY_FILE = ROOT / ".taskq" / "secret.key"


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


async def ensure_admin_key(port: str = "8000") -> None:
    """Leave a newcomer one command away from a working key: a local `admin` user, its key
    in ADMIN_KEY_FILE (mode 600), made once."""
    shown = os.path.relpath(ADMIN_KEY_FILE)  # noqa: ASYNC240 - string work, no I/O
    if ADMIN_KEY_FILE.exists():
        print(f"admin key: {shown}", flush=True)
        return
    try:
        key = await create_user(LOCAL_ADMIN, admin=True, email=None)
    except NameTaken:
        key = await create_key(LOCAL_ADMIN, key_name="make run")
    ADMIN_KEY_FILE.parent.mkdir(mode=0o700, exist_ok=True)
    ADMIN_KEY_FILE.touch(mode=0o600)
    ADMIN_KEY_FILE.write_text(key + "\n")
    print(f"created the local admin's key in {shown} (mode 600); try:")
    print(f'  curl -H "X-API-Key: $(cat {shown})" localhost:{port}/api/v1/tasks', flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def ensure_secret_key() -> None:
    """A local SECRET_KEY, made once (mode 600, git-ignored), unless one is set: the API and
    the notifier must share it."""
    if os.environ.get("SECRET_KEY"):
        return
    if not SECRET_KEY_FILE.exists():
        SECRET_KEY_FILE.parent.mkdir(mode=0o700, exist_ok=True)
        SECRET_KEY_FILE.touch(mode=0o600)
        SECRET_KEY_FILE.write_text(secrets.token_urlsafe(32) + "\n")
    os.environ["SECRET_KEY"] = SECRET_KEY_FILE.read_text().strip()


def main() -> int:
    ensure_secret_key()
    settings = get_settings()
    asyncio.run(ensure_database(settings.database_url))
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True)
    port = os.environ.get("PORT", "8000")
    asyncio.run(ensure_admin_key(port))
    workers = int(os.environ.get("WORKERS", "2"))
    api = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", port]
    children = [subprocess.Popen(api, cwd=ROOT)]
    # One notifier: webhooks and e-mails (.eml files in MAIL_OUTBOX_DIR without SMTP_HOST).
    children.append(subprocess.Popen([sys.executable, "-m", "notifier"], cwd=ROOT))
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
    print(
        f"API on http://127.0.0.1:{port}/docs, dashboard on /dashboard, {workers} worker(s) "
        "and a notifier; Ctrl-C stops",
        flush=True,
    )
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
