"""API keys, users and roles: who may call, and how a key stops working."""

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import transaction
from shared.db.keys import KeyRepository
from shared.domain.enums import Role
from shared.domain.errors import NotAuthenticated
from shared.settings import Settings
from tests.integration.conftest import api_client
from tests.support.processes import ROOT, Process, environment, free_port, start_api, wait_ready
from tests.support.tasks import URL
from tests.support.users import auth, make_user
from tests.support.waiting import wait_until

ME = "/api/v1/users/me"
REFUSED = {"detail": NotAuthenticated().args[0]}


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == REFUSED


async def test_a_key_works_as_bearer_or_x_api_key_but_never_in_the_url(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine)

    bearer = await client.get(ME, headers={"X-API-Key": "", "Authorization": f"Bearer {key}"})
    header = await client.get(ME, headers=auth(key))
    in_query = await client.get(ME, params={"api_key": key, "key": key}, headers={"X-API-Key": ""})

    assert bearer.status_code == header.status_code == 200
    assert bearer.json()["role"] == "member"
    assert_refused(in_query)


async def test_missing_unknown_revoked_expired_and_disabled_all_answer_the_same_401(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    _, revoked = await make_user(engine)
    disabled_user, disabled = await make_user(engine)
    owner, _ = await make_user(engine)
    async with transaction(engine) as conn:
        expired, _ = await KeyRepository(conn).create(
            user_id=owner.id, name="old", expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
    keys = (await client.get("/api/v1/keys", headers={"X-API-Key": revoked})).json()["items"]
    await client.delete(f"/api/v1/keys/{keys[0]['id']}", headers=auth(revoked))
    await client.patch(f"/api/v1/users/{disabled_user.id}", json={"disabled": True})
    await asyncio.sleep(settings.auth_cache_seconds)

    for headers in (
        {"X-API-Key": ""},
        auth("tq_" + "A" * 43),
        auth("not even a key"),
        auth(revoked),
        auth(expired),
        auth(disabled),
    ):
        assert_refused(await client.get(URL, headers=headers))


@pytest.fixture
async def two_apis(settings: Settings) -> AsyncIterator[list[str]]:
    """Two API processes on the same database."""
    ports = [free_port(), free_port()]
    processes: list[Process] = [start_api(settings, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for process, url in zip(processes, urls, strict=True):
            await wait_ready(process, url)
        yield urls
    finally:
        for process in processes:
            process.stop()


async def test_revoking_a_key_stops_it_within_a_second_in_every_api_process(
    two_apis: list[str], engine: AsyncEngine
) -> None:
    _, key = await make_user(engine)
    clients = [httpx.AsyncClient(base_url=url, headers=auth(key)) for url in two_apis]
    for client in clients:  # both have it cached now
        assert (await client.get(ME)).status_code == 200
    key_id = (await clients[0].get("/api/v1/keys")).json()["items"][0]["id"]

    assert (await clients[0].delete(f"/api/v1/keys/{key_id}")).status_code == 200
    revoked_at = time.monotonic()

    async def refused_everywhere() -> bool:
        return all([(await c.get(ME)).status_code == 401 for c in clients])

    await wait_until(refused_everywhere, timeout_s=5, interval_s=0.02, what="401 everywhere")
    assert time.monotonic() - revoked_at < 1.0
    for client in clients:
        await client.aclose()


async def test_disabling_a_user_stops_its_keys_within_a_second(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user, key = await make_user(engine)
    assert (await client.get(ME, headers=auth(key))).status_code == 200

    await client.patch(f"/api/v1/users/{user.id}", json={"disabled": True})
    disabled_at = time.monotonic()

    async def refused() -> bool:
        return (await client.get(ME, headers=auth(key))).status_code == 401

    await wait_until(refused, timeout_s=5, interval_s=0.02, what="the disabled user refused")
    assert time.monotonic() - disabled_at < 1.0


async def test_admins_create_users_with_a_first_key_that_works(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/users", json={"name": "carol", "email": "c@example.com"})

    assert created.status_code == 201
    body = created.json()
    assert body["user"]["role"] == "member" and body["user"]["email"] == "c@example.com"
    key = body["key"]["key"]
    assert key.startswith("tq_") and body["key"]["prefix"] == key[:11]
    assert (await client.get(ME, headers=auth(key))).json()["name"] == "carol"
    again = await client.post("/api/v1/users", json={"name": "carol"})
    assert again.status_code == 409
    bad = await client.post("/api/v1/users", json={"name": "dave", "email": "not-an-email"})
    assert bad.status_code == 422


async def test_members_cannot_manage_users(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    member, key = await make_user(engine)

    for method, path, body in (
        ("POST", "/api/v1/users", {"name": "eve"}),
        ("GET", "/api/v1/users", None),
        ("GET", f"/api/v1/users/{member.id}", None),
        ("PATCH", f"/api/v1/users/{member.id}", {"role": "admin"}),
    ):
        response = await client.request(method, path, json=body, headers=auth(key))
        assert response.status_code == 403, (method, path)


async def test_the_last_active_admin_cannot_be_demoted_or_disabled(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    me = (await client.get(ME)).json()

    for change in ({"role": "member"}, {"disabled": True}):
        response = await client.patch(f"/api/v1/users/{me['id']}", json=change)
        assert response.status_code == 409
        assert "last active admin" in response.json()["detail"]

    other, _ = await make_user(engine, Role.ADMIN)
    demoted = await client.patch(f"/api/v1/users/{other.id}", json={"role": "member"})
    assert demoted.status_code == 200 and demoted.json()["role"] == "member"


async def test_keys_are_listed_without_secrets_and_revoked_only_by_their_owner_or_an_admin(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    _, alice = await make_user(engine)
    _, bob = await make_user(engine)
    made = await client.post("/api/v1/keys", json={"name": "ci"}, headers=auth(alice))
    listed = (await client.get("/api/v1/keys", headers=auth(alice))).json()["items"]

    assert made.status_code == 201 and made.json()["key"].startswith("tq_")
    assert {k["name"] for k in listed} == {"first key", "ci"}
    assert all(set(k) == set(listed[0]) and "key" not in k and "digest" not in k for k in listed)
    ci = made.json()["id"]
    assert (await client.delete(f"/api/v1/keys/{ci}", headers=auth(bob))).status_code == 404
    assert (await client.delete(f"/api/v1/keys/{ci}", headers=auth(alice))).status_code == 200
    assert (await client.delete(f"/api/v1/keys/{ci}")).status_code == 200  # admin; idempotent
    expiring = {"name": "x", "expires_at": "2000-01-01T00:00:00Z"}
    assert (await client.post("/api/v1/keys", json=expiring)).status_code == 422


async def test_no_key_ever_reaches_the_logs_or_the_database_in_clear(
    settings: Settings, engine: AsyncEngine, services_admin_dsn: str
) -> None:
    port = free_port()
    api = start_api(settings, port, LOG_LEVEL="DEBUG")
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(api, base)
        _, admin_key = await make_user(engine, Role.ADMIN)
        async with httpx.AsyncClient(base_url=base, headers=auth(admin_key)) as http:
            made = (await http.post("/api/v1/users", json={"name": "frank"})).json()
            key = made["key"]["key"]
            await http.post(URL, json={"title": "t"}, headers=auth(key))
            await http.get(URL, headers={"Authorization": f"Bearer {key}"})
            await http.get(URL, params={"key": key})  # a key in the URL is refused, not logged
            await http.delete(f"/api/v1/keys/{made['key']['id']}")
            await http.get(URL, headers=auth(key))
    finally:
        api.stop()
    dumped = await asyncio.to_thread(
        subprocess.run,
        ["pg_dump", "--data-only", services_admin_dsn],
        capture_output=True,
        text=True,
        check=True,
    )
    dump = dumped.stdout

    for secret in (key, admin_key):
        assert secret not in api.output
        assert secret not in dump
    assert "frank" in dump  # the dump did capture the data


@pytest.fixture
def services_admin_dsn(settings: Settings) -> str:
    """The test database as a libpq URL, for pg_dump."""
    return settings.database_url.replace("postgresql+asyncpg://", "postgresql://")


async def test_cors_answers_preflights_only_from_allowed_origins(settings: Settings) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    allowed = settings.model_copy(update={"cors_origins": ["https://app.example"]})
    async with api_client(allowed) as client:
        ok = await client.options(URL, headers={"Origin": "https://app.example", **preflight})
        refused = await client.options(URL, headers={"Origin": "https://evil.example", **preflight})
    async with api_client(settings) as client:
        default = await client.options(URL, headers={"Origin": "https://app.example", **preflight})

    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in default.headers


def admin_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.admin", *args],
        cwd=ROOT,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_admin_command_makes_users_and_keys_and_revokes_them(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    made = await asyncio.to_thread(admin_cli, settings, "create-user", "root", "--admin")
    taken = await asyncio.to_thread(admin_cli, settings, "create-user", "root")
    extra = await asyncio.to_thread(admin_cli, settings, "create-key", "root")

    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert (await client.get(ME, headers=auth(key))).json()["role"] == "admin"
    assert taken.returncode == 1 and "exists already" in taken.stderr
    second = extra.stdout.strip().splitlines()[-1]
    assert extra.returncode == 0 and second != key
    revoked = await asyncio.to_thread(admin_cli, settings, "revoke-key", second[:11])
    assert revoked.returncode == 0
    await asyncio.sleep(settings.auth_cache_seconds)
    assert (await client.get(ME, headers=auth(second))).status_code == 401
    assert (await client.get(ME, headers=auth(key))).status_code == 200


def test_the_admin_command_says_so_when_the_database_is_unreachable(settings: Settings) -> None:
    away = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/none"}
    )
    result = admin_cli(away, "create-user", "nobody")

    assert result.returncode == 2
    assert "database is unreachable" in result.stderr
    assert result.stdout == ""


async def test_make_run_leaves_a_newcomer_one_command_away_from_a_key(
    settings: Settings, client: httpx.AsyncClient, tmp_path: object
) -> None:
    """scripts/run_local's step that makes the local admin and its key file (mode 600)."""
    script = (
        "import asyncio, scripts.run_local as r, pathlib, sys;"
        "r.ADMIN_KEY_FILE = pathlib.Path(sys.argv[1]) / 'admin.key';"
        "asyncio.run(r.ensure_admin_key()); asyncio.run(r.ensure_admin_key());"
        "print(r.ADMIN_KEY_FILE.read_text().strip()); print(oct(r.ADMIN_KEY_FILE.stat().st_mode))"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        env={**environment(settings), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    key, mode = done.stdout.strip().splitlines()[-2:]
    assert mode.endswith("600")
    assert (await client.get(ME, headers=auth(key))).json()["name"] == "admin"
