"""Paynow payments end to end: the storefront's calls go to slyker in process, slyker talks to
the Paynow simulator over HTTP, and the simulator POSTs status updates to slyker's result URL
served by Hypercorn on 127.0.0.1. Runs on SQLite, and on PostgreSQL with
SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from quart import Quart

from slyker.models.billing import Cart, CartStatus, Invoice, InvoiceStatus, Payment, PaymentStatus
from slyker.models.paynow import PaynowStatusUpdate, PaynowTransaction
from tests.api import API, Reply, assert_error, db, make_user, seed_catalog
from tests.conftest import prepare_database
from tests.live_servers import loopback_listener, serving_in_loop
from tests.paynow_simulator import INSUFFICIENT_BALANCE_PHONE, PaynowSimulator

CARTS = "/api/billing/carts"
INVOICES = "/api/billing/invoices"
PAYMENTS = "/api/billing/payments"
RESULT_PATH = "/api/billing/paynow/result/"
RETURN_URL = "http://localhost:3000/dashboard/invoices/"
HOSTING = {"hosting_product": 1, "billing_cycle": "annual", "quantity": 1}  # 29.99
CHECKOUT = {
    "billing_info": {"full_name": "Tariro Moyo", "email": "tariro@example.com"},
    "payment_method": "paynow",
}
CRYPTO_TEXT = "Send USDT (TRC-20) to the address on your invoice e-mail."

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@pytest.fixture
def simulator() -> Iterator[PaynowSimulator]:
    sim = PaynowSimulator().start()
    try:
        yield sim
    finally:
        sim.stop()


def paynow_settings(simulator: PaynowSimulator, api_base: str) -> dict[str, str]:
    return {
        "PAYNOW_INTEGRATION_ID": simulator.integration_id,
        "PAYNOW_INTEGRATION_KEY": simulator.integration_key,
        "PAYNOW_RETURN_URL": RETURN_URL,
        "PAYNOW_RESULT_URL": api_base + RESULT_PATH,
        "PAYNOW_API_URL": simulator.url,
        "PAYNOW_TIMEOUT": "5",
        "CRYPTO_PAYMENT_INSTRUCTIONS": CRYPTO_TEXT,
    }


@pytest.fixture
async def shop(
    app_factory: Callable[..., Quart], simulator: PaynowSimulator
) -> AsyncIterator[Quart]:
    """slyker with Paynow configured, served over HTTP too (for the result URL)."""
    listener, base = loopback_listener()
    application = app_factory(**paynow_settings(simulator, base))
    async with application.test_app():
        await prepare_database(application)
        await seed_catalog(application)
        async with serving_in_loop(application, listener):
            yield application


@dataclass
class Customer:
    api: API
    token: str

    async def post(self, path: str, json: Any = None) -> Reply:
        return await self.api.post(path, json, token=self.token)

    async def get(self, path: str) -> Reply:
        return await self.api.get(path, token=self.token)

    async def checkout(self, body: dict[str, Any] = CHECKOUT) -> Reply:
        cart = await self.get(f"{CARTS}/current/")
        added = await self.post(f"{CARTS}/{cart.body['id']}/add_item/", HOSTING)
        assert added.status == 201, added.body
        return await self.post(f"{CARTS}/{cart.body['id']}/checkout/", body)


async def customer(app: Quart, email: str) -> Customer:
    await make_user(app, email)
    api = API(app)
    return Customer(api, await api.login(email))


@pytest.fixture
async def alice(shop: Quart) -> Customer:
    return await customer(shop, "alice@example.com")


async def paid_payments(app: Quart, invoice_id: int) -> list[Payment]:
    with db(app):
        return await Payment.filter(invoice_id=invoice_id, status=PaymentStatus.COMPLETED)


async def invoice_of(app: Quart, invoice_id: int) -> Invoice:
    with db(app):
        return await Invoice.get(id=invoice_id)


async def transaction_of(app: Quart, payment_id: int) -> PaynowTransaction:
    with db(app):
        return await PaynowTransaction.get(payment_id=payment_id)


# --- checkout ---------------------------------------------------------------------------


async def test_checkout_with_paynow_redirects_to_paynow(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    done = await alice.checkout()
    assert done.status == 201, done.body
    body = done.body
    assert body["payment_method"] == "paynow" and body["status"] == "sent"
    assert body["payment_instructions"] is None
    transaction = await transaction_of(shop, body["payment_id"])
    sim = simulator.transaction(transaction.reference)
    assert body["redirect_url"] == f"{simulator.url}/Payment/ConfirmPayment/{sim.paynow_reference}"
    assert transaction.reference == f"{body['invoice_number']}-P{body['payment_id']}"
    assert sim.amount == Decimal("29.99") and sim.fields["amount"] == "29.99"
    assert sim.fields["returnurl"] == RETURN_URL
    assert sim.fields["resulturl"].endswith(RESULT_PATH)
    assert sim.fields["authemail"] == "tariro@example.com"  # the billing e-mail
    assert transaction.status == "Created" and transaction.poll_url.startswith(simulator.url)
    assert transaction.paynow_reference == sim.paynow_reference

    invoice = await alice.get(f"{INVOICES}/{body['invoice_id']}/")
    assert invoice.body["status"] == "sent"
    [payment] = invoice.body["payments"]
    assert payment["status"] == "pending" and payment["amount"] == "29.99"
    assert payment["method"] == "paynow"

    # Checking the same cart out again: the same invoice and the same Paynow page.
    with db(shop):
        cart = await Cart.get(id=(await Invoice.get(id=body["invoice_id"])).cart_id)
        assert cart.status == CartStatus.COMPLETED
    again = await alice.post(f"{CARTS}/{cart.id}/checkout/", CHECKOUT)
    assert again.status == 200, again.body
    assert again.body["invoice_id"] == body["invoice_id"]
    assert again.body["payment_id"] == body["payment_id"]
    assert again.body["redirect_url"] == body["redirect_url"]
    assert len(simulator.transactions) == 1


async def test_the_app_keeps_one_connection_to_paynow_and_closes_it_at_shutdown(
    app_factory: Callable[..., Quart], simulator: PaynowSimulator
) -> None:
    """Two checkouts and a status check go over one pooled connection (the simulator
    accepts one TCP connection), and stopping the app closes it."""
    settings = paynow_settings(simulator, "http://127.0.0.1:9")  # no update is posted here
    application = app_factory(**settings)
    async with application.test_app():
        await prepare_database(application)
        await seed_catalog(application)
        alice = await customer(application, "alice@example.com")
        first, second = await alice.checkout(), await alice.checkout()
        assert first.status == second.status == 201
        assert first.body["invoice_id"] != second.body["invoice_id"]
        status = await alice.post(f"{PAYMENTS}/{first.body['payment_id']}/check_paynow_status/")
        assert status.status == 200, status.body
        assert len(simulator.transactions) == 2 and simulator.polls == 1
        assert simulator.connections == 1 and simulator.open_connections == 1
    assert await asyncio.to_thread(simulator.wait_until_connections_closed)
    assert simulator.connections == 1


async def test_paid_update_settles_the_invoice_once_and_replays_change_nothing(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    transaction = await transaction_of(shop, body["payment_id"])
    status, reply = await asyncio.to_thread(simulator.pay, transaction.reference)
    assert status == 200, reply  # POSTed by the simulator: no Origin, no credentials

    invoice = await invoice_of(shop, body["invoice_id"])
    assert invoice.status == InvoiceStatus.PAID and invoice.paid_date is not None
    [payment] = await paid_payments(shop, body["invoice_id"])
    sim = simulator.transaction(transaction.reference)
    assert payment.id == body["payment_id"] and payment.amount == Decimal("29.99")
    assert payment.reference == sim.paynow_reference and payment.paid_at is not None

    # Paynow repeats the update (or someone replays it): accepted, applied once.
    message = simulator.status_message(transaction.reference)
    for _ in range(2):
        status, reply = await asyncio.to_thread(
            simulator.post_update, transaction.reference, message
        )
        assert status == 200, reply
    assert len(await paid_payments(shop, body["invoice_id"])) == 1
    with db(shop):
        updates = await PaynowStatusUpdate.filter(transaction_id=transaction.id).order_by("id")
        assert [u.applied for u in updates] == [True, False, False]
        assert {u.status for u in updates} == {"Paid"}

    # The poll fallback sees a completed payment: nothing to ask Paynow.
    checked = await alice.post(f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/")
    assert checked.status == 200, checked.body
    assert checked.body["paid"] is True and checked.body["invoice_status"] == "paid"
    assert simulator.polls == 0
    listed = await alice.get(f"{INVOICES}/{body['invoice_id']}/")
    assert [p["status"] for p in listed.body["payments"]] == ["completed"]


@pytest.mark.parametrize(
    ("forgery", "status", "code"),
    [
        ("another_key", 403, "invalid_hash"),
        ("tampered_amount", 403, "invalid_hash"),
        ("unsigned", 403, "invalid_hash"),
        ("empty", 403, "invalid_hash"),
        ("not_a_message", 400, "invalid"),
        ("nul_byte", 400, "invalid"),
    ],
)
async def test_a_forged_update_is_refused_and_changes_nothing(
    shop: Quart, alice: Customer, simulator: PaynowSimulator, forgery: str, status: int, code: str
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    genuine = simulator.status_message(reference, status="Paid")
    message = {
        "another_key": simulator.status_message(reference, "Paid", key="forger-key"),
        "tampered_amount": genuine.replace("amount=29.99", "amount=2999.00"),
        "unsigned": genuine.rsplit("&hash=", 1)[0],
        "not_a_message": "hello there",
        "empty": "",
        "nul_byte": genuine.replace("status=Paid", "status=Paid%00"),
    }[forgery]
    answered, reply = await asyncio.to_thread(simulator.post_update, reference, message)
    assert answered == status, reply
    body_of_reply = json.loads(reply)
    assert body_of_reply["code"] == code and body_of_reply["status"] == status
    assert (await invoice_of(shop, body["invoice_id"])).status == InvoiceStatus.SENT
    assert await paid_payments(shop, body["invoice_id"]) == []
    with db(shop):
        assert not await PaynowStatusUpdate.exists()
        assert (await Payment.get(id=body["payment_id"])).status == PaymentStatus.PENDING


async def test_result_url_refuses_a_forgery_through_the_test_client(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    client = shop.test_client()
    forged = simulator.status_message(reference, "Paid", key="forger-key")
    response = await client.post(
        RESULT_PATH, data=forged, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    reply = Reply(response.status_code, await response.get_json(), response.headers)
    assert_error(reply, 403, "invalid_hash")
    # A browser page on a foreign site cannot post one either (CSRF), even a genuine one.
    response = await client.post(
        RESULT_PATH,
        data=simulator.status_message(reference, "Paid"),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "https://evil.example",
        },
    )
    assert response.status_code == 403
    assert await paid_payments(shop, body["invoice_id"]) == []


async def test_an_update_for_an_unknown_reference_is_404(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    sim = simulator.transaction(reference)
    sim.reference = "INV-999999-P9"  # the simulator signs a message for a reference we lack
    message = simulator.status_message(reference)
    status, reply = await asyncio.to_thread(simulator.post_update, reference, message)
    assert status == 404 and '"code": "not_found"' in reply
    assert await paid_payments(shop, body["invoice_id"]) == []


async def test_concurrent_result_url_and_polls_record_one_payment(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    simulator.set_status(reference, "Paid")  # paid at Paynow; the updates are in flight
    message = simulator.status_message(reference)
    results = await asyncio.gather(
        *(asyncio.to_thread(simulator.post_update, reference, message) for _ in range(4)),
        *(alice.post(f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/") for _ in range(4)),
    )
    posted, polled = results[:4], results[4:]
    assert [status for status, _ in posted] == [200] * 4, posted  # type: ignore[misc]
    assert [reply.status for reply in polled] == [200] * 4, [r.body for r in polled]  # type: ignore[union-attr]
    assert all(reply.body["paid"] for reply in polled)  # type: ignore[union-attr]
    [payment] = await paid_payments(shop, body["invoice_id"])
    assert payment.amount == Decimal("29.99")
    assert (await invoice_of(shop, body["invoice_id"])).status == InvoiceStatus.PAID
    with db(shop):
        updates = await PaynowStatusUpdate.all()
        assert sum(u.applied for u in updates) == 1
        assert await Payment.filter(invoice_id=body["invoice_id"]).count() == 1


async def test_poll_fallback_settles_when_the_result_url_never_came(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    pending = await alice.post(f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/")
    assert pending.status == 200 and pending.body["paid"] is False
    assert pending.body["paynow_status"] == "Created"
    assert pending.body["payment_status"] == "pending"
    simulator.set_status(reference, "Paid")
    paid = await alice.post(f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/")
    assert paid.status == 200 and paid.body["paid"] is True
    assert paid.body["invoice_status"] == "paid" and paid.body["paynow_status"] == "Paid"
    simulator.fault = "bad_hash"  # a completed payment is not polled again
    again = await alice.post(f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/")
    assert again.status == 200 and again.body["paid"] is True
    assert simulator.polls == 2


async def test_a_poll_with_a_bad_reply_is_502_and_changes_nothing(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    simulator.set_status(reference, "Paid")
    simulator.fault = "bad_hash"
    reply = await alice.post(f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/")
    assert_error(reply, 502, "upstream_error")
    assert await paid_payments(shop, body["invoice_id"]) == []


async def test_a_lower_paid_amount_does_not_settle_the_invoice(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    status, _ = await asyncio.to_thread(simulator.pay, reference, "Paid", "20.00")
    assert status == 200
    [payment] = await paid_payments(shop, body["invoice_id"])
    assert payment.amount == Decimal("20.00")  # what was really paid is recorded
    assert (await invoice_of(shop, body["invoice_id"])).status == InvoiceStatus.SENT

    # The rest can be paid: a new Paynow payment for what is left.
    rest = await alice.post(f"{INVOICES}/{body['invoice_id']}/paynow_payment/")
    assert rest.status == 201, rest.body
    assert rest.body["amount"] == "9.99" and rest.body["kind"] == "web"
    assert rest.body["redirect_url"].startswith(simulator.url)
    status, _ = await asyncio.to_thread(simulator.pay, rest.body["reference"])
    assert status == 200
    assert (await invoice_of(shop, body["invoice_id"])).status == InvoiceStatus.PAID
    assert len(await paid_payments(shop, body["invoice_id"])) == 2
    done = await alice.post(f"{INVOICES}/{body['invoice_id']}/paynow_payment/")
    assert_error(done, 409, "invoice_not_payable")


async def test_cancelled_is_recorded_without_settling_and_checkout_retries(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    first = await alice.checkout()
    body = first.body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    status, _ = await asyncio.to_thread(simulator.pay, reference, "Cancelled")
    assert status == 200
    with db(shop):
        assert (await Payment.get(id=body["payment_id"])).status == PaymentStatus.FAILED
        assert (await PaynowTransaction.get(reference=reference)).status == "Cancelled"
        cart_id = (await Invoice.get(id=body["invoice_id"])).cart_id
    assert (await invoice_of(shop, body["invoice_id"])).status == InvoiceStatus.SENT
    # Placing the order again (same cart) starts a new Paynow payment for the same invoice.
    again = await alice.post(f"{CARTS}/{cart_id}/checkout/", CHECKOUT)
    assert again.status == 200, again.body
    assert again.body["invoice_id"] == body["invoice_id"]
    assert again.body["payment_id"] != body["payment_id"]
    assert again.body["redirect_url"] != body["redirect_url"]
    assert len(simulator.transactions) == 2


async def test_paynow_down_at_checkout_keeps_the_invoice_and_says_so(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    simulator.fault = "http500"
    failed = await alice.checkout()
    assert_error(failed, 502, "upstream_error", "Invoice INV-")
    invoice_id = failed.body["invoice_id"]
    assert failed.body["invoice_number"] == f"INV-{invoice_id:06d}"
    assert failed.body["retry_url"] == f"{INVOICES}/{invoice_id}/paynow_payment/"
    assert "Paynow answered HTTP 500" in failed.error
    with db(shop):
        invoice = await Invoice.get(id=invoice_id)
        assert invoice.status == InvoiceStatus.SENT
        [payment] = await Payment.filter(invoice_id=invoice_id)
        assert payment.status == PaymentStatus.FAILED
        assert (await PaynowTransaction.get(payment_id=payment.id)).status == "Error"
        assert (await Cart.get(id=invoice.cart_id)).status == CartStatus.COMPLETED
    simulator.fault = None
    retried = await alice.post(f"{failed.body['retry_url']}")
    assert retried.status == 201, retried.body
    assert retried.body["redirect_url"].startswith(simulator.url)
    assert retried.body["amount"] == "29.99"


async def test_express_checkout(shop: Quart, alice: Customer, simulator: PaynowSimulator) -> None:
    bank = await alice.checkout({**CHECKOUT, "payment_method": "bank"})
    assert bank.status == 201 and bank.body["payment_id"] is None
    invoice_id = bank.body["invoice_id"]
    path = f"{INVOICES}/{invoice_id}/express_checkout/"

    bad_method = await alice.post(path, {"phone": "0771111111", "method": "visa"})
    assert_error(bad_method, 400, "invalid", "method: ")
    bad_phone = await alice.post(path, {"phone": "12345", "method": "ecocash"})
    assert_error(bad_phone, 400, "invalid", "phone: ")
    broke = await alice.post(path, {"phone": INSUFFICIENT_BALANCE_PHONE, "method": "ecocash"})
    assert_error(broke, 502, "paynow_declined")
    assert broke.error == "Paynow refused the payment: Insufficient balance"

    started = await alice.post(path, {"phone": "+263 77 111 1111", "method": "ecocash"})
    assert started.status == 201, started.body
    assert started.body["kind"] == "express" and started.body["method"] == "ecocash"
    assert started.body["paynow_status"] == "Sent" and started.body["payment_status"] == "pending"
    assert started.body["instructions"].startswith("Dial") and started.body["redirect_url"] is None
    sim = simulator.transaction(started.body["reference"])
    assert sim.express and sim.fields["phone"] == "0771111111"
    assert sim.fields["method"] == "ecocash" and sim.fields["authemail"] == "tariro@example.com"
    status, _ = await asyncio.to_thread(simulator.pay, started.body["reference"])
    assert status == 200
    checked = await alice.post(f"{PAYMENTS}/{started.body['payment_id']}/check_paynow_status/")
    assert checked.body["paid"] is True and checked.body["invoice_status"] == "paid"
    with db(shop):
        statuses = sorted(str(p.status) for p in await Payment.filter(invoice_id=invoice_id))
    assert statuses == ["completed", "failed"]  # the declined attempt is kept, as failed


async def test_someone_elses_invoice_and_payment_are_404(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    bob = await customer(shop, "bob@example.com")
    for reply in (
        await bob.post(f"{INVOICES}/{body['invoice_id']}/paynow_payment/"),
        await bob.post(
            f"{INVOICES}/{body['invoice_id']}/express_checkout/",
            {"phone": "0771111111", "method": "ecocash"},
        ),
        await bob.post(f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/"),
        await bob.post(f"{INVOICES}/999999/paynow_payment/"),
    ):
        assert_error(reply, 404, "not_found")
    anonymous = API(shop)
    for path in (
        f"{INVOICES}/{body['invoice_id']}/paynow_payment/",
        f"{PAYMENTS}/{body['payment_id']}/check_paynow_status/",
    ):
        assert_error(await anonymous.post(path), 401, "not_authenticated")
    assert len(simulator.transactions) == 1  # only alice's checkout reached Paynow


async def test_a_bank_payment_is_not_a_paynow_payment(shop: Quart, alice: Customer) -> None:
    body = (await alice.checkout({**CHECKOUT, "payment_method": "bank"})).body
    with db(shop):
        payment = await Payment.create(
            invoice_id=body["invoice_id"], amount=Decimal("1.00"), method="bank"
        )
    reply = await alice.post(f"{PAYMENTS}/{payment.id}/check_paynow_status/")
    assert_error(reply, 404, "not_found")


async def test_a_paid_or_cancelled_invoice_cannot_be_paid_again(
    shop: Quart, alice: Customer
) -> None:
    body = (await alice.checkout({**CHECKOUT, "payment_method": "bank"})).body
    for status in (InvoiceStatus.PAID, InvoiceStatus.CANCELLED):
        with db(shop):
            await Invoice.filter(id=body["invoice_id"]).update(status=status)
        reply = await alice.post(f"{INVOICES}/{body['invoice_id']}/paynow_payment/")
        assert_error(reply, 409, "invoice_not_payable")


async def test_crypto_checkout_gives_manual_instructions(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    done = await alice.checkout({**CHECKOUT, "payment_method": "crypto"})
    assert done.status == 201, done.body
    assert done.body["payment_method"] == "crypto"
    assert done.body["payment_instructions"] == CRYPTO_TEXT
    assert done.body["redirect_url"] is None and done.body["payment_id"] is None
    invoice = await invoice_of(shop, done.body["invoice_id"])
    assert invoice.payment_method == "crypto" and invoice.status == InvoiceStatus.SENT
    assert simulator.transactions == {}


# --- without Paynow settings --------------------------------------------------------------


@pytest.fixture
async def unconfigured(app_factory: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = app_factory(
        PAYNOW_INTEGRATION_ID="20581", PAYNOW_INTEGRATION_KEY="3e9fed89-60e1-4ce5-ab6e-6b1eb2d4f977"
    )
    async with application.test_app():
        await prepare_database(application)
        await seed_catalog(application)
        yield application


async def test_missing_settings_are_a_400_naming_the_setting(unconfigured: Quart) -> None:
    alice = await customer(unconfigured, "alice@example.com")
    refused = await alice.checkout()
    assert_error(refused, 400, "paynow_not_configured", "payment_method: Paynow payments")
    assert "PAYNOW_RETURN_URL" in refused.error
    assert refused.body["errors"] == {"payment_method": [refused.error.split(": ", 1)[1]]}
    with db(unconfigured):
        assert not await Invoice.exists()
    bank = await alice.post(
        f"{CARTS}/{(await alice.get(f'{CARTS}/current/')).body['id']}/checkout/",
        {**CHECKOUT, "payment_method": "bank"},
    )
    assert bank.status == 201, bank.body
    reply = await alice.post(f"{INVOICES}/{bank.body['invoice_id']}/paynow_payment/")
    assert_error(reply, 400, "paynow_not_configured")
    assert "PAYNOW_RETURN_URL" in reply.error
    with db(unconfigured):
        assert not await Payment.exists()


async def test_without_any_paynow_setting_the_first_is_named(
    app: Quart,
) -> None:
    await seed_catalog(app)
    alice = await customer(app, "alice@example.com")
    refused = await alice.checkout()
    assert_error(refused, 400, "paynow_not_configured")
    assert "PAYNOW_INTEGRATION_ID" in refused.error
    update = await app.test_client().post(
        RESULT_PATH,
        data="reference=INV-000001-P1&status=Paid&amount=1.00&hash=AB",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert update.status_code == 400
    assert "PAYNOW_INTEGRATION_KEY" in (await update.get_json())["error"]


async def test_out_of_order_updates_do_not_undo_a_payment(
    shop: Quart, alice: Customer, simulator: PaynowSimulator
) -> None:
    body = (await alice.checkout()).body
    reference = (await transaction_of(shop, body["payment_id"])).reference
    cancelled = simulator.status_message(reference, "Cancelled")
    stale = simulator.status_message(reference, "Created")
    assert (await asyncio.to_thread(simulator.post_update, reference, cancelled))[0] == 200
    # Paynow is the authority on money: "Paid" after "Cancelled" completes the payment.
    assert (await asyncio.to_thread(simulator.pay, reference))[0] == 200
    for late in (stale, cancelled):  # late or repeated older updates change nothing
        assert (await asyncio.to_thread(simulator.post_update, reference, late))[0] == 200
    transaction = await transaction_of(shop, body["payment_id"])
    assert transaction.status == "Paid" and transaction.paid_amount == Decimal("29.99")
    [payment] = await paid_payments(shop, body["invoice_id"])
    assert payment.id == body["payment_id"]
    assert (await invoice_of(shop, body["invoice_id"])).status == InvoiceStatus.PAID
    with db(shop):
        updates = await PaynowStatusUpdate.filter(transaction_id=transaction.id).order_by("id")
    assert [(u.status, u.applied) for u in updates] == [
        ("Cancelled", True),
        ("Paid", True),
        ("Created", False),
        ("Cancelled", False),
    ]
