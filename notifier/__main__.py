"""`python -m notifier`."""

import asyncio

from notifier.main import run_notifier
from shared.logs import configure_logging
from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    asyncio.run(run_notifier(settings))


main()
