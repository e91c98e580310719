"""Retry backoff: exponential with jitter, delivered through a few delay queues.

A queue only expires messages at its head, so one delay queue holding very different TTLs
would hold a short delay behind a long one. Each backoff level gets its own queue and every
message in it waits between half and all of that level's delay, so a message is held at
most half a level longer than its own TTL.
"""

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    level: int  # which delay queue
    delay_s: float  # the message's own TTL


def level_delays_s(base_s: float, max_s: float) -> list[float]:
    """The nominal delay of each level: base, 2 x base, 4 x base, ... capped at max."""
    levels = max(1, math.ceil(math.log2(max_s / base_s)) + 1)
    return [min(base_s * 2**level, max_s) for level in range(levels)]


def backoff(failed_attempts: int, base_s: float, max_s: float, rng: random.Random) -> Backoff:
    """The wait before the retry that follows `failed_attempts` failures ("equal jitter")."""
    delays = level_delays_s(base_s, max_s)
    level = min(max(failed_attempts, 1) - 1, len(delays) - 1)
    nominal = delays[level]
    return Backoff(level=level, delay_s=nominal / 2 + rng.uniform(0, nominal / 2))
