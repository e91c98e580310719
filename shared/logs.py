"""Logging setup shared by the API and the worker."""

import logging

from shared.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format=TEXT_FORMAT, force=True)
    # aio-pika and aiormq log every reconnect attempt at length; their warnings are enough.
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(
            max(logging.WARNING, logging.getLevelName(settings.log_level))
        )
