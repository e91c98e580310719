"""The /api/v1/keys resource: a user's own API keys."""

import uuid

from fastapi import APIRouter, status

from api.auth import PrincipalDep
from api.deps import KeysDep
from api.errors import AUTH_ERRORS, BODY_ERRORS, ERRORS
from api.schemas import ErrorOut, KeyCreate, KeyCreated, KeyList, KeyOut

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], responses={**AUTH_ERRORS, **ERRORS})


@router.post("", status_code=status.HTTP_201_CREATED, responses=BODY_ERRORS)
async def create_key(body: KeyCreate, principal: PrincipalDep, keys: KeysDep) -> KeyCreated:
    """A new key for the caller, shown this once (only its digest is stored)."""
    key, record = await keys.create(
        user_id=principal.user_id, name=body.name, expires_at=body.expires_at
    )
    return KeyCreated.of(record, key)


@router.get("")
async def list_keys(principal: PrincipalDep, keys: KeysDep) -> KeyList:
    """The caller's keys: names, first characters and dates; never a key itself."""
    return KeyList(items=[KeyOut.model_validate(k) for k in await keys.of_user(principal.user_id)])


@router.delete(
    "/{key_id}",
    responses={404: {"model": ErrorOut, "description": "No key of yours has this id"}},
)
async def revoke_key(key_id: uuid.UUID, principal: PrincipalDep, keys: KeysDep) -> KeyOut:
    """Revoke one of the caller's keys (an admin may revoke anyone's); it stops working
    within AUTH_CACHE_SECONDS in every API process. Revoking twice is harmless."""
    owner = None if principal.is_admin else principal.user_id
    return KeyOut.model_validate(await keys.revoke(key_id, owner=owner))
