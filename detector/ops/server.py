"""``/metrics`` (Prometheus text format) and ``/healthz`` on one port, in a daemon thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from detector.errors import UsageError
from detector.ops.metrics import MetricSet


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would flood the log; stay quiet."""


class MetricsServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` on one port, in a daemon thread.

    ``not_ready`` says why the program is not ready ("" when it is): ``/healthz`` answers 200
    ``ready``, or 503 ``not ready: <why>``; ``note`` adds a line to either (a model version that
    failed to load while the current one serves on).
    """

    def __init__(self, metrics: MetricSet, host: str, port: int,
                 not_ready: Callable[[], str], note: Callable[[], str] = lambda: ""):
        prometheus_app = make_wsgi_app(metrics.registry)

        def app(environ, start_response):  # type: ignore[no-untyped-def]
            if environ.get("PATH_INFO") == "/healthz":
                why, more = not_ready(), note()
                start_response(
                    "503 Service Unavailable" if why else "200 OK",
                    [("Content-Type", "text/plain; charset=utf-8")],
                )
                body = f"not ready: {why}\n" if why else "ready\n"
                return [(body + (f"note: {more}\n" if more else "")).encode()]
            return prometheus_app(environ, start_response)

        class _Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self._server = make_server(host, port, app, _Server, handler_class=_QuietHandler)
        except OSError as exc:
            # The port is a setting: one that is taken is the user's to change (exit 2).
            raise UsageError(f"cannot serve metrics on {host}:{port}: {exc.strerror}; set "
                             "another --metrics-port (0: any free port)") from exc
        self.host, self.port = host, self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"
