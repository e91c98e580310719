"""Who is calling: every request under /api/v1 carries an API key, as
`Authorization: Bearer <key>` or `X-API-Key: <key>` (never in the URL), or the dashboard's
session cookie, which a signed-in browser sends (see `api.dashboard`).

A valid credential's principal is cached in the process for AUTH_CACHE_SECONDS, so most
requests need no lookup, and a revoked key, an ended session or a disabled user stops
working within that time in every API process.

A session is a cookie, which a browser sends by itself: a changing request made with one
must also carry the session's CSRF token (`X-CSRF-Token`), which only its own pages know.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBearer,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.datastructures import State

from shared.db.engine import connect
from shared.db.keys import KeyRepository
from shared.db.sessions import SessionRepository
from shared.domain import keys, sessions
from shared.domain.errors import CsrfRefused, Forbidden, NotAuthenticated
from shared.domain.records import Principal

SESSION_COOKIE = "taskq_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Every scheme appears in the OpenAPI document (and the docs' "Authorize" button); any does.
_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer tq_...`")
_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: tq_...`")
_COOKIE = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="The dashboard's session (sign in at /dashboard/login); changing requests "
    f"also need `{CSRF_HEADER}`",
)
# Entries cached at once per process; past it the cache starts over (keys and sessions are
# few, callers many).
CACHE_MAX_ENTRIES = 10_000


class PrincipalCache:
    """Principals of valid keys (or sessions), by digest, for a short time. Invalid ones
    are not cached.

    When an entry runs out, one request looks the key up again while the others with the
    same key wait for it (`refreshing`), instead of all of them asking the database.
    """

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}

    def refreshing(self, digest: bytes) -> asyncio.Lock:
        if len(self._locks) >= CACHE_MAX_ENTRIES:
            self._locks = {d: lock for d, lock in self._locks.items() if lock.locked()}
        return self._locks.setdefault(digest, asyncio.Lock())

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] > self._ttl_s:
            return None
        return entry[1]

    def put(self, digest: bytes, principal: Principal) -> None:
        if len(self._entries) >= CACHE_MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (time.monotonic(), principal)

    def forget(self, digest: bytes) -> None:
        self._entries.pop(digest, None)


Lookup = Callable[[AsyncConnection], Awaitable[Principal | None]]


async def _cached(
    engine: AsyncEngine, cache: PrincipalCache, digest: bytes, lookup: Lookup
) -> Principal:
    principal = cache.get(digest)
    if principal is not None:
        return principal
    async with cache.refreshing(digest):
        principal = cache.get(digest)  # another request may have just looked it up
        if principal is None:
            async with connect(engine) as conn:
                principal = await lookup(conn)
            if principal is None:
                raise NotAuthenticated()
            cache.put(digest, principal)
    return principal


async def principal_of(engine: AsyncEngine, cache: PrincipalCache, key: str | None) -> Principal:
    """The principal behind `key`; NotAuthenticated, saying nothing of why, if there is none."""
    if key is None or not keys.looks_like_key(key):
        raise NotAuthenticated()
    return await _cached(
        engine, cache, keys.digest(key), lambda conn: KeyRepository(conn).principal(key)
    )


async def session_principal(
    engine: AsyncEngine, cache: PrincipalCache, token: str | None
) -> Principal:
    """The principal of a dashboard session; NotAuthenticated if it is not a valid one."""
    if token is None or not sessions.looks_like_token(token):
        raise NotAuthenticated()
    return await _cached(
        engine,
        cache,
        sessions.digest(token),
        lambda conn: SessionRepository(conn).principal(token),
    )


@dataclass(frozen=True)
class Credential:
    """What a request authenticates with: an API key, or a dashboard session's token."""

    secret: str
    is_session: bool

    async def principal(self, state: State) -> Principal:
        if self.is_session:
            return await session_principal(state.engine, state.session_cache, self.secret)
        return await principal_of(state.engine, state.key_cache, self.secret)


async def start_session(state: State, principal: Principal, lifetime: timedelta) -> str:
    async with connect(state.engine) as conn:
        return await SessionRepository(conn).start(principal, lifetime=lifetime)


async def purge_sessions(state: State) -> None:
    async with connect(state.engine) as conn:
        await SessionRepository(conn).purge()


async def end_session(state: State, token: str) -> None:
    """Sign-out: at once in this process, within AUTH_CACHE_SECONDS in the others."""
    state.session_cache.forget(sessions.digest(token))
    async with connect(state.engine) as conn:
        await SessionRepository(conn).end(token)


async def current_credential(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    header_key: Annotated[str | None, Depends(_HEADER)],
    session: Annotated[str | None, Depends(_COOKIE)],
) -> Credential:
    """A key in a header wins over a session cookie (a program that also holds a cookie)."""
    key = bearer.credentials if bearer is not None else header_key
    if key is not None:
        return Credential(key, is_session=False)
    if session is not None:
        return Credential(session, is_session=True)
    raise NotAuthenticated()


CredentialDep = Annotated[Credential, Depends(current_credential)]


async def current_principal(request: Request, credential: CredentialDep) -> Principal:
    principal = await credential.principal(request.app.state)
    if (
        credential.is_session
        and request.method not in SAFE_METHODS
        and not sessions.csrf_matches(credential.secret, request.headers.get(CSRF_HEADER))
    ):
        raise CsrfRefused()
    return principal


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if not principal.is_admin:
        raise Forbidden()
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(admin_principal)]
