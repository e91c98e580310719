"""Signing in to the dashboard over HTTP, as a browser does, for tests."""

import re

import httpx

from api.auth import SESSION_COOKIE

LOGIN = "/dashboard/login"
_LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """GET the sign-in form, POST it with `key`; the client then holds the cookies."""
    form = await client.get(LOGIN)
    found = _LOGIN_TOKEN.search(form.text)
    assert found, form.text
    return await client.post(LOGIN, data={"key": key, "login_token": found.group(1)})


async def csrf_token(client: httpx.AsyncClient) -> str:
    """The CSRF token a signed-in page carries."""
    page = await client.get("/dashboard")
    found = _CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def session_cookie(client: httpx.AsyncClient) -> str:
    value = client.cookies.get(SESSION_COOKIE)
    assert value, "not signed in"
    return value
