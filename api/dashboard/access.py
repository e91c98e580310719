"""Signing in to the dashboard: an API key exchanged for a session cookie, and back out.

The key travels once, in the sign-in form's body (never a URL), and is kept nowhere: the
browser holds only the session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS),
which no script can read. Pages carry the session's CSRF token for their changing
requests. The sign-in form has a token of its own, so no other site can sign a browser
in to an account of its choosing.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Cookie, Depends, Request, Response
from starlette.datastructures import State

from api.auth import SESSION_COOKIE, principal_of, session_principal, start_session
from shared.domain import sessions
from shared.domain.errors import NotAuthenticated
from shared.domain.records import Principal

LOGIN_COOKIE = "taskq_login"
# A sign-in form is small; anything bigger is not one.
FORM_MAX_BYTES = 4096


class SignInRequired(Exception):
    """No valid dashboard session: pages send the browser to the sign-in form."""


@dataclass(frozen=True)
class Viewer:
    """Who looks at a dashboard page, and the CSRF token its page carries."""

    principal: Principal
    csrf_token: str


async def current_viewer(
    request: Request, session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None
) -> Viewer:
    state = request.app.state
    try:
        principal = await session_principal(state.engine, state.session_cache, session)
    except NotAuthenticated:
        raise SignInRequired() from None
    assert session is not None
    return Viewer(principal=principal, csrf_token=sessions.csrf_token(session))


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def remember_login_token(response: Response, request: Request, token: str) -> None:
    """The sign-in form's token, also in a cookie: a POST must bring both, equal."""
    _set_cookie(response, request, LOGIN_COOKIE, token, path="/dashboard/login")


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form's fields (the first value of each)."""
    body = await request.body()
    if len(body) > FORM_MAX_BYTES:
        return {}
    try:
        fields = parse_qs(body.decode(), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


async def sign_in(
    state: State, key: str, *, lifetime: timedelta, response: Response, request: Request
) -> bool:
    """Start a session for a valid key and set its cookie; False for anything else."""
    try:
        principal = await principal_of(state.engine, state.key_cache, key.strip())
    except NotAuthenticated:
        return False
    token = await start_session(state, principal, lifetime)
    _set_cookie(response, request, SESSION_COOKIE, token, path="/", max_age=lifetime)
    response.delete_cookie(LOGIN_COOKIE, path="/dashboard/login")
    return True


def _set_cookie(
    response: Response,
    request: Request,
    name: str,
    value: str,
    *,
    path: str,
    max_age: timedelta | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=None if max_age is None else int(max_age.total_seconds()),
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
