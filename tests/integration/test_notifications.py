"""Webhooks and e-mail with real processes: a worker finishes tasks, a real notifier
process delivers, a real receiver (and SMTP server) on loopback gets them."""

import asyncio
import email
import email.policy
import itertools
import json
import signal
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook
from starlette.types import Receive, Scope, Send

from shared.domain.enums import Role
from shared.settings import Settings
from tests.integration.conftest import api_client
from tests.support.processes import Process, StartWorker, free_port, start_notifier
from tests.support.proxy import TcpProxy, through
from tests.support.receiver import Receiver
from tests.support.tasks import create
from tests.support.users import auth, make_user
from tests.support.waiting import wait_until

HOOKS = "/api/v1/webhooks"
SECRET_KEY = "test-secret-key-" + "x" * 32
# Fast retries: 0.3 s, 0.6 s, 1.2 s apart (each ±10 % jitter), given up 3 s after the
# first attempt. The repeat is longer than the last pause: were it equal, jitter could let
# a fourth attempt in before the give-up, after a gap no longer than the one before.
FAST = {
    "SECRET_KEY": SECRET_KEY,
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "NOTIFY_RETRY_SECONDS": "0.3,0.6,1.2",
    "NOTIFY_RETRY_REPEAT_SECONDS": "2.4",
    "NOTIFY_GIVE_UP_SECONDS": "3",
    "NOTIFIER_POLL_SECONDS": "0.1",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
}


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"secret_key": SECRET_KEY, "webhook_allow_private_networks": True}
    )


@pytest.fixture
async def admin(hook_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(hook_settings) as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def notifiers(hook_settings: Settings) -> AsyncIterator[Any]:
    started: list[Process] = []

    def start(**env: str) -> Process:
        process = start_notifier(hook_settings, **{**FAST, **env})
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        print(process.output)  # shown when the test fails


async def subscribe(client: httpx.AsyncClient, url: str, events: list[str]) -> dict[str, Any]:
    response = await client.post(HOOKS, json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def deliveries(client: httpx.AsyncClient, hook_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get(f"{HOOKS}/{hook_id}/deliveries")).json()[
        "items"
    ]
    return items


async def wait_delivery(
    client: httpx.AsyncClient, hook_id: str, status: str, timeout_s: float = 20
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await deliveries(client, hook_id)
        return found[0] if found and found[0]["status"] == status else None

    return await wait_until(probe, timeout_s=timeout_s, what=f"a {status} delivery")


async def test_a_finished_task_is_delivered_once_signed_for_any_standard_webhooks_library(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    notifiers()
    task_id = await create(admin, title="notify me", params={"duration": 0})

    delivery = await wait_delivery(admin, hook["id"], "delivered")

    assert len(receiver.received) == 1  # PENDING and IN_PROGRESS were not asked for
    got = receiver.received[0]
    payload = Webhook(hook["secret"]).verify(got.body, got.headers)  # raises if not signed
    assert payload["type"] == "task.completed"
    assert payload["task"]["id"] == str(task_id) and payload["task"]["status"] == "COMPLETED"
    assert got.headers["webhook-id"] == f"msg_{uuid.UUID(delivery['id']).hex}"
    assert delivery["attempts"] == 1 and delivery["last_response_code"] == 200
    listed = (await admin.get(HOOKS)).json()["items"]
    assert [item["id"] for item in listed] == [hook["id"]] and "secret" not in listed[0]
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 43).verify(got.body, got.headers)


async def test_a_receiver_that_is_down_gets_the_delivery_once_after_it_returns(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await receiver.stop()
    await workers()
    notifiers(NOTIFY_RETRY_SECONDS="0.3", NOTIFY_RETRY_REPEAT_SECONDS="0.3")
    await create(admin, params={"duration": 0})

    async def failed_twice() -> bool:
        found = await deliveries(admin, hook["id"])
        return bool(found) and found[0]["attempts"] >= 2

    await wait_until(failed_twice, timeout_s=20, what="two failed attempts")
    pending = (await deliveries(admin, hook["id"]))[0]
    await receiver.start()
    delivered = await wait_delivery(admin, hook["id"], "delivered")

    assert pending["status"] == "pending" and "ClientConnectorError" in pending["last_error"]
    assert len(receiver.received) == 1
    assert delivered["attempts"] > pending["attempts"]


async def test_a_receiver_answering_500_is_retried_with_growing_gaps_then_given_up(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    receiver.status = 500
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    notifiers(WEBHOOK_DISABLE_AFTER_FAILURES="1")
    await create(admin, params={"duration": 0})

    failed = await wait_delivery(admin, hook["id"], "failed")

    times = [got.at for got in receiver.received]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert failed["attempts"] == len(times) >= 3
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert failed["last_response_code"] == 500 and failed["next_attempt_at"] is None
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 1
    disabled = (await admin.get(f"{HOOKS}/{hook['id']}")).json()
    assert disabled["enabled"] is False and disabled["consecutive_failures"] == 1
    assert disabled["disabled_reason"] == "1 deliveries in a row failed"


async def test_a_delivery_after_a_failed_one_starts_the_count_of_failures_in_a_row_afresh(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    receiver.status = 500
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    notifiers(WEBHOOK_DISABLE_AFTER_FAILURES="2")
    await create(admin, params={"duration": 0})
    await wait_delivery(admin, hook["id"], "failed")
    counted = (await admin.get(f"{HOOKS}/{hook['id']}")).json()

    receiver.status = 200
    await create(admin, params={"duration": 0})
    await wait_delivery(admin, hook["id"], "delivered")

    after = (await admin.get(f"{HOOKS}/{hook['id']}")).json()
    assert counted["consecutive_failures"] == 1 and counted["enabled"] is True
    assert after["consecutive_failures"] == 0 and after["enabled"] is True


async def test_a_notifier_killed_mid_delivery_delivers_after_restart_with_the_same_webhook_id(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    receiver.hang = True
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    first = notifiers(WEBHOOK_TIMEOUT_SECONDS="30")
    await create(admin, params={"duration": 0})

    await wait_until(lambda: _arrived(receiver, 1), timeout_s=20, what="the first attempt")
    first.signal(signal.SIGKILL)
    first.popen.wait(10)
    receiver.hang = False
    notifiers(WEBHOOK_TIMEOUT_SECONDS="1")  # the lease: 30 s + 5 s from the first attempt
    delivered = await wait_delivery(admin, hook["id"], "delivered", timeout_s=60)

    ids = [got.headers["webhook-id"] for got in receiver.received]
    assert len(ids) == 2 and ids[0] == ids[1] == f"msg_{uuid.UUID(delivered['id']).hex}"
    assert delivered["attempts"] == 2
    # The first attempt sent the fan-out's text, the second the stored row's: same bytes.
    assert receiver.received[0].body == receiver.received[1].body


class CuttingReceiver(Receiver):
    """Cuts the database for a second as the first delivery arrives, before answering it:
    the notifier then finds its database gone just when it records the outcome."""

    def __init__(self, proxy: TcpProxy) -> None:
        super().__init__()
        self.proxy = proxy
        self._restoring: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._restoring is None:
            await self.proxy.cut()
            self._restoring = asyncio.create_task(self._restore_in(1.0))
        await super().__call__(scope, receive, send)

    async def _restore_in(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.proxy.restore()


async def test_a_database_cut_while_the_outcome_is_recorded_sends_nothing_twice(
    admin: httpx.AsyncClient,
    hook_settings: Settings,
    db_proxy: TcpProxy,
    workers: StartWorker,
    notifiers: Any,
) -> None:
    receiver = CuttingReceiver(db_proxy)
    await receiver.start()
    try:
        hook = await subscribe(admin, receiver.url, ["COMPLETED"])
        await workers()
        notifiers(DATABASE_URL=through(hook_settings, db=db_proxy).database_url)
        await create(admin, params={"duration": 0})

        delivered = await wait_delivery(admin, hook["id"], "delivered")
        await asyncio.sleep(8)  # past the lease (2 s + 5 s): a second attempt would be in
    finally:
        await receiver.stop()

    assert delivered["attempts"] == 1 and len(receiver.received) == 1


async def test_a_notifier_stopped_mid_delivery_finishes_and_records_it_first(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    receiver.delay_s = 1.5
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    notifier = notifiers()
    await create(admin, params={"duration": 0})

    await wait_until(lambda: _arrived(receiver, 1), timeout_s=20, what="the attempt")
    notifier.signal(signal.SIGTERM)  # while the receiver is still answering
    # Waited for in a thread: the receiver answers from this test's event loop.
    assert await asyncio.to_thread(notifier.popen.wait, 15) == 0
    [delivery] = await deliveries(admin, hook["id"])

    assert delivery["status"] == "delivered" and delivery["attempts"] == 1


async def _arrived(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) >= count


async def test_a_notifier_stopped_with_deliveries_lined_up_hands_back_those_not_begun(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    # 25 tasks finished before any notifier runs: one fan-out makes all 25 deliveries and
    # lines them up for itself in a batch of 20 and one of 5.
    receiver.delay_s = 1.0
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    for _ in range(25):
        await create(admin, params={"duration": 0})
    await wait_until(lambda: _completed(admin, 25), timeout_s=30, what="25 tasks completed")
    first = notifiers()
    await wait_until(lambda: _arrived(receiver, 1), timeout_s=20, what="the first batch")
    first.signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.popen.wait, 15) == 0
    stopped = await deliveries(admin, hook["id"])

    notifiers()
    await wait_until(lambda: _all_delivered(admin, hook["id"], 25), timeout_s=30, what="25")

    assert sorted((d["status"], d["attempts"]) for d in stopped) == (
        [("delivered", 1)] * 20 + [("pending", 0)] * 5
    )
    assert all(d["attempts"] == 1 for d in await deliveries(admin, hook["id"]))
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 25
    assert len(receiver.received) == 25


async def _completed(client: httpx.AsyncClient, count: int) -> bool:
    found = await client.get("/api/v1/tasks", params={"status": "COMPLETED"})
    return bool(found.json()["total"] >= count)


async def _all_delivered(client: httpx.AsyncClient, hook_id: str, count: int) -> bool:
    found = await deliveries(client, hook_id)
    return len([d for d in found if d["status"] == "delivered"]) >= count


async def test_a_delivery_cannot_be_redelivered_while_an_attempt_of_it_is_under_way(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    receiver.hang = True
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    notifiers(WEBHOOK_TIMEOUT_SECONDS="30")
    await create(admin, params={"duration": 0})
    await wait_until(lambda: _arrived(receiver, 1), timeout_s=20, what="the attempt")
    [delivery] = await deliveries(admin, hook["id"])

    refused = await admin.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery['id']}/redeliver")

    assert refused.status_code == 409 and "being attempted" in refused.json()["detail"]
    assert len(receiver.received) == 1


async def test_a_redelivery_sends_the_same_message_again(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    hook = await subscribe(admin, receiver.url, ["COMPLETED"])
    await workers()
    notifiers()
    await create(admin, params={"duration": 0})
    delivery = await wait_delivery(admin, hook["id"], "delivered")

    again = await admin.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery['id']}/redeliver")
    await wait_until(lambda: _arrived(receiver, 2), timeout_s=20, what="the redelivery")

    assert again.status_code == 202 and again.json()["status"] == "pending"
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body


@pytest.mark.parametrize(
    "host", ["localhost", "127.1", "2130706433", "[::ffff:127.0.0.1]", "0.0.0.0", "[::1]"]
)
async def test_urls_that_reach_loopback_are_refused_without_the_setting(
    settings: Settings, host: str
) -> None:
    strict = settings.model_copy(update={"secret_key": SECRET_KEY})
    async with api_client(strict) as client:
        response = await client.post(
            HOOKS, json={"url": f"http://{host}:9/hook", "events": ["COMPLETED"]}
        )

    assert response.status_code == 422, response.text
    assert "not public" in response.json()["detail"][0]["msg"]


async def test_a_notifier_without_the_setting_sends_nothing_to_loopback_by_name_or_address(
    admin: httpx.AsyncClient, receiver: Receiver, workers: StartWorker, notifiers: Any
) -> None:
    # Subscribed while the API allowed private networks; the notifier does not.
    by_address = await subscribe(admin, receiver.url, ["COMPLETED"])
    by_name = await subscribe(admin, receiver.url.replace("127.0.0.1", "localhost"), ["COMPLETED"])
    await workers()
    notifiers(WEBHOOK_ALLOW_PRIVATE_NETWORKS="false")
    await create(admin, params={"duration": 0})

    refused = [await wait_delivery(admin, h["id"], "failed") for h in (by_address, by_name)]

    assert receiver.received == []
    for delivery in refused:
        assert "which is not public" in delivery["last_error"], delivery


async def test_only_http_and_https_urls_are_accepted(admin: httpx.AsyncClient) -> None:
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1/"):
        response = await admin.post(HOOKS, json={"url": url, "events": ["COMPLETED"]})
        assert response.status_code == 422, url


async def test_a_member_reaches_no_other_members_webhook_and_is_told_of_their_own_tasks_only(
    hook_settings: Settings, engine: AsyncEngine, workers: StartWorker, notifiers: Any
) -> None:
    _, alice_key = await make_user(engine, Role.MEMBER, "alice")
    _, bob_key = await make_user(engine, Role.MEMBER, "bob")
    alices, bobs, admins = Receiver(), Receiver(), Receiver()
    for found in (alices, bobs, admins):
        await found.start()
    async with (
        api_client(hook_settings, alice_key) as alice,
        api_client(hook_settings, bob_key) as bob,
        api_client(hook_settings) as admin,
    ):
        hook = await subscribe(alice, alices.url, ["COMPLETED"])
        await subscribe(bob, bobs.url, ["COMPLETED"])
        await subscribe(admin, admins.url, ["COMPLETED"])
        unknown = str(uuid.uuid4())
        for method, path, body in (
            ("GET", "{}", None),
            ("PATCH", "{}", {"description": "bob's now"}),
            ("DELETE", "{}", None),
            ("GET", "{}/deliveries", None),
            ("POST", "{}/deliveries/" + unknown + "/redeliver", None),
        ):
            theirs = await bob.request(method, f"{HOOKS}/" + path.format(hook["id"]), json=body)
            missing = await bob.request(method, f"{HOOKS}/" + path.format(unknown), json=body)
            assert theirs.status_code == missing.status_code == 404, (method, path)
        assert [h["id"] for h in (await bob.get(HOOKS)).json()["items"]] != [hook["id"]]
        assert len((await admin.get(HOOKS)).json()["items"]) == 3

        await workers()
        notifiers()
        await create(alice, title="alice's")
        await create(bob, title="bob's")
        await wait_until(lambda: _arrived(admins, 2), timeout_s=20, what="both at the admin's")
        await wait_until(lambda: _arrived(alices, 1), timeout_s=20, what="alice's own")
        await wait_until(lambda: _arrived(bobs, 1), timeout_s=20, what="bob's own")
    for found in (alices, bobs, admins):
        await found.stop()

    def titles(found: Receiver) -> set[str]:
        return {json.loads(got.body)["task"]["title"] for got in found.received}

    assert titles(alices) == {"alice's"} and titles(bobs) == {"bob's"}
    assert titles(admins) == {"alice's", "bob's"}


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"


@pytest.fixture
async def eve(
    hook_settings: Settings, admin: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A member with an email address who asked to hear of COMPLETED and FAILED."""
    created = await admin.post("/api/v1/users", json={"name": "eve", "email": "eve@example.com"})
    async with api_client(hook_settings, created.json()["key"]["key"]) as client:
        choice = await client.patch(
            "/api/v1/users/me", json={"notify_email": ["COMPLETED", "FAILED"]}
        )
        assert choice.status_code == 200 and choice.json()["notify_email"] == [
            "COMPLETED",
            "FAILED",
        ]
        yield client


def assert_task_mail(mail: EmailMessage, task_id: uuid.UUID, status: str) -> None:
    assert mail["To"] == "eve@example.com"
    assert mail["Subject"] == f"Task \u201cmail me\u201d is {status}"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    link = f"http://localhost:8000/dashboard/tasks/{task_id}"
    assert link in text.get_content() and f'href="{link}"' in html.get_content()


async def test_an_owner_who_asked_for_email_gets_one_over_smtp_with_text_and_html(
    eve: httpx.AsyncClient, workers: StartWorker, notifiers: Any
) -> None:
    mailbox = Mailbox()
    port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        await workers()
        notifiers(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_STARTTLS="false")
        task_id = await create(eve, title="mail me", params={"duration": 0})
        await wait_until(lambda: _mail_count(mailbox, 1), timeout_s=20, what="the e-mail")
    finally:
        smtp.stop()

    [mail] = mailbox.messages
    assert_task_mail(mail, task_id, "COMPLETED")


async def _mail_count(mailbox: Mailbox, count: int) -> bool:
    return len(mailbox.messages) >= count


async def test_without_an_smtp_host_the_email_is_written_as_an_eml_file(
    eve: httpx.AsyncClient, workers: StartWorker, notifiers: Any, tmp_path: Path
) -> None:
    await workers()
    notifiers(MAIL_OUTBOX_DIR=str(tmp_path))
    task_id = await create(eve, title="mail me", kind="fail")

    async def written() -> list[Path]:
        return await asyncio.to_thread(lambda: list(tmp_path.glob("*.eml")))

    [path] = await wait_until(written, timeout_s=20, what="an .eml file")
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    assert_task_mail(mail, task_id, "FAILED")
    assert path.stem in mail["Message-ID"]  # a retry rewrites this file, never a second


async def test_email_notifications_need_an_email_address(admin: httpx.AsyncClient) -> None:
    created = await admin.post("/api/v1/users", json={"name": "nomail"})
    headers = auth(created.json()["key"]["key"])

    refused = await admin.patch(
        "/api/v1/users/me", json={"notify_email": ["FAILED"]}, headers=headers
    )
    off = await admin.patch("/api/v1/users/me", json={"notify_email": []}, headers=headers)

    assert refused.status_code == 409 and "email address" in refused.json()["detail"]
    assert off.status_code == 200


async def test_one_event_wanted_by_a_webhook_and_by_email_is_delivered_to_both(
    eve: httpx.AsyncClient,
    receiver: Receiver,
    workers: StartWorker,
    notifiers: Any,
    tmp_path: Path,
) -> None:
    # Eve's own subscription and her e-mail choice: one fan-out makes a webhook row and an
    # e-mail row for the same event, stored by one statement.
    hook = await subscribe(eve, receiver.url, ["COMPLETED"])
    await workers()
    notifiers(MAIL_OUTBOX_DIR=str(tmp_path))
    await create(eve, title="mail me", params={"duration": 0})

    async def written() -> list[Path]:
        return await asyncio.to_thread(lambda: list(tmp_path.glob("*.eml")))

    delivered = await wait_delivery(eve, hook["id"], "delivered")
    [path] = await wait_until(written, timeout_s=20, what="an .eml file")

    assert delivered["attempts"] == 1 and len(receiver.received) == 1
    assert path.stat().st_size > 0
