"""`python -m notifier`."""

import uvloop

from notifier.main import run_notifier
from shared.logs import configure_logging
from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    uvloop.run(run_notifier(settings))  # as the API and the worker: a cheaper event loop


main()
