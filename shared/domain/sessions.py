"""Dashboard sessions: their tokens, and the CSRF token each implies. Pure functions.

A session token is `ts_` and 43 URL-safe characters from `secrets`; only its SHA-256
digest is stored. The CSRF token is an HMAC of the session token, so it needs no storage
of its own and a page can carry it while the cookie stays out of reach of scripts.
"""

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "ts_"
TOKEN_BYTES = 32


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 20 <= len(value) <= 100 and value.isascii()


def csrf_token(token: str) -> str:
    """What the session's pages send back in `X-CSRF-Token` with every changing request."""
    return hmac.new(token.encode(), b"taskq csrf", hashlib.sha256).hexdigest()


def csrf_matches(token: str, sent: str | None) -> bool:
    # Bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, a 500).
    return sent is not None and hmac.compare_digest(csrf_token(token).encode(), sent.encode())
