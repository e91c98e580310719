"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
API process and real workers. Each page's screenshot lands in tests/screenshots/."""

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import SESSION_COOKIE
from shared.domain.enums import Role
from shared.settings import Settings
from tests.support.processes import ROOT, StartWorker, free_port, start_api, wait_ready
from tests.support.tasks import URL, create, wait_task
from tests.support.users import auth, make_user

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "tests" / "screenshots"
CHROMIUM_FOUND = Path(CHROMIUM).exists()
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_FOUND:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    """The API as a real process: the page's event stream needs a real server."""
    port = free_port()
    process = start_api(settings, port)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(process, url)
        yield url
    finally:
        process.stop()


class Tab:
    """A browser page that records console errors, signed in with `key`."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    async def sign_in(self, key: str) -> None:
        await self.page.goto(f"{self.base_url}/dashboard")
        await expect(self.page).to_have_url(f"{self.base_url}/dashboard/login")
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page).to_have_url(f"{self.base_url}/dashboard")

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


async def open_tab(browser: Browser, base_url: str, viewport: dict[str, int] = LAPTOP) -> Tab:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    return Tab(await context.new_page(), base_url)


@pytest.mark.parametrize("size", ["laptop", "phone"])
async def test_every_page_renders_without_console_errors_and_keeps_the_key_out_of_the_browser(
    browser: Browser, base_url: str, engine: AsyncEngine, workers: StartWorker, size: str
) -> None:
    await workers()
    _, key = await make_user(engine, Role.ADMIN)
    async with httpx.AsyncClient(base_url=base_url, headers=auth(key)) as api:
        done = await create(api, title="Resize images", params={"duration": 0})
        await create(api, title="Broken on purpose", kind="fail")
        await wait_task(engine, done, lambda t: t.status.value == "COMPLETED", "completed")
    tab = await open_tab(browser, base_url, LAPTOP if size == "laptop" else PHONE)
    await tab.page.goto(f"{base_url}/dashboard/login")
    await tab.shot(f"{size}-login")
    await tab.sign_in(key)

    await expect(tab.page.locator('[data-stat="status.COMPLETED"]')).to_have_text("1")
    await expect(tab.page.locator('[data-stat="workers_online"]')).to_have_text("1")
    await expect(tab.page.locator("#chart-throughput rect").first).to_be_attached()
    await tab.shot(f"{size}-overview")
    await tab.page.get_by_role("link", name="Tasks", exact=True).click()
    await expect(tab.page.locator("tbody#task-rows tr")).to_have_count(2)
    await tab.shot(f"{size}-tasks")
    await tab.page.get_by_role("link", name="Resize images").click()
    await expect(tab.page.locator("#task-status")).to_have_text("COMPLETED")
    timeline = tab.page.locator("table.timeline tbody tr")
    await expect(timeline.first).to_contain_text("created")
    await expect(timeline.last).to_contain_text("COMPLETED")
    await tab.shot(f"{size}-task")
    await tab.page.get_by_role("link", name="Workers").click()
    await expect(tab.page.locator(".state-online")).to_have_count(1)
    await tab.shot(f"{size}-workers")

    storage = await tab.page.evaluate(
        "() => JSON.stringify([localStorage, sessionStorage, document.cookie])"
    )
    assert key not in storage and SESSION_COOKIE not in storage  # HttpOnly: no script sees it
    assert key not in await tab.page.content() and key not in tab.page.url
    assert tab.errors == []


async def test_a_task_created_through_the_api_appears_within_2s_and_turns_completed_live(
    browser: Browser, base_url: str, engine: AsyncEngine, workers: StartWorker
) -> None:
    await workers()
    _, key = await make_user(engine, Role.MEMBER)
    tab = await open_tab(browser, base_url)
    await tab.sign_in(key)
    await tab.page.goto(f"{base_url}/dashboard/tasks")
    await tab.page.evaluate("() => { window.notReloaded = true; }")

    async with httpx.AsyncClient(base_url=base_url, headers=auth(key)) as api:
        task_id = await create(api, title="Watch me", params={"duration": 1})
    row = tab.page.locator(f'tr[data-task-id="{task_id}"]')

    await expect(row).to_be_visible(timeout=2000)
    await expect(row.locator('[data-field="status"]')).to_have_text("COMPLETED", timeout=15_000)
    assert await tab.page.evaluate("() => window.notReloaded") is True
    assert tab.errors == []


async def test_a_running_task_cancelled_from_its_page_by_keyboard_shows_cancelled(
    browser: Browser, base_url: str, engine: AsyncEngine, workers: StartWorker
) -> None:
    await workers()
    _, key = await make_user(engine, Role.MEMBER)
    async with httpx.AsyncClient(base_url=base_url, headers=auth(key)) as api:
        task_id = await create(api, title="Long one", params={"duration": 60})
    await wait_task(engine, task_id, lambda t: t.status.value == "IN_PROGRESS", "running")
    tab = await open_tab(browser, base_url)
    await tab.sign_in(key)
    await tab.page.goto(f"{base_url}/dashboard/tasks/{task_id}")
    cancel = tab.page.get_by_role("button", name="Cancel")

    for _ in range(30):  # the button is reachable with Tab alone
        await tab.page.keyboard.press("Tab")
        if await cancel.evaluate("button => button === document.activeElement"):
            break
    await tab.page.keyboard.press("Enter")

    await expect(tab.page.locator("#message")).to_have_text("Cancel sent.")
    await expect(tab.page.locator("#task-status")).to_have_text("CANCELLED", timeout=10_000)
    await expect(tab.page.locator("table.timeline")).to_contain_text("cancel requested")
    await tab.shot("task-cancelled")
    assert tab.errors == []


async def test_the_task_page_changes_priority_and_shows_a_refusal_as_the_server_says_it(
    browser: Browser, base_url: str, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    async with httpx.AsyncClient(base_url=base_url, headers=auth(key)) as api:
        task_id = await create(api, title="Queued, no workers")  # stays PENDING
        tab = await open_tab(browser, base_url)
        await tab.sign_in(key)
        await tab.page.goto(f"{base_url}/dashboard/tasks/{task_id}")
        await tab.page.get_by_label("Priority").select_option("HIGH")
        await tab.page.get_by_role("button", name="Change priority").click()
        await expect(tab.page.locator("#message")).to_have_text("Priority set to HIGH.")
        await expect(tab.page.locator("#task-priority")).to_have_text("HIGH")

        # The page stops following events, so its buttons go stale: the server decides.
        await tab.page.route("**/api/v1/events*", lambda route: route.abort())
        await tab.page.reload()
        assert (await api.delete(f"{URL}/{task_id}")).status_code == 200
        await tab.page.get_by_role("button", name="Change priority").click()

    await expect(tab.page.locator("#message")).to_have_text(
        re.compile(r"^Refused \(409\): task .* is already CANCELLED$")
    )
    await expect(tab.page.locator("#task-status")).to_have_text("CANCELLED")


async def test_a_member_sees_only_their_own_tasks_in_the_list_and_live(
    browser: Browser, base_url: str, engine: AsyncEngine
) -> None:
    _, alice_key = await make_user(engine, Role.MEMBER, "alice")
    _, bob_key = await make_user(engine, Role.MEMBER, "bob")
    async with (
        httpx.AsyncClient(base_url=base_url, headers=auth(alice_key)) as alice,
        httpx.AsyncClient(base_url=base_url, headers=auth(bob_key)) as bob,
    ):
        before = await create(alice, title="alice before")
        tab = await open_tab(browser, base_url)
        await tab.sign_in(bob_key)
        await tab.page.goto(f"{base_url}/dashboard/tasks")
        await expect(tab.page.locator("tr.empty")).to_be_visible()
        during = await create(alice, title="alice during")
        mine = await create(bob, title="bob's own")

        await expect(tab.page.locator(f'tr[data-task-id="{mine}"]')).to_be_visible()  # live
        rows = tab.page.locator("tbody#task-rows tr")
        await expect(rows).to_have_count(1)
        for theirs in (before, during):
            await tab.page.goto(f"{base_url}/dashboard/tasks/{theirs}")
            await expect(tab.page.locator("h1")).to_have_text(f"No task {theirs}.")
    assert "alice" not in await tab.page.content()


async def test_after_signing_out_the_session_cookie_no_longer_works(
    browser: Browser, base_url: str, engine: AsyncEngine
) -> None:
    _, key = await make_user(engine, Role.MEMBER)
    tab = await open_tab(browser, base_url)
    await tab.sign_in(key)
    cookies = await tab.page.context.cookies()
    session = next(c["value"] for c in cookies if c["name"] == SESSION_COOKIE)

    await tab.page.get_by_role("button", name="Sign out").click()

    await expect(tab.page).to_have_url(f"{base_url}/dashboard/login")
    async with httpx.AsyncClient(base_url=base_url, cookies={SESSION_COOKIE: session}) as old:
        assert (await old.get(URL)).status_code == 401
        assert (await old.get("/dashboard/tasks")).status_code == 303
        assert (await old.get(f"/dashboard/tasks/{uuid.uuid4()}/detail")).status_code == 401
    await tab.page.goto(f"{base_url}/dashboard/tasks")
    await expect(tab.page).to_have_url(f"{base_url}/dashboard/login")
