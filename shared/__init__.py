"""taskq: durable asynchronous tasks on PostgreSQL and RabbitMQ."""

__version__ = "0.2.0"
