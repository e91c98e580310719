"""The /api/v1/users resource: admins manage users; anyone reads themself."""

import uuid
from typing import Any

from fastapi import APIRouter, status

from api.auth import AdminDep, PrincipalDep
from api.deps import ConnectionDep, UsersDep
from api.errors import AUTH_ERRORS, BODY_ERRORS, ERRORS
from api.schemas import (
    ErrorOut,
    KeyCreated,
    MePatch,
    UserCreate,
    UserCreated,
    UserList,
    UserOut,
    UserPatch,
)
from shared.db.engine import in_transaction
from shared.db.users import UserRepository
from shared.services.accounts import open_account

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses={**AUTH_ERRORS, **ERRORS})

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No user has this id"}
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**BODY_ERRORS, 409: {"model": ErrorOut, "description": "The name is taken"}},
)
async def create_user(body: UserCreate, admin: AdminDep, conn: ConnectionDep) -> UserCreated:
    """Admin: create a user with its first API key, which is shown this once."""
    async with in_transaction(conn):
        user, key, record = await open_account(
            conn, name=body.name, email=body.email, role=body.role
        )
    return UserCreated(
        user=UserOut.model_validate(user),
        key=KeyCreated.of(record, key),
    )


@router.get("")
async def list_users(admin: AdminDep, users: UsersDep) -> UserList:
    """Admin: every user."""
    return UserList(items=[UserOut.model_validate(u) for u in await users.listing()])


@router.get("/me")
async def me(principal: PrincipalDep, users: UsersDep) -> UserOut:
    """The caller."""
    return UserOut.model_validate(await users.get(principal.user_id))


@router.patch(
    "/me",
    responses={
        **BODY_ERRORS,
        409: {"model": ErrorOut, "description": "No email address to send to"},
    },
)
async def update_me(body: MePatch, principal: PrincipalDep, users: UsersDep) -> UserOut:
    """Your notification choices: `notify_email` lists the statuses of your tasks you are
    e-mailed about (empty: none)."""
    return UserOut.model_validate(
        await users.set_notify_email(principal.user_id, body.notify_email)
    )


@router.get("/{user_id}", responses=NOT_FOUND)
async def get_user(user_id: uuid.UUID, admin: AdminDep, users: UsersDep) -> UserOut:
    """Admin: one user."""
    return UserOut.model_validate(await users.get(user_id))


@router.patch(
    "/{user_id}",
    responses={
        **NOT_FOUND,
        **BODY_ERRORS,
        409: {"model": ErrorOut, "description": "It would leave no active admin"},
    },
)
async def update_user(
    user_id: uuid.UUID, body: UserPatch, admin: AdminDep, conn: ConnectionDep
) -> UserOut:
    """Admin: change a user's email, role, or disable it (its keys stop working within
    AUTH_CACHE_SECONDS). The last active admin cannot be demoted or disabled."""
    async with in_transaction(conn):
        user = await UserRepository(conn).update(user_id, **body.model_dump(exclude_unset=True))
    return UserOut.model_validate(user)
