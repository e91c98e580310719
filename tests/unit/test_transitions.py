from shared.domain import transitions as t
from shared.domain.enums import TERMINAL_STATUSES, TaskStatus


def test_only_an_explicit_retry_leaves_a_terminal_status() -> None:
    for transition in t.ALL:
        if transition is not t.RERUN:  # a person asks for it through the API, nothing else
            assert not transition.sources & TERMINAL_STATUSES, transition.name
    assert t.RERUN.sources == {TaskStatus.FAILED, TaskStatus.CANCELLED}
    assert t.RERUN.target is TaskStatus.NEW


def test_every_status_can_be_reached() -> None:
    reachable = {transition.target for transition in t.ALL} - {None}
    assert reachable == set(TaskStatus)


def test_a_lost_task_becomes_new_so_the_relay_publishes_it_again() -> None:
    assert t.LOSE.sources == {TaskStatus.IN_PROGRESS}
    assert t.LOSE.target is TaskStatus.NEW


def test_claim_accepts_a_task_the_api_has_not_marked_pending_yet() -> None:
    assert t.CLAIM.allows(TaskStatus.NEW)
    assert t.CLAIM.allows(TaskStatus.PENDING)
    assert not t.CLAIM.allows(TaskStatus.IN_PROGRESS)


def test_only_running_tasks_can_finish() -> None:
    for transition in (t.COMPLETE, t.FAIL, t.CANCEL_RUNNING, t.RETRY, t.RELEASE):
        assert transition.sources == {TaskStatus.IN_PROGRESS}


def test_terminal_statuses_say_so() -> None:
    assert TaskStatus.COMPLETED.is_terminal
    assert not TaskStatus.PENDING.is_terminal
