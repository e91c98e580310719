"""A Core statement compiled once for the driver binds its values in the right places."""

import json

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.driver import DriverStatement
from shared.db.tables import tasks

STATEMENT = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"), tasks.c.status.in_(["NEW", "PENDING"]))
    .values(result=bindparam("result", type_=JSONB()), title=bindparam("new_title"))
    .returning(tasks.c.id)
)


def test_named_values_take_their_positions_and_literals_keep_theirs() -> None:
    compiled = DriverStatement.compile(STATEMENT)

    arguments = compiled.arguments({"task_id": "t-1", "result": None, "new_title": "x"})

    by_name = dict(zip(compiled.names, arguments, strict=True))
    assert by_name["task_id"] == "t-1" and by_name["new_title"] == "x"
    # The IN list was expanded into one parameter per literal, valued by SQLAlchemy.
    assert sorted(v for n, v in by_name.items() if n.startswith("status")) == ["NEW", "PENDING"]
    assert compiled.sql.count("$") == len(compiled.names)


def test_json_values_are_sent_as_json_text() -> None:
    compiled = DriverStatement.compile(STATEMENT)

    arguments = compiled.arguments({"task_id": "t", "result": {"n": [1, 2]}, "new_title": "x"})

    assert json.loads(arguments[compiled.names.index("result")]) == {"n": [1, 2]}


def test_a_value_the_statement_needs_but_was_not_given_is_an_error() -> None:
    compiled = DriverStatement.compile(select(tasks.c.id).where(tasks.c.id == bindparam("task_id")))

    with pytest.raises(KeyError, match="task_id"):
        compiled.arguments({})
