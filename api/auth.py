"""Who is calling: every request under /api/v1 carries an API key, as
`Authorization: Bearer <key>` or `X-API-Key: <key>` (never in the URL).

A valid key's principal is cached in the process for AUTH_CACHE_SECONDS, so most requests
need no lookup, and a revoked key or a disabled user stops working within that time in
every API process.
"""

import asyncio
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import connect
from shared.db.keys import KeyRepository
from shared.domain import keys
from shared.domain.errors import Forbidden, NotAuthenticated
from shared.domain.records import Principal

# Both schemes appear in the OpenAPI document (and the docs' "Authorize" button); either does.
_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer tq_...`")
_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: tq_...`")
# Keys cached at once per process; past it the cache starts over (keys are few, callers many).
CACHE_MAX_KEYS = 10_000


class KeyCache:
    """Valid keys' principals, by digest, for a short time. Invalid keys are not cached.

    When an entry runs out, one request looks the key up again while the others with the
    same key wait for it (`refreshing`), instead of all of them asking the database.
    """

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}

    def refreshing(self, digest: bytes) -> asyncio.Lock:
        if len(self._locks) >= CACHE_MAX_KEYS:
            self._locks = {d: lock for d, lock in self._locks.items() if lock.locked()}
        return self._locks.setdefault(digest, asyncio.Lock())

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] > self._ttl_s:
            return None
        return entry[1]

    def put(self, digest: bytes, principal: Principal) -> None:
        if len(self._entries) >= CACHE_MAX_KEYS:
            self._entries.clear()
        self._entries[digest] = (time.monotonic(), principal)


async def principal_of(engine: AsyncEngine, cache: KeyCache, key: str | None) -> Principal:
    """The principal behind `key`; NotAuthenticated, saying nothing of why, if there is none."""
    if key is None or not keys.looks_like_key(key):
        raise NotAuthenticated()
    digest = keys.digest(key)
    principal = cache.get(digest)
    if principal is not None:
        return principal
    async with cache.refreshing(digest):
        principal = cache.get(digest)  # another request may have just looked it up
        if principal is None:
            async with connect(engine) as conn:
                principal = await KeyRepository(conn).principal(key)
            if principal is None:
                raise NotAuthenticated()
            cache.put(digest, principal)
    return principal


async def current_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    header_key: Annotated[str | None, Depends(_HEADER)],
) -> Principal:
    key = bearer.credentials if bearer is not None else header_key
    state = request.app.state
    return await principal_of(state.engine, state.key_cache, key)


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if not principal.is_admin:
        raise Forbidden()
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(admin_principal)]
