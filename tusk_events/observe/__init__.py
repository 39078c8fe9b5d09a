"""Observers: Prometheus metrics, tracing (causation trees, OpenTelemetry), logs, the
architecture graph. They listen to the runtime's signals; the runtime never imports them.

May import everything below it (``runtime``, ``config``, ``bus``, ``store``, ...). Imported only
by the CLI and user code.
"""
