"""OAUTHBEARER for the tests: unsecured JWTs (``alg: none``, what Kafka's default OAUTHBEARER
validator takes) and an OAuth 2 token endpoint the test runs (client-credentials grant)."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def unsecured_jwt(sub: str, exp: float | None = None) -> str:
    """A token for principal ``sub``, expiring at ``exp`` (default: in an hour)."""
    exp = time.time() + 3600 if exp is None else exp

    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'sub': sub, 'exp': exp})}."


class TokenEndpoint:
    """An OAuth 2 token endpoint (client credentials) while in a ``with``: each request
    recorded, each answered with ``answer(request)`` -> (status, body)."""

    def __init__(self, answer):
        self.requests: list[dict] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                request = {"authorization": self.headers["Authorization"], "form": body,
                           "content_type": self.headers["Content-Type"]}
                requests.append(request)
                status, reply = answer(request)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/oauth2/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> TokenEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
