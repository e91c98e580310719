"""The monitoring dashboard at /dashboard: server-rendered pages (Jinja2) made live by a
little JavaScript that follows the event stream. Nothing is loaded from elsewhere."""
