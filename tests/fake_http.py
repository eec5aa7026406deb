"""What the loopback API fakes share: a JSON (or plain-text) response from a request handler."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, code: int, body: Any) -> None:
    """Writes ``body`` as the whole response: JSON, or text/plain when it is a string."""
    text = isinstance(body, str)
    payload = body.encode() if text else json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "text/plain" if text else "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
