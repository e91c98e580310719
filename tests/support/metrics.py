"""Reading Prometheus metrics in tests: this process's own, and those a process serves."""

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from shared.background.periodic import FAILURES


def loop_failures(loop: str) -> float:
    """How often the background loop `loop` crashed in this process so far."""
    FAILURES.labels(loop)  # the series exists from 0
    value = REGISTRY.get_sample_value("taskq_background_loop_failures_total", {"loop": loop})
    return value or 0.0


async def served_metric(base_url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample from another process's GET /metrics; 0 if the series does not exist yet."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return float(sample.value)
    return 0.0
