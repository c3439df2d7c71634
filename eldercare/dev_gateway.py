"""A real localstripe server for the demo (``make run``) and the gateway tests, run as a
subprocess. It lives in the package, not under tests/, because the demo runs it too; it needs
the ``demo`` extra (localstripe), imported only by the server side.

``LocalStripe(workdir).start()`` runs this file as a script (with ``-P``, so that this
package's directory does not shadow other modules on the path), which serves localstripe's own
aiohttp application (its real resources: payment methods, intents, charges, refunds, 3-D Secure,
signed webhooks) with a few changes, because the stock ``python -m localstripe``:

- listens on every interface (``::``) and keeps its state in the fixed file
  ``/tmp/localstripe.pickle``, shared by every instance on the machine. Here each instance binds
  127.0.0.1 on a port of its own (chosen by the kernel, so no race for a "free" port) and keeps
  its state in its work directory, so a restart (``stop()`` then ``start()``) comes back with
  the same payments, as a real gateway would;
- ignores ``Idempotency-Key``. Stripe replays the saved answer of the first request with the same
  key (and refuses the key with other parameters); this adds that, so the tests can show that a
  retried create charges once;
- refuses parameters Stripe accepts and the client sends: ``description`` on a payment intent,
  ``payment_method`` and ``return_url`` on confirm (localstripe answers 500 "Not implemented" for
  the first). With a ``return_url``, a card needing 3-D Secure gets Stripe's ``redirect_to_url``
  next action, pointing at a test page here (``/_3ds/<intent>``) with Complete and Fail buttons,
  like Stripe's test page; the button calls localstripe's own ``_authenticate`` and redirects to
  the return URL with ``payment_intent=`` added. localstripe's ``_authenticate`` endpoint works
  too.

It also reports Stripe's ``amount_received`` on a payment intent (what the charge took; refunds
do not lower it), which localstripe leaves out.

For the tests it also adds ``/_config/faults`` (make the next POSTs fail with 503 before acting,
with 500 after acting, as when an answer is lost, or with Stripe's 409 ``idempotency_key_in_use``,
its answer while another request with the same key is still running) and ``/_config/requests``
(what the server received under /v1/: method, path, Idempotency-Key, Stripe-Version).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

# The key the demo and the tests give the platform; localstripe accepts any sk_test_ key.
TEST_SECRET_KEY = "sk_test_eldercare_localstripe"  # noqa: S105 - a test server's, public


class LocalStripe:
    """One localstripe subprocess; ``url`` stays the same across stop() and start()."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> LocalStripe:
        if self.process is not None:
            raise RuntimeError("already running")
        port_file = self.workdir / "port"
        with contextlib.suppress(FileNotFoundError):
            port_file.unlink()
        self._log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and file
            [
                sys.executable,
                "-P",
                __file__,
                "--port",
                str(self.port),
                "--port-file",
                str(port_file),
                "--state-file",
                str(self.workdir / "state.pickle"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reap()
                raise RuntimeError("localstripe exited at start:\n" + self.log_tail())
            if port_file.exists():
                self.port = int(port_file.read_text())
                try:
                    answer = requests.get(self.url + "/_config/requests", timeout=1)
                    if answer.status_code == 200:
                        return self
                except requests.ConnectionError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("localstripe did not answer in time:\n" + self.log_tail())

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._reap()

    def _reap(self) -> None:
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- the test-only controls

    def set_faults(self, mode: str, count: int = 1) -> None:
        """The next ``count`` POSTs to /v1/ fail: ``before`` (503, nothing done), ``after``
        (done and saved for the idempotency key, but the answer is a 500) or ``in_use`` (409
        ``idempotency_key_in_use``, nothing done: Stripe's "a request with this key is still
        running, retry later")."""
        requests.post(
            self.url + "/_config/faults", data={"mode": mode, "count": count}, timeout=5
        ).raise_for_status()

    def received(self) -> list[dict]:
        answer = requests.get(self.url + "/_config/requests", timeout=5)
        answer.raise_for_status()
        return answer.json()

    def register_webhook(self, name: str, url: str, secret: str, events=None) -> None:
        data = [("url", url), ("secret", secret)]
        data += [("events[]", event) for event in events or ()]
        requests.post(
            self.url + f"/_config/webhooks/{name}", data=data, timeout=5
        ).raise_for_status()


# -- the server side: runs in the subprocess only ---------------------------------------------


def _serve(argv: list[str]) -> None:
    import hashlib
    import pickle

    from aiohttp import web
    from localstripe import resources

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--state-file", required=True)
    args = parser.parse_args(argv)
    state_file = Path(args.state_file)

    # -- state in this instance's own file, written atomically
    def dump_to_disk(store):
        temporary = state_file.with_suffix(".tmp")
        with open(temporary, "wb") as f:
            pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, state_file)

    def try_load_from_disk(store):
        if state_file.exists():
            with open(state_file, "rb") as f:
                dict.update(store, pickle.load(f))  # noqa: S301 - our own file

    resources.Store.dump_to_disk = dump_to_disk
    resources.Store.try_load_from_disk = try_load_from_disk

    # -- Stripe parameters localstripe does not take
    intent_cls = resources.PaymentIntent
    UserError = resources.UserError
    original_init = intent_cls.__init__

    def intent_init(self, *args, description=None, **kwargs):
        if description is not None and not isinstance(description, str):
            raise UserError(400, "Bad request")
        original_init(self, *args, **kwargs)
        self.description = description

    intent_cls.__init__ = intent_init
    original_export = intent_cls._export

    def intent_export(self, expand=None):
        data = original_export(self, expand=expand)
        charge = self.latest_charge
        paid = charge is not None and self.status == "succeeded"
        data["amount_received"] = charge.amount if paid else 0
        return data

    intent_cls._export = intent_export
    original_confirm = intent_cls._api_confirm
    base_url = {}

    def confirm(id=None, payment_method=None, return_url=None, **kwargs):
        if payment_method is not None:
            intent = intent_cls._api_retrieve(id)
            resources.PaymentMethod._api_retrieve(payment_method)  # 404 if unknown
            if intent.status not in ("requires_payment_method", "requires_confirmation"):
                raise UserError(400, "Bad request")
            # Stripe keeps the failed charge in the intent's history; localstripe only has
            # latest_charge, which must be cleared for a new attempt to be made.
            intent.payment_method = payment_method
            intent.latest_charge = None
            intent._authentication_failed = False
        intent = original_confirm(id, **kwargs)
        if return_url and intent.next_action:
            intent._return_url = return_url
            intent.next_action = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": f"{base_url['url']}/_3ds/{intent.id}",
                    "return_url": return_url,
                },
            }
        return intent

    resources.extra_apis[:] = [
        (method, url, confirm if url == "/v1/payment_intents/{id}/confirm" else func)
        for method, url, func in resources.extra_apis
    ]

    from localstripe import server  # builds the routes from extra_apis: after the changes

    # -- idempotency, faults, the request log and the 3-D Secure page
    # Saved answers survive a restart, as Stripe keeps them for 24 hours.
    saved_file = state_file.with_name("idempotency.pickle")
    saved: dict[tuple[str, str], tuple[str, int, bytes]] = {}
    if saved_file.exists():
        saved.update(pickle.loads(saved_file.read_bytes()))  # noqa: S301 - our own file
    faults = {"mode": "", "count": 0}
    received: list[dict] = []

    async def three_d_secure(request):
        intent_id = request.match_info["id"]
        if request.method == "GET":
            page = (
                "<!doctype html><title>3-D Secure test page</title>"
                '<form method="post"><input type="hidden" name="success" value="true">'
                "<button>Complete</button></form>"
                '<form method="post"><input type="hidden" name="success" value="false">'
                "<button>Fail</button></form>"
            )
            return web.Response(text=page, content_type="text/html")
        form = await request.post()
        try:
            intent = intent_cls._api_retrieve(intent_id)
            return_url = getattr(intent, "_return_url", None)
            intent_cls._api_authenticate(
                intent_id, client_secret=intent.client_secret, success=form.get("success")
            )
        except UserError as error:
            return error.to_response()
        finally:
            resources.store.dump_to_disk()
        if not return_url:  # confirmed without one: nowhere to send the payer back to
            return web.json_response(intent_cls._api_retrieve(intent_id)._export())
        separator = "&" if "?" in return_url else "?"
        raise web.HTTPFound(f"{return_url}{separator}payment_intent={intent_id}")

    @web.middleware
    async def test_controls(request, handler):
        key = request.headers.get("Idempotency-Key")
        if request.path.startswith("/v1/"):
            received.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "idempotency_key": key,
                    "stripe_version": request.headers.get("Stripe-Version"),
                }
            )
        if request.path == "/_config/faults" and request.method == "POST":
            form = await request.post()
            faults.update(mode=form["mode"], count=int(form["count"]))
            return web.Response()
        if request.path == "/_config/requests":
            return web.json_response(received)
        if request.path.startswith("/_3ds/"):
            # The payer's browser has no API key: answered here, before localstripe's auth.
            return await three_d_secure(request)
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return await handler(request)
        fault = None
        if faults["count"] > 0:
            faults["count"] -= 1
            fault = faults["mode"]
        if fault == "before":
            return web.json_response({"error": {"type": "api_error"}}, status=503)
        if fault == "in_use":
            return web.json_response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "idempotency_key_in_use",
                        "message": "There is currently another in-progress request using "
                        "this Idempotent Key. Please try again later.",
                    }
                },
                status=409,
            )
        if key:
            body = await request.read()
            fingerprint = hashlib.sha256(request.path.encode() + b"\n" + body).hexdigest()
            cache_key = (request.headers.get("Authorization", ""), key)
            if cache_key in saved:
                first_fingerprint, status, text = saved[cache_key]
                if first_fingerprint != fingerprint:
                    return web.json_response(
                        {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used "
                                "with the same parameters they were first used with.",
                            }
                        },
                        status=400,
                    )
                return web.Response(
                    body=text,
                    status=status,
                    content_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
        response = await handler(request)
        if key:
            saved[cache_key] = (fingerprint, response.status, response.body)
            saved_file.with_suffix(".tmp").write_bytes(pickle.dumps(saved))
            os.replace(saved_file.with_suffix(".tmp"), saved_file)
        if fault == "after":
            return web.json_response({"error": {"type": "api_error"}}, status=500)
        return response

    app = server.app
    app.middlewares.insert(0, test_controls)
    app.router.add_route("*", "/_3ds/{id}", three_d_secure)

    resources.store.try_load_from_disk()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    base_url["url"] = f"http://127.0.0.1:{port}"
    port_file = Path(args.port_file)
    port_file.with_suffix(".tmp").write_text(str(port))
    os.replace(port_file.with_suffix(".tmp"), port_file)
    web.run_app(app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    import logging

    # Webhook deliveries and failures are logged here; they land in server.log.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    _serve(sys.argv[1:])
