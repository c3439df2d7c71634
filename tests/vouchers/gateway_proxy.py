"""A small HTTP proxy in front of a gateway (localstripe), for fault tests.

``FaultProxy(upstream).start()`` listens on a loopback port of its own and passes every request
through, unless a fault is set for it with ``fail(step, mode)``. A step is a method and a path
pattern (``STEPS`` names the co-payment's); the fault holds for every matching request until
``clear()``, so the client's retries meet it too. The modes, each a way a real gateway fails:

- ``refuse``: answer 500 without passing the request on (the gateway did nothing);
- ``lost``: pass it on, so the gateway acts, then answer 500 instead of its answer (the answer
  was lost on the way back);
- ``slow``: pass it on only after ``delay_s`` (longer than the client's timeout): the client has
  given up, and the gateway acts anyway, later;
- ``hang``: accept the request and never answer, never pass it on (until the client hangs up);
- ``stopped``: call ``on_stop`` (which stops the gateway's process) and drop the connection
  without an answer; later requests find the gateway down until the test starts it again.

``wait_idle()`` waits until no request is in the proxy (a ``slow`` request has reached the
gateway), so that what the gateway holds is settled before the test looks. ``faults`` counts
the requests that met a fault.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# The gateway calls a card co-payment makes (vouchers/redemption/gateway.py). Capture is
# automatic (``capture_method=automatic``): the confirm call charges and captures at once.
STEPS = {
    "create": ("POST", r"/v1/payment_intents"),
    "method": ("POST", r"/v1/payment_methods"),
    "confirm": ("POST", r"/v1/payment_intents/[^/]+/confirm"),
    "retrieve": ("GET", r"/v1/payment_intents/[^/]+"),
    "cancel": ("POST", r"/v1/payment_intents/[^/]+/cancel"),
    "refund": ("POST", r"/v1/refunds"),
}
MODES = ("refuse", "lost", "slow", "hang", "stopped")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    def __init__(self, upstream: str, *, delay_s: float = 1.0, on_stop: Callable | None = None):
        self.upstream = upstream.rstrip("/")
        self.delay_s = delay_s
        self.on_stop = on_stop
        self.faults = 0  # requests that met a fault
        self._fault: tuple[str, re.Pattern, str] | None = None
        self._lock = threading.Lock()
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail(self, step: str, mode: str) -> None:
        assert mode in MODES, mode
        method, pattern = STEPS[step]
        with self._lock:
            self._fault = (method, re.compile(pattern + r"\Z"), mode)

    def clear(self) -> None:
        with self._lock:
            self._fault = None

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Until every request has been answered or dropped (a slow one has been passed on)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self._busy} requests still in the proxy")
                self._idle.wait(left)

    # -- used by the handler

    def _fault_for(self, method: str, path: str) -> str | None:
        with self._lock:
            if self._fault is None:
                return None
            want, pattern, mode = self._fault
            if want != method or not pattern.match(path):
                return None
            self.faults += 1
            return mode

    def _enter(self) -> None:
        with self._lock:
            self._busy += 1

    def _leave(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: the test's own output is what matters

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self):  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        self.proxy._enter()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            mode = self.proxy._fault_for(self.command, path)
            if mode == "hang":
                self._wait_for_hang_up()
                return
            if mode == "stopped":
                if self.proxy.on_stop is not None:
                    self.proxy.on_stop()
                self._drop()
                return
            if mode == "refuse":
                self._answer(500, b'{"error": {"type": "api_error"}}')
                return
            if mode == "slow":
                self.proxy._closing.wait(self.proxy.delay_s)
            try:
                upstream = self._pass_on(body)
            except requests.ConnectionError:
                self._drop()  # the gateway is down: so is the connection through us
                return
            if mode == "lost":
                self._answer(500, b'{"error": {"type": "api_error"}}')
                return
            self._answer(upstream.status_code, upstream.content, upstream.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timed out) before the answer: as at a real gateway
        finally:
            self.close_connection = True
            self.proxy._leave()

    def _pass_on(self, body: bytes) -> requests.Response:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        return requests.request(
            self.command,
            self.proxy.upstream + self.path,
            data=body or None,
            headers=headers,
            timeout=30,
            allow_redirects=False,
        )

    def _answer(self, status: int, content: bytes, headers=None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(content)

    def _drop(self) -> None:
        """Close without an answer, with a reset (as a process that died mid-request)."""
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _wait_for_hang_up(self) -> None:
        sock = self.connection
        while not self.proxy._closing.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable and not sock.recv(1, socket.MSG_PEEK):
                return  # the client closed its end
