"""One value per query parameter that takes one: `?limit=5&limit=500` is a 422, not 500.

FastAPI quietly keeps the last of repeated values of a scalar parameter. A client that
repeats one has made a mistake (or is probing how a proxy and the API disagree about
which value counts); saying so is clearer than choosing for it.
"""

import types
import typing
from collections.abc import Iterator

from fastapi import Request
from fastapi.exceptions import RequestValidationError

_MANY = (list, set, tuple, frozenset)


async def single_values(request: Request) -> None:
    """An app-wide dependency: reject a scalar query parameter given more than once."""
    if not request.scope.get("query_string"):
        return  # nothing repeated; most requests (every create) have no query at all
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    given = request.query_params
    errors = [
        {
            "type": "repeated_value",
            "loc": ("query", name),
            "msg": f"give {name} once (it was given {len(given.getlist(name))} times)",
            "input": given.getlist(name),
        }
        for name in _scalar_names(dependant)
        if len(given.getlist(name)) > 1
    ]
    if errors:
        raise RequestValidationError(errors)


def _scalar_names(dependant: typing.Any) -> Iterator[str]:
    for field in dependant.query_params:
        if not _takes_many(field.field_info.annotation):
            yield field.alias
    for sub in dependant.dependencies:
        yield from _scalar_names(sub)


def _takes_many(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_many(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _takes_many(typing.get_args(annotation)[0])
    return origin in _MANY or annotation in _MANY
