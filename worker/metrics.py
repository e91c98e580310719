"""The worker's Prometheus metrics, served on WORKER_METRICS_PORT."""

from prometheus_client import Counter, Gauge, Histogram

# Up to the longest task time limits: a task service's durations span ms to many minutes.
DURATION_BUCKETS_S = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800)

FINISHED = Counter(
    "taskq_worker_tasks_finished_total",
    "Attempts ended, by outcome (completed, failed, cancelled, retried) and kind",
    ["outcome", "kind"],
)
PROCESSING = Histogram(
    "taskq_worker_task_duration_seconds", "Time a handler ran", ["kind"], buckets=DURATION_BUCKETS_S
)
QUEUE_WAIT = Histogram(
    "taskq_worker_queue_wait_seconds",
    "From a task's creation to the start of this attempt",
    buckets=DURATION_BUCKETS_S,
)
IN_FLIGHT = Gauge("taskq_worker_tasks_in_flight", "Handlers running now")
REDELIVERIES = Counter(
    "taskq_worker_redeliveries_total", "Messages the broker delivered again after a lost channel"
)
STALE_MESSAGES = Counter(
    "taskq_worker_stale_messages_total",
    "Messages of an older dispatch (a re-prioritised task): acknowledged, nothing run",
)
DEAD_LETTERED = Counter(
    "taskq_worker_dead_lettered_total", "Messages parked in the DLQ: unusable, or a poison task"
)
