"""The /api/v1/webhooks resource: subscriptions to task status changes, and their
deliveries. A member's are their own and see their own tasks; an admin's see all."""

import uuid
from typing import Any

from fastapi import APIRouter, status

from api.auth import PrincipalDep
from api.deps import ConnectionDep, SettingsDep
from api.errors import AUTH_ERRORS, BODY_ERRORS, ERRORS
from api.schemas import (
    DeliveryList,
    DeliveryOut,
    ErrorOut,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookOut,
    WebhookPatch,
)
from shared.db.deliveries import DeliveryRepository
from shared.db.webhooks import WebhookRepository
from shared.domain.errors import NotConfigured
from shared.domain.notifications import signing_secret
from shared.domain.records import Principal
from shared.services.webhook_targets import check_address
from shared.settings import Settings

router = APIRouter(
    prefix="/api/v1/webhooks", tags=["webhooks"], responses={**AUTH_ERRORS, **ERRORS}
)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No webhook of yours has this id"}
}
# How many deliveries a listing shows, newest first.
RECENT_DELIVERIES = 50


def _repository(conn: ConnectionDep, principal: Principal) -> WebhookRepository:
    return WebhookRepository(conn, owner=principal.owner_scope)


async def _checked(url: str, settings: Settings) -> str:
    await check_address(url, allow_private=settings.webhook_allow_private_networks)
    return url


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**BODY_ERRORS, 503: {"model": ErrorOut, "description": "No SECRET_KEY set"}},
)
async def create_webhook(
    body: WebhookCreate, principal: PrincipalDep, conn: ConnectionDep, settings: SettingsDep
) -> WebhookCreated:
    """Subscribe `url` to changes of your tasks (an admin's: of all tasks) to `events`. The
    answer holds the signing secret, this once."""
    if not settings.secret_key:
        raise NotConfigured("webhooks need SECRET_KEY set on the server")
    webhook = await _repository(conn, principal).create(
        owner_id=principal.user_id,
        url=await _checked(str(body.url), settings),
        events=body.events,
        description=body.description,
    )
    secret = signing_secret(settings.secret_key, webhook.id, webhook.secret_salt)
    return WebhookCreated(**WebhookOut.model_validate(webhook).model_dump(), secret=secret)


@router.get("")
async def list_webhooks(principal: PrincipalDep, conn: ConnectionDep) -> WebhookList:
    """Your subscriptions (an admin: everybody's), newest first; never their secrets."""
    found = await _repository(conn, principal).listing()
    return WebhookList(items=[WebhookOut.model_validate(webhook) for webhook in found])


@router.get("/{webhook_id}", responses=NOT_FOUND)
async def get_webhook(
    webhook_id: uuid.UUID, principal: PrincipalDep, conn: ConnectionDep
) -> WebhookOut:
    return WebhookOut.model_validate(await _repository(conn, principal).get(webhook_id))


@router.patch("/{webhook_id}", responses={**NOT_FOUND, **BODY_ERRORS})
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookPatch,
    principal: PrincipalDep,
    conn: ConnectionDep,
    settings: SettingsDep,
) -> WebhookOut:
    """Change url, events, description; `enabled: true` turns a disabled one back on."""
    changes = body.model_dump(exclude_unset=True)
    if body.url is not None:
        changes["url"] = await _checked(str(body.url), settings)
    if body.events is not None:
        changes["events"] = body.events
    webhook = await _repository(conn, principal).update(webhook_id, **changes)
    return WebhookOut.model_validate(webhook)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_webhook(
    webhook_id: uuid.UUID, principal: PrincipalDep, conn: ConnectionDep
) -> None:
    """Unsubscribe; its deliveries not yet made are dropped with it."""
    await _repository(conn, principal).delete(webhook_id)


@router.get("/{webhook_id}/deliveries", responses=NOT_FOUND)
async def list_deliveries(
    webhook_id: uuid.UUID, principal: PrincipalDep, conn: ConnectionDep
) -> DeliveryList:
    """The subscription's most recent deliveries, newest first."""
    await _repository(conn, principal).get(webhook_id)  # 404 unless it is yours
    found = await DeliveryRepository(conn).of_webhook(webhook_id, limit=RECENT_DELIVERIES)
    return DeliveryList(items=[DeliveryOut.of(delivery) for delivery in found])


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"model": ErrorOut, "description": "No such webhook or delivery"},
        409: {"model": ErrorOut, "description": "An attempt of it is under way"},
    },
)
async def redeliver(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, principal: PrincipalDep, conn: ConnectionDep
) -> DeliveryOut:
    """Send a delivery again now (the same `webhook-id` and body), whatever became of it;
    409 while an attempt of it is under way."""
    await _repository(conn, principal).get(webhook_id)
    return DeliveryOut.of(await DeliveryRepository(conn).redeliver(webhook_id, delivery_id))
