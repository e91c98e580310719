"""The one write path: every change of a task's status is one statement, built here.

That statement does three things at once, so none can happen without the others:
1. the guarded change itself, `UPDATE tasks ... WHERE id AND status IN (sources) RETURNING`
   (or the INSERT of a new task), where no row back means the change was not allowed;
2. the task's history row in `task_events` (from, to, attempt, worker, reason);
3. the exact counters in `task_counts`: minus one for the old status, plus one for the new.

Statements are built once at import, with bind parameters (`task_id`, `actor`,
`reason`, and whatever the caller's values name): building Core statements costs more CPU
than sending them. `reason` defaults to the transition's own.
"""

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    CTE,
    ColumnElement,
    Integer,
    Select,
    String,
    Uuid,
    bindparam,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db.tables import COUNT_SHARDS, task_counts, task_events, tasks
from shared.domain.enums import TaskStatus
from shared.domain.transitions import CREATED_REASON, PUBLISH, Transition

# Who made the change: a worker's id (None for the API), and the user whose request it was
# (None for workers). Not named like columns: SQLAlchemy would add an execute parameter
# named like a column to the UPDATE's SET clause.
ACTOR = bindparam("actor", type_=String())
ACTOR_USER = bindparam("actor_user", type_=Uuid())
# API changes are limited to the caller's own tasks unless `owner` is None (an admin, a
# worker): another owner's task is then simply not there, exactly like an unknown id.
OWNED = or_(
    bindparam("owner", type_=Uuid()).is_(None), tasks.c.owner_id == bindparam("owner", type_=Uuid())
)

# Marks every write-path statement, so that `shared.db.wakeups` can tell the event stream
# that history rows were written, without a trigger (a NOTIFY in the writing transaction
# serialises commits: it halved insert throughput at 4 clients, 8.3k -> 4.4k tps, here).
RECORDS_HISTORY = "taskq_records_history"

# What a new task's INSERT binds; everything else takes the column's default.
NEW_TASK_FIELDS = (
    "owner_id",
    "title",
    "description",
    "priority",
    "kind",
    "params",
    "max_retries",
    "timeout_seconds",
)


def creation() -> Select[Any]:
    """INSERT a NEW task with its creation event and count; binds NEW_TASK_FIELDS."""
    values: dict[str, Any] = {field: bindparam(field) for field in NEW_TASK_FIELDS}
    values["params"] = bindparam("params", type_=JSONB())
    values["owner_id"] = bindparam("owner_id", type_=Uuid())
    values["status"] = TaskStatus.NEW.value
    created = (
        insert(tasks)
        .values(**values)
        .returning(
            *tasks.c,
            null().cast(String).label("from_status"),
            null().cast(String).label("from_priority"),
        )
        .cte("changed")
    )
    return _recorded(created, CREATED_REASON)


# A history row's reason: fixed text, or a SQL expression made from the changed row.
Reason = str | Callable[[CTE], ColumnElement[str]] | None


def transition(
    move: Transition,
    *conditions: ColumnElement[bool],
    reason: Reason = None,
    **values: Any,
) -> Select[Any]:
    """The guarded UPDATE of `move` for the task `task_id`, with its event and counts.

    Extra `conditions` narrow the guard (a fence on the attempt, an expired lease); extra
    `values` are set along with the new status (or alone, for a move that keeps it).
    `reason` replaces the transition's own in the history row.
    """
    return _transition(move, tasks.c.id == bindparam("task_id"), conditions, reason, values)


def publication_of_many() -> Select[Any]:
    """PUBLISH for many tasks in one statement: those of `task_ids` whose dispatch
    `generations` (in the same order) the broker confirmed, each still NEW. Each history
    row names the task's owner as its user: the API marks its callers' own tasks."""
    confirmed = (
        func.unnest(
            bindparam("task_ids", type_=ARRAY(Uuid())),
            bindparam("generations", type_=ARRAY(Integer())),
        )
        .table_valued("id", "generation")
        .render_derived("confirmed")
    )
    fence = tasks.c.dispatch_generation == confirmed.c.generation
    return _transition(PUBLISH, tasks.c.id == confirmed.c.id, (fence,), None, {}, by_owner=True)


def _transition(
    move: Transition,
    which: ColumnElement[bool],
    conditions: Sequence[ColumnElement[bool]],
    reason: Reason,
    values: dict[str, Any],
    by_owner: bool = False,
) -> Select[Any]:
    reason = reason if reason is not None else move.reason
    guard = [tasks.c.status.in_(sorted(s.value for s in move.sources)), *conditions]
    changes = {"updated_at": func.now(), **values}
    if move.target is not None:
        changes["status"] = move.target.value
    if len(move.sources) == 1 and "priority" not in values:
        [source] = move.sources
        changed = (
            update(tasks)
            .where(which, *guard)
            .values(**changes)
            .returning(
                *tasks.c,
                literal(source.value, String).label("from_status"),
                tasks.c.priority.label("from_priority"),  # unchanged by this move
            )
            .cte("changed")
        )
        return _recorded(changed, reason, by_owner)
    # Several sources: the history needs the one the task was in. UPDATE ... RETURNING
    # only sees the new row, so lock and read the old status in the same statement.
    # The guard here too: a row the change may not touch (another owner's, say) is not
    # even locked. PostgreSQL re-checks it after waiting for the lock.
    before = (
        select(tasks.c.id, tasks.c.status, tasks.c.priority)
        .where(tasks.c.id == bindparam("task_id"), *guard)
        .with_for_update()
        .cte("before")
    )
    changed = (
        update(tasks)
        # The id again, not only the join: the planner then reaches the row by its key.
        .where(tasks.c.id == bindparam("task_id"), tasks.c.id == before.c.id, *guard)
        .values(**changes)
        .returning(
            *tasks.c,
            before.c.status.label("from_status"),
            before.c.priority.label("from_priority"),
        )
        .cte("changed")
    )
    return _recorded(changed, reason)


def _recorded(changed: CTE, reason: Reason, by_owner: bool = False) -> Select[Any]:
    """The changed tasks' rows, with their history rows and counter moves written alongside;
    the history's user is `actor_user`, or with `by_owner` each task's owner."""
    event = (
        insert(task_events)
        .from_select(
            ["task_id", "from_status", "to_status", "attempt", "worker_id", "reason", "user_id"],
            select(
                changed.c.id,
                changed.c.from_status,
                changed.c.status,
                changed.c.attempts,
                ACTOR,
                reason(changed) if callable(reason) else _reason_param(reason),
                changed.c.owner_id if by_owner else ACTOR_USER,
            ),
        )
        .cte("event")
    )
    return (
        select(*(changed.c[column.name] for column in tasks.c))
        .add_cte(event, _counted(changed))
        .execution_options(**{RECORDS_HISTORY: True})
    )


def _reason_param(default: str | None) -> ColumnElement[str]:
    return bindparam("reason", default, type_=String())


def _counted(changed: CTE) -> CTE:
    """Minus one on the old (status, priority), plus one on the new, on the task's shard.

    Rows are locked in key order, so two statements moving counters in opposite
    directions cannot deadlock.
    """
    shard = (func.get_byte(func.uuid_send(changed.c.id), 15) % COUNT_SHARDS).label("shard")
    moved = or_(
        changed.c.from_status.is_distinct_from(changed.c.status),
        changed.c.from_priority.is_distinct_from(changed.c.priority),
    )
    deltas = union_all(
        select(
            changed.c.from_status.label("status"),
            changed.c.owner_id,
            changed.c.from_priority.label("priority"),
            shard,
            literal(-1).label("n"),
        ).where(moved, changed.c.from_status.is_not(None)),
        select(
            changed.c.status, changed.c.owner_id, changed.c.priority, shard, literal(1).label("n")
        ).where(moved),
    ).subquery("deltas")
    # Summed per counter row: one statement may change many tasks, and an upsert may not
    # touch the same row twice.
    key = (deltas.c.status, deltas.c.owner_id, deltas.c.priority, deltas.c.shard)
    upsert = pg_insert(task_counts).from_select(
        ["status", "owner_id", "priority", "shard", "n"],
        select(*key, func.sum(deltas.c.n).cast(Integer))
        .group_by(*key)
        # The whole key: a statement changing many tasks locks many rows of one (status,
        # priority), and two such statements must take them in the same order.
        .order_by(deltas.c.status, deltas.c.priority, deltas.c.owner_id, deltas.c.shard),
    )
    return upsert.on_conflict_do_update(
        index_elements=["owner_id", "status", "priority", "shard"],
        set_={"n": task_counts.c.n + upsert.excluded.n},
    ).cte("counted")
