"""py-spy profiles of the measured processes, summarised by where the time goes.

`make bench PROFILE=1` records the API while it creates and the worker while it drains
(bench/results/<name>.folded, flame-graph input) and prints each as shares of samples per
layer: the frame closest to the leaf that belongs to a known layer takes the sample.
"""

import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

# Packages per layer; a frame belongs to the first layer naming its package.
LAYERS = (
    ("our code", ("api", "worker", "shared", "notifier")),
    ("asyncpg", ("asyncpg",)),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("aio-pika / aiormq / pamqp", ("aio_pika", "aiormq", "pamqp")),
    ("HTTP / ASGI (uvicorn, starlette)", ("uvicorn", "starlette", "httptools", "h11")),
    ("FastAPI / pydantic", ("fastapi", "pydantic", "pydantic_core")),
    ("logging / metrics", ("logging", "prometheus_client", "pythonjsonlogger")),
    ("tenacity", ("tenacity",)),
    ("event loop (asyncio, uvloop)", ("asyncio", "uvloop")),
)


class Recording:
    """py-spy sampling one process into `out` (folded stacks) until `stop()`."""

    def __init__(self, pid: int, out: Path) -> None:
        if shutil.which("py-spy") is None:
            raise SystemExit("profiling needs py-spy: pip install py-spy")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        command = ["py-spy", "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
        command += ["--format", "raw", "--output", str(out)]
        self._popen = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> str:
        """End the recording (py-spy writes its file on SIGINT); the summary by layer."""
        self._popen.send_signal(signal.SIGINT)
        self._popen.wait(30)
        return summary(self.out)


def layers(folded: Path) -> dict[str, float]:
    """Share of samples per layer, largest first."""
    counts: Counter[str] = Counter()
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "_find_and_load" in stack:
            continue  # the process importing its modules as it starts: not the work measured
        counts[_layer(stack.split(";"))] += int(n)
    total = sum(counts.values()) or 1
    return {name: n / total for name, n in counts.most_common()}


def _layer(frames: list[str]) -> str:
    # The leaf is last; the frame nearest to it that some layer claims decides.
    for frame in reversed(frames):
        for name, marks in LAYERS:
            # py-spy names a frame `function (package/module.py:line)`.
            if any(f"({package}/" in frame for package in marks):
                return name
    return "other"


def summary(folded: Path) -> str:
    shares = layers(folded)
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if share >= 0.01)
