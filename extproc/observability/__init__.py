"""Observability: Prometheus metrics (multiprocess) and JSON request logs, fed when an exchange ends."""
