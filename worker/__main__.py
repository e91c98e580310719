"""`python -m worker` starts one worker process."""

import uvloop

from shared.logs import configure_logging
from shared.settings import get_settings
from worker.main import run_worker, worker_id


def main() -> None:
    settings = get_settings()
    identity = worker_id()
    configure_logging(settings, worker_id=identity)
    uvloop.run(run_worker(settings, identity))


if __name__ == "__main__":
    main()
