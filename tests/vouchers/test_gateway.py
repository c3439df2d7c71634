"""The card gateway client against a real localstripe server (eldercare/dev_gateway.py
says what it adds to the stock one), and the webhook signature check."""

from __future__ import annotations

import http.server
import json
import queue
import socket
import threading
import time
import uuid

import pytest
import requests
from flask_babel import force_locale

from eldercare.config import ConfigError, check_config
from eldercare.dev_gateway import TEST_SECRET_KEY
from tests.test_config import REAL_PII_HMAC_KEY, REAL_PII_KEYS
from tests.vouchers.conftest import GATEWAY_WEBHOOK_SECRET
from vouchers.errors import BadSignature, CardDeclined, GatewayError, GatewayUnavailable
from vouchers.redemption import gateway as gw
from vouchers.redemption.webhooks import sign, verify_signature

VISA = "4242424242424242"
DECLINED_ON_CHARGE = "4000000000000341"
NEEDS_3DS = "4000002760003184"
RETURN_URL = "https://eldercare.example/copay/return"


def key() -> str:
    return uuid.uuid4().hex


def card(g: gw.Gateway, number: str = VISA) -> str:
    return g.create_card_payment_method(number, 12, 2030, "123")["id"]


def new_intent(g: gw.Gateway, amount_fen: int = 12_345, **metadata) -> dict:
    return g.create_payment_intent(
        amount_fen, idempotency_key=key(), description="助浴 co-payment", metadata=metadata
    )


def fast_gateway(url: str, **kwargs) -> gw.Gateway:
    kwargs = {"retries": 2, "backoff_s": 0.05, "timeout": 2.0} | kwargs
    return gw.Gateway(url, TEST_SECRET_KEY, **kwargs)


# -- configuration


def test_card_payments_follow_the_configuration(app, app_ctx, gateway_app_config):
    assert gw.card_payments_enabled(app)
    assert gw.gateway().base_url == gateway_app_config["PAYMENT_GATEWAY_URL"]
    app.config["PAYMENT_GATEWAY_URL"] = ""  # gateway_app_config puts it back
    assert not gw.card_payments_enabled(app)
    with pytest.raises(GatewayError):
        gw.gateway()


PRODUCTION = {
    "ENV_NAME": "production",
    "SECRET_KEY": "x" * 40,
    "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://db/eldercare",
    "PUBLIC_BASE_URL": "https://yanglao.example.gov.cn",
    "PII_KEYS": REAL_PII_KEYS,
    "PII_HMAC_KEY": REAL_PII_HMAC_KEY,
}


def test_production_refuses_card_payments_without_a_key_or_over_plain_http():
    check_config(PRODUCTION | {"PAYMENT_GATEWAY_URL": ""})  # cash only: nothing needed
    check_config(
        PRODUCTION
        | {
            "PAYMENT_GATEWAY_URL": "https://api.stripe.com",
            "PAYMENT_GATEWAY_SECRET_KEY": "sk_1",
            "PAYMENT_WEBHOOK_SECRET": "whsec_" + "1" * 32,
        }
    )
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        check_config(PRODUCTION | {"PAYMENT_GATEWAY_URL": "https://api.stripe.com"})
    with pytest.raises(ConfigError, match="https"):
        check_config(
            PRODUCTION
            | {"PAYMENT_GATEWAY_URL": "http://pay.local", "PAYMENT_GATEWAY_SECRET_KEY": "sk_1"}
        )


def test_nested_parameters_use_stripes_bracket_notation():
    assert gw.encode(
        {
            "amount": 500,
            "card": {"number": VISA, "exp_month": 12},
            "payment_method_types": ["card"],
            "metadata": {"redemption": "7"},
            "confirm": True,
            "description": None,
        }
    ) == [
        ("amount", "500"),
        ("card[number]", VISA),
        ("card[exp_month]", "12"),
        ("payment_method_types[0]", "card"),
        ("metadata[redemption]", "7"),
        ("confirm", "true"),
    ]


# -- payments against localstripe


def test_a_card_payment_succeeds_in_fen(app_ctx, gateway_app_config, localstripe_server):
    g = gw.gateway()
    intent = new_intent(g, 12_345, redemption=7)
    assert intent["amount"] == 12_345 and intent["currency"] == "cny"
    assert intent["description"] == "助浴 co-payment"
    assert intent["metadata"] == {"redemption": "7"}
    assert gw.outcome(intent) == "failed"  # no card yet: nothing can have been taken

    confirm_key = key()
    confirmed = g.confirm_payment_intent(
        intent["id"], payment_method=card(g), idempotency_key=confirm_key, return_url=RETURN_URL
    )
    assert gw.outcome(confirmed) == "succeeded"
    assert gw.next_action_url(confirmed) is None
    again = g.retrieve_payment_intent(intent["id"])
    assert gw.outcome(again) == "succeeded"
    assert again["latest_charge"]["amount"] == 12_345
    assert again["latest_charge"]["currency"] == "cny"

    mine = [r for r in localstripe_server.received() if intent["id"] in r["path"]]
    posts = [r for r in mine if r["method"] == "POST"]
    assert posts and all(r["idempotency_key"] for r in posts)
    assert [r["idempotency_key"] for r in posts] == [confirm_key]


def test_the_same_idempotency_key_creates_one_intent(stoppable_localstripe):
    g = fast_gateway(stoppable_localstripe.url)
    same = key()
    args = {"idempotency_key": same, "description": "co-payment", "metadata": {"r": "1"}}
    first = g.create_payment_intent(5_000, **args)
    second = g.create_payment_intent(5_000, **args)
    assert second["id"] == first["id"]
    assert [i["id"] for i in g.list_payment_intents()] == [first["id"]]

    # The key with other parameters is a bug in the caller: refused, nothing created.
    with pytest.raises(GatewayError) as refused:
        g.create_payment_intent(6_000, **args)
    assert not isinstance(refused.value, GatewayUnavailable)
    assert len(g.list_payment_intents()) == 1

    other = g.create_payment_intent(5_000, **(args | {"idempotency_key": key()}))
    assert other["id"] != first["id"]
    assert len(g.list_payment_intents()) == 2


def test_a_lost_answer_is_retried_with_the_same_key_and_charges_once(stoppable_localstripe):
    g = fast_gateway(stoppable_localstripe.url)
    intent = new_intent(g)
    pm = card(g)
    stoppable_localstripe.set_faults("after", 1)  # the charge is made, the answer is a 500
    confirmed = g.confirm_payment_intent(
        intent["id"], payment_method=pm, idempotency_key="confirm-1", return_url=RETURN_URL
    )
    assert gw.outcome(confirmed) == "succeeded"
    attempts = [r for r in stoppable_localstripe.received() if r["path"].endswith("/confirm")]
    assert [r["idempotency_key"] for r in attempts] == ["confirm-1", "confirm-1"]
    charges = requests.get(
        stoppable_localstripe.url + "/v1/charges",
        headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"},
        timeout=5,
    ).json()["data"]
    assert [c["amount"] for c in charges] == [12_345]


def test_5xx_is_retried_then_reported_unavailable(stoppable_localstripe):
    g = fast_gateway(stoppable_localstripe.url, retries=2)
    stoppable_localstripe.set_faults("before", 3)
    with pytest.raises(GatewayUnavailable):
        new_intent(g)
    posts = [r for r in stoppable_localstripe.received() if r["method"] == "POST"]
    assert len(posts) == 3 and len({r["idempotency_key"] for r in posts}) == 1
    assert g.list_payment_intents() == []


def test_409_idempotency_key_in_use_is_retried_later_not_a_refusal(stoppable_localstripe):
    """Stripe answers 409 ``idempotency_key_in_use`` while a request with the same key is
    still running: the request was not refused, so it is retried with the same key, and
    reported as "unavailable, try again" (never as a permanent refusal) if it stays busy."""
    g = fast_gateway(stoppable_localstripe.url, retries=2)
    stoppable_localstripe.set_faults("in_use", 1)
    intent = new_intent(g)
    assert [i["id"] for i in g.list_payment_intents()] == [intent["id"]]
    posts = [r for r in stoppable_localstripe.received() if r["method"] == "POST"]
    assert len(posts) == 2 and len({r["idempotency_key"] for r in posts}) == 1

    stoppable_localstripe.set_faults("in_use", 3)
    with pytest.raises(GatewayUnavailable):
        new_intent(g)
    assert len(g.list_payment_intents()) == 1


def test_a_refusal_says_it_is_permanent(stoppable_localstripe):
    """A 4xx other than 409/429 is the gateway refusing the request itself (nothing was
    created under its key): callers may act on that, so it is its own kind of error."""
    g = fast_gateway(stoppable_localstripe.url)
    with pytest.raises(gw.GatewayRefused) as refused:
        g.retrieve_payment_intent("pi_doesnotexist")
    assert refused.value.details["gateway"] == "HTTP 404"


def test_4xx_is_not_retried(stoppable_localstripe):
    g = fast_gateway(stoppable_localstripe.url, retries=3)
    with pytest.raises(GatewayError) as error:
        g.retrieve_payment_intent("pi_doesnotexist")
    assert error.value.status == 502 and not isinstance(error.value, GatewayUnavailable)
    asked = [r for r in stoppable_localstripe.received() if r["path"].endswith("pi_doesnotexist")]
    assert len(asked) == 1

    wrong_key = gw.Gateway(stoppable_localstripe.url, "not-a-key", backoff_s=0.05)
    with pytest.raises(GatewayError, match="refused"):
        wrong_key.list_payment_intents()


def test_bad_amounts_send_nothing(stoppable_localstripe):
    g = fast_gateway(stoppable_localstripe.url)
    for amount in (0, -1, 1.5, True, "100"):
        with pytest.raises(ValueError):
            g.create_payment_intent(amount, idempotency_key=key(), description="x", metadata={})
    with pytest.raises(ValueError):
        g.create_payment_intent(100, idempotency_key="", description="x", metadata={})
    with pytest.raises(ValueError):
        g.retrieve_payment_intent("../v1/charges")
    assert stoppable_localstripe.received() == []


def test_a_declined_card_raises_card_declined_and_another_card_may_pay(app_ctx, gateway_app_config):
    g = gw.gateway()
    intent = new_intent(g)
    with pytest.raises(CardDeclined) as declined:
        g.confirm_payment_intent(
            intent["id"],
            payment_method=card(g, DECLINED_ON_CHARGE),
            idempotency_key=key(),
            return_url=RETURN_URL,
        )
    assert declined.value.status == 402
    assert declined.value.decline_code == "card_declined"
    assert declined.value.details["charge"].startswith("ch_")
    with force_locale("en"):
        assert str(declined.value.message) == (
            "The card was declined: the bank refused the payment"
        )
    after = g.retrieve_payment_intent(intent["id"])
    assert gw.outcome(after) == "failed"
    assert gw.payment_error_code(after) == "card_declined"

    paid = g.confirm_payment_intent(
        intent["id"], payment_method=card(g), idempotency_key=key(), return_url=RETURN_URL
    )
    assert gw.outcome(paid) == "succeeded"


def test_3d_secure_needs_action_then_succeeds_on_the_test_page(app_ctx, gateway_app_config):
    g = gw.gateway()
    intent = new_intent(g)
    pending = g.confirm_payment_intent(
        intent["id"],
        payment_method=card(g, NEEDS_3DS),
        idempotency_key=key(),
        return_url=RETURN_URL,
    )
    assert gw.outcome(pending) == "requires_action"
    url = gw.next_action_url(pending)
    assert url and url.startswith(gateway_app_config["PAYMENT_GATEWAY_URL"])
    assert gw.outcome(g.retrieve_payment_intent(intent["id"])) == "requires_action"

    # The payer's browser: the page, then the Complete button, then back to us.
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "Complete" in page.text
    done = requests.post(url, data={"success": "true"}, allow_redirects=False, timeout=5)
    assert done.status_code == 302
    assert done.headers["Location"] == f"{RETURN_URL}?payment_intent={intent['id']}"
    assert gw.outcome(g.retrieve_payment_intent(intent["id"])) == "succeeded"


def test_3d_secure_through_localstripes_authenticate_endpoint(app_ctx, gateway_app_config):
    g = gw.gateway()
    outcomes = {}
    for success in ("true", "false"):
        intent = new_intent(g)
        pending = g.confirm_payment_intent(
            intent["id"],
            payment_method=card(g, NEEDS_3DS),
            idempotency_key=key(),
            return_url=RETURN_URL,
        )
        answer = requests.post(
            f"{g.base_url}/v1/payment_intents/{intent['id']}/_authenticate",
            data={"client_secret": pending["client_secret"], "success": success},
            headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"},
            timeout=5,
        )
        assert answer.status_code == 200
        outcomes[success] = gw.outcome(g.retrieve_payment_intent(intent["id"]))
    assert outcomes == {"true": "succeeded", "false": "failed"}


def test_refund_of_a_succeeded_payment(app_ctx, gateway_app_config):
    g = gw.gateway()
    intent = new_intent(g, 12_345)
    g.confirm_payment_intent(
        intent["id"], payment_method=card(g), idempotency_key=key(), return_url=RETURN_URL
    )
    refund_key = key()
    refund = g.create_refund(intent["id"], 5_000, idempotency_key=refund_key)
    assert refund["status"] == "succeeded"
    assert refund["amount"] == 5_000 and refund["currency"] == "cny"
    assert refund["payment_intent"] == intent["id"]
    assert g.create_refund(intent["id"], 5_000, idempotency_key=refund_key)["id"] == refund["id"]
    charge = g.retrieve_payment_intent(intent["id"])["latest_charge"]
    assert charge["amount_refunded"] == 5_000

    declined = new_intent(g)
    with pytest.raises(CardDeclined):
        g.confirm_payment_intent(
            declined["id"],
            payment_method=card(g, DECLINED_ON_CHARGE),
            idempotency_key=key(),
            return_url=RETURN_URL,
        )
    with pytest.raises(GatewayError):
        g.create_refund(declined["id"], 100, idempotency_key=key())


def test_cancel_closes_an_unpaid_intent(app_ctx, gateway_app_config):
    g = gw.gateway()
    intent = new_intent(g)
    canceled = g.cancel_payment_intent(intent["id"], idempotency_key=key())
    assert gw.outcome(canceled) == "canceled"
    with pytest.raises(GatewayError):
        g.confirm_payment_intent(
            intent["id"], payment_method=card(g), idempotency_key=key(), return_url=RETURN_URL
        )
    assert gw.outcome(g.retrieve_payment_intent(intent["id"])) == "canceled"


# -- the gateway going away


def test_gateway_stopped_mid_payment_is_unavailable_then_the_retry_charges_once(
    stoppable_localstripe,
):
    g = fast_gateway(stoppable_localstripe.url, retries=2, backoff_s=0.1)
    intent = new_intent(g)
    pm = card(g)
    stoppable_localstripe.stop()
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable) as error:
        g.confirm_payment_intent(
            intent["id"], payment_method=pm, idempotency_key="confirm-1", return_url=RETURN_URL
        )
    assert time.monotonic() - started < 3  # 3 attempts, 0.1 + 0.2 s apart, refused at once
    assert error.value.status == 503

    stoppable_localstripe.start()  # same URL, same payments
    assert gw.outcome(g.retrieve_payment_intent(intent["id"])) == "failed"  # not charged
    paid = g.confirm_payment_intent(
        intent["id"], payment_method=pm, idempotency_key="confirm-1", return_url=RETURN_URL
    )
    assert gw.outcome(paid) == "succeeded"
    again = g.confirm_payment_intent(
        intent["id"], payment_method=pm, idempotency_key="confirm-1", return_url=RETURN_URL
    )
    assert again["latest_charge"]["id"] == paid["latest_charge"]["id"]
    charges = requests.get(
        stoppable_localstripe.url + "/v1/charges",
        headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"},
        timeout=5,
    ).json()["data"]
    assert len(charges) == 1


def test_a_gateway_that_never_answers_times_out_in_bounded_time():
    # A socket that accepts connections (the kernel completes them) but never replies.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        g = gw.Gateway(
            f"http://127.0.0.1:{port}", TEST_SECRET_KEY, timeout=0.3, retries=1, backoff_s=0.05
        )
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable) as error:
            g.retrieve_payment_intent("pi_x")
        elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3
    assert error.value.details == {"gateway": "ReadTimeout"}


def test_the_unavailable_message_tells_the_desk_what_to_do(app_ctx):
    with force_locale("en"):
        assert "nothing was charged yet" in str(GatewayUnavailable().message)
        assert "take cash" in str(GatewayUnavailable().message)


# -- the outcome helpers


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("succeeded", "succeeded"),
        ("requires_action", "requires_action"),
        ("processing", "processing"),
        ("requires_capture", "processing"),
        ("something_new", "processing"),
        ("requires_payment_method", "failed"),
        ("requires_confirmation", "failed"),
        ("canceled", "canceled"),
    ],
)
def test_outcome(status, expected):
    assert gw.outcome({"status": status}) == expected


def test_next_action_url():
    assert gw.next_action_url({"next_action": None}) is None
    assert (
        gw.next_action_url(
            {"next_action": {"type": "redirect_to_url", "redirect_to_url": {"url": "https://a/b"}}}
        )
        == "https://a/b"
    )
    stock_localstripe = {"type": "use_stripe_sdk", "use_stripe_sdk": {"stripe_js": ""}}
    assert gw.next_action_url({"next_action": stock_localstripe}) is None


# -- webhook signatures

EVENT = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}).encode()
SECRET = GATEWAY_WEBHOOK_SECRET


def test_a_good_signature_is_accepted():
    now = 1_800_000_000
    event = verify_signature(EVENT, sign(EVENT, SECRET, now), SECRET, now=now + 10)
    assert event["id"] == "evt_1"


def test_any_matching_v1_is_enough_while_secrets_roll():
    now = 1_800_000_000
    good = sign(EVENT, SECRET, now).split(",")[1]
    old = sign(EVENT, "whsec_old", now).split(",")[1]
    header = f"t={now},{old},{good}"
    assert verify_signature(EVENT, header, SECRET, now=now)["type"] == "payment_intent.succeeded"


@pytest.mark.parametrize(
    ("payload", "header", "secret", "now"),
    [
        (EVENT + b" ", sign(EVENT, SECRET, 1_800_000_000), SECRET, 1_800_000_000),  # body changed
        (EVENT, sign(EVENT, "whsec_other", 1_800_000_000), SECRET, 1_800_000_000),  # other secret
        (EVENT, sign(EVENT, SECRET, 1_800_000_000), SECRET, 1_800_000_301),  # too old
        (EVENT, sign(EVENT, SECRET, 1_800_000_301), SECRET, 1_800_000_000),  # from the future
        (EVENT, None, SECRET, 1_800_000_000),  # missing header
        (EVENT, "", SECRET, 1_800_000_000),
        (EVENT, "t=1800000000", SECRET, 1_800_000_000),  # no v1
        (EVENT, "v1=abc", SECRET, 1_800_000_000),  # no t
        (EVENT, "t=1800000000,v1=é" + "0" * 63, SECRET, 1_800_000_000),  # not hex
        (EVENT, sign(EVENT, "", 1_800_000_000), "", 1_800_000_000),  # no secret configured
        (b"[1]", sign(b"[1]", SECRET, 1_800_000_000), SECRET, 1_800_000_000),  # not an event
    ],
)
def test_bad_signatures_are_refused(payload, header, secret, now):
    with pytest.raises(BadSignature):
        verify_signature(payload, header, secret, now=now)


def test_a_real_signed_webhook_from_localstripe_verifies(stoppable_localstripe):
    deliveries: queue.Queue = queue.Queue()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            deliveries.put((body, self.headers.get("Stripe-Signature")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        stoppable_localstripe.register_webhook(
            "eldercare",
            f"http://127.0.0.1:{receiver.server_port}/webhooks/gateway",
            SECRET,
            events=["payment_intent.succeeded"],
        )
        g = fast_gateway(stoppable_localstripe.url)
        intent = new_intent(g, 8_800)
        g.confirm_payment_intent(
            intent["id"], payment_method=card(g), idempotency_key=key(), return_url=RETURN_URL
        )
        body, header = deliveries.get(timeout=10)  # localstripe waits a second before sending
    finally:
        receiver.shutdown()
        receiver.server_close()
        thread.join(timeout=5)

    event = verify_signature(body, header, SECRET)
    assert event["type"] == "payment_intent.succeeded"
    assert event["data"]["object"]["id"] == intent["id"]
    assert event["data"]["object"]["amount"] == 8_800
    with pytest.raises(BadSignature):
        verify_signature(body.replace(b"8800", b"1"), header, SECRET)
    with pytest.raises(BadSignature):
        verify_signature(body, header, "whsec_wrong")
