"""The API's Prometheus metrics, served at /metrics."""

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "taskq_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "taskq_api_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TASKS_CREATED = Counter("taskq_tasks_created_total", "Tasks accepted (201)", ["priority"])


class MetricsMiddleware:
    """Counts and times every request by route template (never the raw path: ids would
    make a new time series per task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        streamed = False

        async def remember_status(message: Message) -> None:
            nonlocal status, streamed
            if message["type"] == "http.response.start":
                status = message["status"]
                streamed = (b"content-type", b"text/event-stream") in message["headers"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = scope.get("route")
            labels = (scope["method"], getattr(route, "path", "unmatched"), str(status))
            REQUESTS.labels(*labels).inc()
            if not streamed:  # a stream's lifetime is no latency: it would skew the buckets
                LATENCY.labels(*labels).observe(time.perf_counter() - started)


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
