"""Operations: the Prometheus metrics (one registry object, passed in), the ``/metrics`` and
``/healthz`` server, and how the process uses memory."""
