"""Reading this process's own Prometheus metrics in tests."""

from prometheus_client import REGISTRY

from shared.background.periodic import FAILURES


def loop_failures(loop: str) -> float:
    """How often the background loop `loop` crashed in this process so far."""
    FAILURES.labels(loop)  # the series exists from 0
    value = REGISTRY.get_sample_value("taskq_background_loop_failures_total", {"loop": loop})
    return value or 0.0
