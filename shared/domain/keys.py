"""API keys: how they are made, recognised and stored (as a digest). Pure functions.

A key is `tq_` and 43 URL-safe characters from `secrets` (256 bits). The `tq_` prefix lets
secret scanners find leaked keys; only the SHA-256 digest is ever stored, and a listing
shows the first characters (`prefix`) so a person can tell keys apart.
"""

import hashlib
import secrets

KEY_PREFIX = "tq_"
SHOWN_CHARS = 11  # "tq_" and 8 characters: enough to tell keys apart, useless to guess
KEY_BYTES = 32


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def digest(key: str) -> bytes:
    """What is stored and looked up: SHA-256 of the whole key. A key has 256 random bits,
    so a slow password hash would add nothing but latency."""
    return hashlib.sha256(key.encode()).digest()


def shown_prefix(key: str) -> str:
    return key[:SHOWN_CHARS]


def looks_like_key(value: str) -> bool:
    """Cheap shape check before any lookup; says nothing about validity."""
    return value.startswith(KEY_PREFIX) and 20 <= len(value) <= 200 and value.isascii()
