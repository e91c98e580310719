"""What a handler's result or error may hold to be stored: a pure policy.

PostgreSQL's text and JSONB cannot hold U+0000. The API refuses it in input; a handler's
output is checked here, so a task with such output ends FAILED at once, saying why,
instead of failing its UPDATE until the lease runs out.
"""

from typing import Any

NUL = "\x00"
NUL_IN_RESULT = "the handler's result contains the NUL character (U+0000), which cannot be stored"


def contains_nul(value: Any) -> bool:
    """Whether a JSON-like value holds U+0000 in any string or key."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(contains_nul(key) or contains_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(item) for item in value)
    return False


def storable_error(error: str) -> str:
    """The error text with U+0000 written out as `\\x00`, so it can be stored."""
    return error.replace(NUL, "\\x00")
