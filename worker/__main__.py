"""`python -m worker` starts one worker process."""

import uvloop

from shared.logs import configure_logging
from shared.settings import get_settings
from worker.main import run_worker


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    uvloop.run(run_worker(settings))


if __name__ == "__main__":
    main()
