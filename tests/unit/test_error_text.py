from datetime import UTC, datetime, timedelta

from worker.execution import ERROR_MAX_CHARS, describe


def deep(n: int) -> None:
    if n == 0:
        raise ValueError("bottom of the stack")
    deep(n - 1)


def test_error_text_starts_with_type_and_message() -> None:
    try:
        deep(3)
    except ValueError as exc:
        text = describe(exc)
    assert text.startswith("ValueError: bottom of the stack")
    assert "Traceback" in text


def test_long_tracebacks_are_trimmed_keeping_the_innermost_frames() -> None:
    try:
        deep(400)
    except ValueError as exc:
        text = describe(exc)
    assert len(text) <= ERROR_MAX_CHARS
    assert text.startswith("ValueError: bottom of the stack")
    assert text.rstrip().endswith("ValueError: bottom of the stack")


def test_duration_needs_both_start_and_end() -> None:
    from tests.support.tasks import task_record

    started = datetime(2026, 1, 1, tzinfo=UTC)
    done = task_record(started_at=started, completed_at=started + timedelta(seconds=2))
    running = task_record(started_at=started, completed_at=None)
    assert done.duration_seconds == 2.0
    assert running.duration_seconds is None
