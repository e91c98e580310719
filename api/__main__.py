"""`python -m api [--host H] [--port P]`: the API under uvicorn, API_PROCESSES processes.

One process per core is how a Python HTTP service uses more than one core; each process has
its own pool, relay loop and event hub (the relay's claims and the hub's reads are safe to
run side by side). Replicas behind a load balancer do the same across machines.
"""

import argparse

import uvicorn

from shared.settings import get_settings

# Open event streams never end by themselves: without a bound, a SIGTERMed API would wait
# for them forever.
GRACEFUL_SHUTDOWN_S = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(
        "api.main:app",
        host=args.host,
        port=args.port,
        workers=get_settings().api_processes,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


if __name__ == "__main__":
    main()
