from shared import transitions as t
from shared.enums import TERMINAL_STATUSES, TaskStatus


def test_no_transition_leaves_a_terminal_status() -> None:
    for transition in t.ALL:
        assert not transition.sources & TERMINAL_STATUSES, transition.name


def test_every_status_but_new_can_be_reached() -> None:
    reachable = {transition.target for transition in t.ALL}
    assert reachable == set(TaskStatus) - {TaskStatus.NEW}


def test_claim_accepts_a_task_the_api_has_not_marked_pending_yet() -> None:
    assert t.CLAIM.allows(TaskStatus.NEW)
    assert t.CLAIM.allows(TaskStatus.PENDING)
    assert not t.CLAIM.allows(TaskStatus.IN_PROGRESS)


def test_only_running_tasks_can_finish() -> None:
    for transition in (t.COMPLETE, t.FAIL, t.CANCEL_RUNNING):
        assert transition.sources == {TaskStatus.IN_PROGRESS}


def test_terminal_statuses_say_so() -> None:
    assert TaskStatus.COMPLETED.is_terminal
    assert not TaskStatus.PENDING.is_terminal
