"""LOG_LEVEL governs uvicorn's loggers too, whatever level uvicorn gave them."""

import logging
from collections.abc import Iterator

import pytest

from shared.logs import configure_logging
from shared.settings import Settings

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture(autouse=True)
def as_uvicorn_leaves_them() -> Iterator[None]:
    """Uvicorn's default log config sets INFO on its loggers before the app is imported."""
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_at_warning_the_access_log_is_silent() -> None:
    configure_logging(Settings(log_level="WARNING"))

    assert not logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
    assert logging.getLogger("uvicorn.error").isEnabledFor(logging.WARNING)


def test_at_info_the_access_log_is_written() -> None:
    configure_logging(Settings(log_level="INFO"))

    assert logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
