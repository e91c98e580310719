"""The dashboard over HTTP: signing in and out, cookies, CSRF, and owner scoping."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import CSRF_HEADER, SESSION_COOKIE
from api.main import create_app
from shared.domain.enums import Role
from shared.settings import Settings
from tests.support.dashboard import LOGIN, csrf_token, session_cookie, sign_in
from tests.support.tasks import URL, create
from tests.support.users import auth, make_user


@asynccontextmanager
async def browser(
    settings: Settings, base_url: str = "http://dash"
) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client of an in-process API, sending no key of its own."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.publisher.wait_connected(timeout_s=5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


async def test_signing_in_sets_a_strict_http_only_cookie_and_keeps_the_key_out_of_urls(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with browser(settings) as client:
        response = await sign_in(client, key)
        overview = await client.get("/dashboard")

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    cookie = next(
        header
        for header in response.headers.get_list("set-cookie")
        if header.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the HTTPS test
    assert key not in cookie and key not in response.headers["location"]
    assert overview.status_code == 200 and key not in overview.text
    assert "default-src 'self'" in overview.headers["content-security-policy"]


async def test_over_https_the_session_cookie_is_secure(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with browser(settings, base_url="https://dash") as client:
        response = await sign_in(client, key)

    cookies = " ".join(response.headers.get_list("set-cookie"))
    assert f"{SESSION_COOKIE}=" in cookies and "Secure" in cookies


async def test_a_wrong_key_or_a_missing_form_token_signs_nobody_in(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with browser(settings) as client:
        wrong = await sign_in(client, "tq_" + "x" * 43)
        forged = await client.post(LOGIN, data={"key": key})  # no token: another site's form
        pages = await client.get("/dashboard")

    assert wrong.status_code == 401 and "That key is not valid." in wrong.text
    assert forged.status_code == 401 and "expired" in forged.text
    assert SESSION_COOKIE not in client.cookies
    assert pages.status_code == 303 and pages.headers["location"] == LOGIN


async def test_a_session_reads_the_api_but_changes_nothing_without_its_csrf_token(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with browser(settings) as client:
        await sign_in(client, key)
        token = await csrf_token(client)
        listed = await client.get(URL)
        without = await client.post(URL, json={"title": "forged"})
        wrong = await client.post(URL, json={"title": "forged"}, headers={CSRF_HEADER: "0" * 64})
        with_token = await client.post(URL, json={"title": "mine"}, headers={CSRF_HEADER: token})
        after = await client.get(URL)

    assert listed.status_code == 200
    assert without.status_code == wrong.status_code == 403
    assert "X-CSRF-Token" in without.json()["detail"]
    assert with_token.status_code == 201
    assert [task["title"] for task in after.json()["items"]] == ["mine"]


async def test_signing_out_ends_the_session_and_its_cookie_stops_working(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with browser(settings) as client:
        await sign_in(client, key)
        cookie = session_cookie(client)
        token = await csrf_token(client)
        refused = await client.post("/dashboard/logout", data={})  # no CSRF token: refused
        still_in = await client.get(URL)
        out = await client.post("/dashboard/logout", data={"csrf_token": token})
        client.cookies.set(SESSION_COOKIE, cookie)  # a copy of the cookie kept somewhere
        api = await client.get(URL)
        page = await client.get("/dashboard/tasks")

    assert refused.status_code == 403 and still_in.status_code == 200
    assert out.status_code == 303 and out.headers["location"] == LOGIN
    assert api.status_code == 401
    assert page.status_code == 303 and page.headers["location"] == LOGIN


async def test_revoking_the_key_ends_the_sessions_it_opened(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with browser(settings) as client:
        await sign_in(client, key)
        assert (await client.get(URL)).status_code == 200
        key_id = (await client.get("/api/v1/keys", headers=auth(key))).json()["items"][0]["id"]
        await client.delete(f"/api/v1/keys/{key_id}", headers=auth(key))
        await asyncio.sleep(settings.auth_cache_seconds)  # the cache's promised bound
        api = await client.get(URL)
        page = await client.get("/dashboard")

    assert api.status_code == 401
    assert page.status_code == 303


async def test_a_member_reaches_no_other_members_task_through_any_dashboard_page(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, alice_key = await make_user(engine, Role.MEMBER, "alice")
    _, bob_key = await make_user(engine, Role.MEMBER, "bob")
    async with browser(settings) as alice, browser(settings) as bob:
        alice.headers.update(auth(alice_key))
        theirs = await create(alice, title="alice's secret plan")
        del alice.headers["X-API-Key"]
        await sign_in(bob, bob_key)
        pages = [
            await bob.get(path)
            for path in (
                "/dashboard/tasks",
                "/dashboard/tasks/rows",
                f"/dashboard/tasks?q={theirs}",
                "/dashboard/tasks?q=alice",
            )
        ]
        task_page = await bob.get(f"/dashboard/tasks/{theirs}")
        detail = await bob.get(f"/dashboard/tasks/{theirs}/detail")
        workers = await bob.get("/dashboard/workers")
        await sign_in(alice, alice_key)
        own = await alice.get(f"/dashboard/tasks/{theirs}")

    for page in pages:
        assert page.status_code == 200
        assert "<tr data-task-id" not in page.text  # the search box may echo the id
        assert "secret plan" not in page.text
    assert task_page.status_code == 404 and "secret plan" not in task_page.text
    assert detail.status_code == 404 and detail.text == ""
    assert workers.status_code == 403
    assert own.status_code == 200 and "alice&#39;s secret plan" in own.text


async def test_the_tasks_page_finds_a_task_by_id_or_title_prefix(
    settings: Settings, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with browser(settings) as client:
        client.headers.update(auth(key))
        first = await create(client, title="Resize images")
        second = await create(client, title="Render video", priority="HIGH")
        await create(client, title="100% done_")
        del client.headers["X-API-Key"]
        await sign_in(client, key)
        by_prefix = await client.get("/dashboard/tasks/rows", params={"q": "Re"})
        by_title = await client.get("/dashboard/tasks/rows", params={"q": "Resize"})
        by_id = await client.get("/dashboard/tasks/rows", params={"q": str(second)})
        by_priority = await client.get("/dashboard/tasks/rows", params={"priority": "HIGH"})
        wildcard = await client.get("/dashboard/tasks/rows", params={"q": "100%"})
        literal = await client.get("/dashboard/tasks/rows", params={"q": "1_0"})

    def shown(page: httpx.Response) -> int:
        return page.text.count("<tr data-task-id")

    assert shown(by_prefix) == 2
    assert shown(by_title) == 1 and str(first) in by_title.text
    assert shown(by_id) == 1 and str(second) in by_id.text
    assert shown(by_priority) == 1 and str(second) in by_priority.text
    assert shown(wildcard) == 1  # % is a character here, not a wildcard
    assert shown(literal) == 0  # nor is _
