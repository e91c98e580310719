"""The notifier: a process of its own that turns task history into webhooks and e-mails.

Its own process, not a loop in the worker: deliveries wait on other people's servers (up to
WEBHOOK_TIMEOUT_SECONDS each), and that must never slow a worker's drain; it scales on its
own (any number share the outbox); and its outbound traffic to arbitrary URLs can be
fenced off by network policy away from the workers and the API.
"""
