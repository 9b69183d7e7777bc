"""Invoices and payments: made by a real checkout; clients see their own, staff see and manage
all. Runs on SQLite, and on PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from quart import Quart

from slyker.models.accounts import ClientProfile, Role, User
from slyker.models.billing import Invoice, InvoiceStatus, Payment
from slyker.models.services import Subscription
from tests.api import API, Reply, assert_error, db, make_user, seed_catalog
from tests.conftest import prepare_database

CARTS = "/api/billing/carts"
INVOICES = "/api/billing/invoices"
PAYMENTS = "/api/billing/payments"
CHECKOUT = {
    "billing_info": {"full_name": "A B", "email": "a@example.com"},
    "payment_method": "bank",
}
INVOICE_FIELDS = (
    "id",
    "invoice_number",
    "status",
    "issue_date",
    "due_date",
    "paid_date",
    "subtotal",
    "tax_rate",
    "tax_amount",
    "discount_amount",
    "total",
    "items",
    "payments",
)

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@dataclass
class Client:
    api: API
    token: str

    async def get(self, path: str) -> Reply:
        return await self.api.get(path, token=self.token)

    async def post(self, path: str, json: Any = None) -> Reply:
        return await self.api.post(path, json, token=self.token)

    async def call_patch(self, path: str, json: Any = None) -> Reply:
        return await self.api.call("PATCH", path, json, token=self.token)

    async def call_delete(self, path: str) -> Reply:
        return await self.api.call("DELETE", path, token=self.token)


async def login(app: Quart, email: str, role: Role = Role.CLIENT) -> Client:
    await make_user(app, email, role)
    api = API(app)
    return Client(api, await api.login(email))


async def checkout(
    client: Client,
    product: int = 1,
    cycle: str = "annual",
    quantity: int = 1,
    coupon: str | None = None,
) -> dict[str, Any]:
    """The storefront's flow: current cart → add_item → (coupon) → checkout (201)."""
    cart = await client.get(f"{CARTS}/current/")
    assert cart.status == 200, cart.body
    cart_id = cart.body["id"]
    item = {
        "hosting_product": product,
        "billing_cycle": cycle,
        "quantity": quantity,
        "service_metadata": {},
    }
    added = await client.post(f"{CARTS}/{cart_id}/add_item/", item)
    assert added.status == 201, added.body
    if coupon:
        applied = await client.post(f"{CARTS}/{cart_id}/apply_coupon/", {"code": coupon})
        assert applied.status == 200, applied.body
    done = await client.post(f"{CARTS}/{cart_id}/checkout/", CHECKOUT)
    assert done.status == 201, done.body
    return done.body  # type: ignore[no-any-return]


async def set_status(app: Quart, invoice_id: int, status: InvoiceStatus) -> None:
    with db(app):
        assert await Invoice.filter(id=invoice_id).update(status=status) == 1


@pytest.fixture
async def shop(app: Quart) -> Quart:
    await seed_catalog(app)
    return app


@pytest.fixture
async def alice(shop: Quart) -> Client:
    return await login(shop, "alice@example.com")


@pytest.fixture
async def bob(shop: Quart) -> Client:
    return await login(shop, "bob@example.com")


@pytest.fixture
async def staff(shop: Quart) -> Client:
    return await login(shop, "staff@example.com", Role.STAFF)


@pytest.fixture
async def taxed_shop(app_factory: Callable[..., Quart]) -> AsyncIterator[Quart]:
    """A shop charging 15 % tax on the discounted amount."""
    application = app_factory(TAX_RATE="15")
    async with application.test_app():
        await prepare_database(application)
        await seed_catalog(application)
        yield application


# --- reading invoices --------------------------------------------------------------------


async def test_checkout_invoice_is_listed_for_its_owner(alice: Client) -> None:
    done = await checkout(alice)
    assert re.fullmatch(r"INV-\d{6}", done["invoice_number"])
    assert done["invoice_number"] == f"INV-{done['invoice_id']:06d}"

    listed = await alice.get(f"{INVOICES}/")
    assert listed.status == 200
    assert set(listed.body) == {"count", "next", "previous", "results"}
    assert listed.body["count"] == 1
    assert listed.body["next"] is None and listed.body["previous"] is None
    [invoice] = listed.body["results"]
    for field in INVOICE_FIELDS:
        assert field in invoice
    today = date.today()
    assert invoice["id"] == done["invoice_id"]
    assert invoice["invoice_number"] == done["invoice_number"]
    assert invoice["status"] == "sent"
    assert invoice["issue_date"] == today.isoformat()
    assert invoice["due_date"] == (today + timedelta(days=14)).isoformat()
    assert invoice["paid_date"] is None
    assert invoice["subtotal"] == "29.99"
    assert invoice["tax_rate"] == "0.00"
    assert invoice["tax_amount"] == "0.00"
    assert invoice["discount_amount"] == "0.00"
    assert invoice["total"] == "29.99"
    assert invoice["payment_method"] == "bank"
    assert invoice["billing_info"]["full_name"] == "A B"
    assert invoice["payments"] == []
    [item] = invoice["items"]
    assert item["description"] == "Starter Shared"
    assert item["service_category"] == "hosting"
    assert item["billing_cycle"] == "annual"
    assert item["quantity"] == 1
    assert item["unit_price"] == "29.99" and item["total"] == "29.99"

    one = await alice.get(f"{INVOICES}/{done['invoice_id']}/")
    assert one.status == 200 and one.body == invoice


async def test_invoice_amounts_with_quantity_setup_fee_and_coupon(alice: Client) -> None:
    # VPS 2 GB monthly: 12.00 + 10.00 setup, two of them: 44.00; WELCOME10: 10 % off.
    done = await checkout(alice, product=3, cycle="monthly", quantity=2, coupon="welcome10")
    assert done["total"] == "39.60"
    invoice = (await alice.get(f"{INVOICES}/{done['invoice_id']}/")).body
    assert invoice["subtotal"] == "44.00"
    assert invoice["discount_amount"] == "4.40"
    assert invoice["tax_amount"] == "0.00"
    assert invoice["total"] == "39.60"
    [item] = invoice["items"]
    assert item["quantity"] == 2 and item["unit_price"] == "22.00" and item["total"] == "44.00"
    assert item["billing_cycle"] == "monthly"


async def test_invoice_tax_is_charged_on_the_discounted_amount(taxed_shop: Quart) -> None:
    alice = await login(taxed_shop, "alice@example.com")
    done = await checkout(alice, product=3, cycle="monthly", quantity=2, coupon="WELCOME10")
    invoice = (await alice.get(f"{INVOICES}/{done['invoice_id']}/")).body
    assert invoice["subtotal"] == "44.00"
    assert invoice["discount_amount"] == "4.40"
    assert invoice["tax_rate"] == "15.00"
    assert invoice["tax_amount"] == "5.94"  # 15 % of 39.60
    assert invoice["total"] == "45.54"
    assert done["total"] == "45.54"


async def test_clients_see_only_their_own_invoices(
    shop: Quart, alice: Client, bob: Client, staff: Client
) -> None:
    mine = await checkout(alice)
    theirs = await checkout(bob, product=2)

    alice_list = await alice.get(f"{INVOICES}/")
    assert [i["id"] for i in alice_list.body["results"]] == [mine["invoice_id"]]
    bob_list = await bob.get(f"{INVOICES}/")
    assert [i["id"] for i in bob_list.body["results"]] == [theirs["invoice_id"]]
    assert_error(await bob.get(f"{INVOICES}/{mine['invoice_id']}/"), 404, "not_found")
    assert_error(await alice.get(f"{INVOICES}/{theirs['invoice_id']}/"), 404, "not_found")

    everyone = await staff.get(f"{INVOICES}/")
    assert everyone.body["count"] == 2
    ids = [i["id"] for i in everyone.body["results"]]
    assert ids == [theirs["invoice_id"], mine["invoice_id"]]  # newest first
    one = await staff.get(f"{INVOICES}/{mine['invoice_id']}/")
    assert one.status == 200 and one.body["invoice_number"] == mine["invoice_number"]
    assert_error(await staff.get(f"{INVOICES}/999/"), 404, "not_found")


async def test_a_client_without_invoices_gets_an_empty_page(alice: Client) -> None:
    reply = await alice.get(f"{INVOICES}/")
    assert reply.status == 200
    assert reply.body == {"count": 0, "next": None, "previous": None, "results": []}


async def test_invoice_list_pagination(shop: Quart, alice: Client) -> None:
    done = [await checkout(alice, product=p) for p in (1, 2, 4)]
    page = await alice.get(f"{INVOICES}/?page_size=2")
    assert page.body["count"] == 3
    assert [i["id"] for i in page.body["results"]] == [d["invoice_id"] for d in done[:0:-1]]
    assert page.body["next"].endswith(f"{INVOICES}/?page_size=2&page=2")
    last = await alice.get(f"{INVOICES}/?page_size=2&page=2")
    assert [i["id"] for i in last.body["results"]] == [done[0]["invoice_id"]]
    assert last.body["next"] is None
    assert_error(await alice.get(f"{INVOICES}/?page_size=2&page=3"), 404, "not_found")
    assert_error(await alice.get(f"{INVOICES}/?page=abc"), 400, "bad_request", "page: ")


async def test_status_filter(shop: Quart, alice: Client, staff: Client) -> None:
    sent = await checkout(alice)
    paid = await checkout(alice, product=2)
    await set_status(shop, paid["invoice_id"], InvoiceStatus.PAID)

    only_sent = await alice.get(f"{INVOICES}/?status=sent")
    assert only_sent.status == 200
    assert [i["id"] for i in only_sent.body["results"]] == [sent["invoice_id"]]
    only_paid = await staff.get(f"{INVOICES}/?status=paid")
    assert [i["id"] for i in only_paid.body["results"]] == [paid["invoice_id"]]
    none = await alice.get(f"{INVOICES}/?status=overdue")
    assert none.status == 200 and none.body["count"] == 0 and none.body["results"] == []
    both = await alice.get(f"{INVOICES}/?status=")
    assert both.body["count"] == 2

    bogus = await alice.get(f"{INVOICES}/?status=bogus")
    assert_error(bogus, 400, "invalid", "status: ")
    assert "status" in bogus.body["errors"]
    assert_error(await alice.get(f"{INVOICES}/?status=SENT"), 400, "invalid", "status: ")


async def test_invoice_numbers_are_unique_and_increasing(shop: Quart) -> None:
    users = [await login(shop, f"user{n}@example.com") for n in range(4)]
    numbers: list[str] = []
    for round_ in range(2):
        for n, user in enumerate(users):
            done = await checkout(user, product=1 + (n + round_) % 6)
            numbers.append(done["invoice_number"])
    assert all(re.fullmatch(r"INV-\d{6}", number) for number in numbers)
    assert len(set(numbers)) == len(numbers) == 8
    assert numbers == sorted(numbers)
    with db(shop):
        stored = await Invoice.all().order_by("id").values_list("invoice_number", flat=True)
    assert list(stored) == numbers
    assert not any(number.startswith("PENDING") for number in stored)


# --- staff actions -----------------------------------------------------------------------


async def test_send_moves_a_draft_to_sent(shop: Quart, alice: Client, staff: Client) -> None:
    done = await checkout(alice)
    invoice_id = done["invoice_id"]
    await set_status(shop, invoice_id, InvoiceStatus.DRAFT)
    assert (await alice.get(f"{INVOICES}/{invoice_id}/")).body["status"] == "draft"

    sent = await staff.post(f"{INVOICES}/{invoice_id}/send/")
    assert sent.status == 200, sent.body
    assert sent.body["status"] == "sent" and sent.body["id"] == invoice_id
    assert sent.body["invoice_number"] == done["invoice_number"]
    assert (await alice.get(f"{INVOICES}/{invoice_id}/")).body["status"] == "sent"

    again = await staff.post(f"{INVOICES}/{invoice_id}/send/")
    assert_error(again, 409, "invalid_transition", "status: ")


async def test_mark_paid(shop: Quart, alice: Client, staff: Client) -> None:
    done = await checkout(alice)
    invoice_id = done["invoice_id"]
    paid = await staff.post(f"{INVOICES}/{invoice_id}/mark_paid/")
    assert paid.status == 200, paid.body
    assert paid.body["status"] == "paid"
    assert paid.body["paid_date"] == date.today().isoformat()
    seen = (await alice.get(f"{INVOICES}/{invoice_id}/")).body
    assert seen["status"] == "paid" and seen["paid_date"] == date.today().isoformat()

    assert_error(await staff.post(f"{INVOICES}/{invoice_id}/mark_paid/"), 409, "invalid_transition")
    assert_error(await staff.post(f"{INVOICES}/{invoice_id}/send/"), 409, "invalid_transition")
    cancel = await staff.post(f"{INVOICES}/{invoice_id}/cancel/")
    assert_error(cancel, 409, "invalid_transition", "status: ")
    with db(shop):
        assert (await Invoice.get(id=invoice_id)).status == InvoiceStatus.PAID


async def test_mark_paid_from_draft_and_overdue(shop: Quart, alice: Client, staff: Client) -> None:
    for start in (InvoiceStatus.DRAFT, InvoiceStatus.OVERDUE):
        done = await checkout(alice)
        await set_status(shop, done["invoice_id"], start)
        paid = await staff.post(f"{INVOICES}/{done['invoice_id']}/mark_paid/")
        assert paid.status == 200 and paid.body["status"] == "paid", (start, paid.body)
        assert paid.body["paid_date"] == date.today().isoformat()


async def test_cancel_an_unpaid_invoice(shop: Quart, alice: Client, staff: Client) -> None:
    for start in (InvoiceStatus.DRAFT, InvoiceStatus.SENT, InvoiceStatus.OVERDUE):
        done = await checkout(alice)
        invoice_id = done["invoice_id"]
        await set_status(shop, invoice_id, start)
        cancelled = await staff.post(f"{INVOICES}/{invoice_id}/cancel/")
        assert cancelled.status == 200, (start, cancelled.body)
        assert cancelled.body["status"] == "cancelled" and cancelled.body["paid_date"] is None
        for action in ("cancel", "send", "mark_paid"):
            reply = await staff.post(f"{INVOICES}/{invoice_id}/{action}/")
            assert_error(reply, 409, "invalid_transition", "status: ")
        assert (await alice.get(f"{INVOICES}/{invoice_id}/")).body["status"] == "cancelled"


async def test_staff_actions_on_unknown_invoice_are_404(staff: Client) -> None:
    for action in ("send", "mark_paid", "cancel"):
        assert_error(await staff.post(f"{INVOICES}/999/{action}/"), 404, "not_found")


async def test_clients_cannot_use_staff_actions(shop: Quart, alice: Client) -> None:
    done = await checkout(alice)
    invoice_id = done["invoice_id"]
    await set_status(shop, invoice_id, InvoiceStatus.DRAFT)
    for action in ("send", "mark_paid", "cancel"):
        reply = await alice.post(f"{INVOICES}/{invoice_id}/{action}/")
        assert_error(reply, 403, "permission_denied")
    assert_error(await alice.get(f"{INVOICES}/stats/"), 403, "permission_denied")
    with db(shop):
        assert (await Invoice.get(id=invoice_id)).status == InvoiceStatus.DRAFT


async def test_stats_on_no_invoices(staff: Client) -> None:
    reply = await staff.get(f"{INVOICES}/stats/")
    assert reply.status == 200, reply.body
    statuses = ("draft", "sent", "paid", "overdue", "cancelled")
    assert reply.body == {
        "total": 0,
        "total_invoices": 0,
        "by_status": dict.fromkeys(statuses, 0),
        "amount_by_status": dict.fromkeys(statuses, "0.00"),
        "revenue": {"total": 0, "this_month": 0, "last_month": 0, "growth_percent": None},
        "outstanding": 0,
        "paid_amount": "0.00",
        "outstanding_amount": "0.00",
        "recent_count": 0,
    }


async def test_stats_counts_and_amounts(
    shop: Quart, alice: Client, bob: Client, staff: Client
) -> None:
    a = await checkout(alice)  # 29.99, paid
    b = await checkout(bob)  # 29.99, paid
    c = await checkout(alice, product=3, cycle="monthly", quantity=2)  # 44.00, sent
    d = await checkout(bob, product=2, cycle="monthly")  # 5.99, draft
    e = await checkout(alice, product=4, cycle="monthly")  # 19.00, cancelled
    f = await checkout(bob, product=6, cycle="monthly")  # 24.99, overdue
    g = await checkout(alice, product=1, cycle="monthly")  # 2.99, sent
    assert c["total"] == "44.00" and d["total"] == "5.99" and f["total"] == "24.99"
    for invoice in (a, b):
        assert (await staff.post(f"{INVOICES}/{invoice['invoice_id']}/mark_paid/")).status == 200
    await set_status(shop, d["invoice_id"], InvoiceStatus.DRAFT)
    assert (await staff.post(f"{INVOICES}/{e['invoice_id']}/cancel/")).status == 200
    await set_status(shop, f["invoice_id"], InvoiceStatus.OVERDUE)
    assert g["total"] == "2.99"

    reply = await staff.get(f"{INVOICES}/stats/")
    assert reply.status == 200, reply.body
    # The staff pages render by_status entries and format revenue/outstanding as numbers.
    assert reply.body == {
        "total": 7,
        "total_invoices": 7,
        "by_status": {"draft": 1, "sent": 2, "paid": 2, "overdue": 1, "cancelled": 1},
        "amount_by_status": {
            "draft": "5.99",
            "sent": "46.99",
            "paid": "59.98",
            "overdue": "24.99",
            "cancelled": "19.00",
        },
        # Both paid today; nothing last month, so no growth figure.
        "revenue": {
            "total": 59.98,
            "this_month": 59.98,
            "last_month": 0,
            "growth_percent": None,
        },
        "outstanding": 77.97,  # draft + sent + overdue
        "paid_amount": "59.98",
        "outstanding_amount": "77.97",
        "recent_count": 7,
    }


async def test_stats_revenue_by_month_and_growth(shop: Quart, alice: Client, staff: Client) -> None:
    today = date.today()
    last_month_day = today.replace(day=1) - timedelta(days=1)
    old = await checkout(alice)  # 29.99, paid last month, issued 40 days ago
    new = await checkout(alice, product=2, cycle="monthly")  # 5.99, paid today
    older = await checkout(alice, product=1, cycle="monthly")  # 2.99, paid long ago
    for invoice in (old, new, older):
        assert (await staff.post(f"{INVOICES}/{invoice['invoice_id']}/mark_paid/")).status == 200
    with db(shop):
        await Invoice.filter(id=old["invoice_id"]).update(
            paid_date=last_month_day, issue_date=today - timedelta(days=40)
        )
        await Invoice.filter(id=older["invoice_id"]).update(paid_date=date(2001, 1, 1))
    revenue = (await staff.get(f"{INVOICES}/stats/")).body
    assert revenue["revenue"] == {
        "total": 38.97,
        "this_month": 5.99,
        "last_month": 29.99,
        "growth_percent": -80.0,  # (5.99 - 29.99) / 29.99
    }
    assert revenue["recent_count"] == 2


# --- payments ----------------------------------------------------------------------------


async def record(staff: Client, invoice_id: int, amount: str, **extra: Any) -> Reply:
    body = {"invoice": invoice_id, "amount": amount, "method": "bank", **extra}
    return await staff.post(f"{PAYMENTS}/", body)


async def test_partial_then_full_payment_marks_the_invoice_paid(
    shop: Quart, alice: Client, staff: Client
) -> None:
    done = await checkout(alice)  # 29.99
    invoice_id = done["invoice_id"]
    first = await record(staff, invoice_id, "10.00", reference="TRX-1")
    assert first.status == 201, first.body
    assert first.body["invoice"] == invoice_id
    assert first.body["amount"] == "10.00" and first.body["method"] == "bank"
    assert first.body["status"] == "completed" and first.body["reference"] == "TRX-1"
    assert first.body["paid_at"] is not None
    datetime.fromisoformat(first.body["paid_at"])
    partly = (await alice.get(f"{INVOICES}/{invoice_id}/")).body
    assert partly["status"] == "sent" and partly["paid_date"] is None
    assert [p["id"] for p in partly["payments"]] == [first.body["id"]]
    assert partly["payments"][0] == first.body

    second = await record(staff, invoice_id, "19.99", reference="TRX-2")
    assert second.status == 201, second.body
    paid = (await alice.get(f"{INVOICES}/{invoice_id}/")).body
    assert paid["status"] == "paid"
    assert paid["paid_date"] == date.today().isoformat()
    assert {p["id"] for p in paid["payments"]} == {first.body["id"], second.body["id"]}


async def test_one_payment_of_the_exact_total_marks_the_invoice_paid(
    shop: Quart, alice: Client, staff: Client
) -> None:
    done = await checkout(alice)  # 29.99: not exact as a binary float
    reply = await record(staff, done["invoice_id"], "29.99")
    assert reply.status == 201, reply.body
    invoice = (await alice.get(f"{INVOICES}/{done['invoice_id']}/")).body
    assert invoice["status"] == "paid"
    assert invoice["paid_date"] == date.today().isoformat()


async def test_a_pending_payment_does_not_count(shop: Quart, alice: Client, staff: Client) -> None:
    done = await checkout(alice)  # 29.99
    invoice_id = done["invoice_id"]
    pending = await record(staff, invoice_id, "29.99", status="pending", method="paynow")
    assert pending.status == 201, pending.body
    assert pending.body["status"] == "pending" and pending.body["paid_at"] is None
    assert pending.body["method"] == "paynow"
    invoice = (await alice.get(f"{INVOICES}/{invoice_id}/")).body
    assert invoice["status"] == "sent" and invoice["paid_date"] is None
    failed = await record(staff, invoice_id, "29.99", status="failed")
    assert failed.status == 201
    assert (await alice.get(f"{INVOICES}/{invoice_id}/")).body["status"] == "sent"

    completed = await record(staff, invoice_id, "29.99")
    assert completed.status == 201
    assert (await alice.get(f"{INVOICES}/{invoice_id}/")).body["status"] == "paid"


async def test_overpayment_marks_paid(shop: Quart, alice: Client, staff: Client) -> None:
    done = await checkout(alice)
    assert (await record(staff, done["invoice_id"], "50")).status == 201
    assert (await alice.get(f"{INVOICES}/{done['invoice_id']}/")).body["status"] == "paid"


async def test_payment_on_a_cancelled_invoice_is_400(
    shop: Quart, alice: Client, staff: Client
) -> None:
    done = await checkout(alice)
    invoice_id = done["invoice_id"]
    assert (await staff.post(f"{INVOICES}/{invoice_id}/cancel/")).status == 200
    reply = await record(staff, invoice_id, "29.99")
    assert_error(reply, 400, "invalid", "invoice: ")
    assert "invoice" in reply.body["errors"]
    with db(shop):
        assert await Payment.all().count() == 0
        assert (await Invoice.get(id=invoice_id)).status == InvoiceStatus.CANCELLED


async def test_payment_on_an_unknown_invoice_is_400(staff: Client) -> None:
    assert_error(await record(staff, 999, "10"), 400, "invalid", "invoice: ")


INVALID_PAYMENTS: list[tuple[dict[str, Any], str]] = [
    ({"amount": "0"}, "amount"),
    ({"amount": "-5"}, "amount"),
    ({"amount": "1.001"}, "amount"),
    ({"amount": "ten"}, "amount"),
    ({"amount": None}, "amount"),
    ({"invoice": "abc"}, "invoice"),
    ({"status": "refunded"}, "status"),
    ({"method": "x" * 21}, "method"),
    ({"reference": "x" * 101}, "reference"),
]


async def test_invalid_payment_body_is_400(shop: Quart, alice: Client, staff: Client) -> None:
    done = await checkout(alice)
    for change, field in INVALID_PAYMENTS:
        body = {"invoice": done["invoice_id"], "amount": "5", "method": "bank", **change}
        reply = await staff.post(f"{PAYMENTS}/", body)
        assert_error(reply, 400, "invalid", f"{field}: ")
        assert field in reply.body["errors"]
    missing = await staff.post(f"{PAYMENTS}/", {"amount": "5"})
    assert_error(missing, 400, "invalid", "invoice: ")
    with db(shop):
        assert await Payment.all().count() == 0
        assert (await Invoice.get(id=done["invoice_id"])).status == InvoiceStatus.SENT


async def test_payments_are_visible_to_their_owner_and_staff(
    shop: Quart, alice: Client, bob: Client, staff: Client
) -> None:
    mine = await checkout(alice)
    theirs = await checkout(bob)
    a = (await record(staff, mine["invoice_id"], "5.00")).body
    b = (await record(staff, theirs["invoice_id"], "7.50")).body
    c = (await record(staff, mine["invoice_id"], "2.00", status="pending")).body

    alice_list = await alice.get(f"{PAYMENTS}/")
    assert alice_list.status == 200
    assert set(alice_list.body) == {"count", "next", "previous", "results"}
    assert [p["id"] for p in alice_list.body["results"]] == [c["id"], a["id"]]
    assert alice_list.body["results"][1] == a
    bob_list = await bob.get(f"{PAYMENTS}/")
    assert [p["id"] for p in bob_list.body["results"]] == [b["id"]]
    everyone = await staff.get(f"{PAYMENTS}/")
    assert everyone.body["count"] == 3
    assert [p["id"] for p in everyone.body["results"]] == [c["id"], b["id"], a["id"]]

    one = await alice.get(f"{PAYMENTS}/{a['id']}/")
    assert one.status == 200 and one.body == a
    assert_error(await alice.get(f"{PAYMENTS}/{b['id']}/"), 404, "not_found")
    assert_error(await bob.get(f"{PAYMENTS}/{a['id']}/"), 404, "not_found")
    assert (await staff.get(f"{PAYMENTS}/{b['id']}/")).body == b
    assert_error(await staff.get(f"{PAYMENTS}/999/"), 404, "not_found")


async def test_clients_cannot_record_payments(shop: Quart, alice: Client) -> None:
    done = await checkout(alice)
    reply = await alice.post(f"{PAYMENTS}/", {"invoice": done["invoice_id"], "amount": "29.99"})
    assert_error(reply, 403, "permission_denied")
    with db(shop):
        assert await Payment.all().count() == 0
        assert (await Invoice.get(id=done["invoice_id"])).status == InvoiceStatus.SENT


# --- anonymous ---------------------------------------------------------------------------


ANONYMOUS_CALLS = [
    ("GET", f"{INVOICES}/"),
    ("GET", f"{INVOICES}/?status=sent"),
    ("GET", f"{INVOICES}/1/"),
    ("GET", f"{INVOICES}/stats/"),
    ("POST", f"{INVOICES}/1/send/"),
    ("POST", f"{INVOICES}/1/mark_paid/"),
    ("POST", f"{INVOICES}/1/cancel/"),
    ("GET", f"{PAYMENTS}/"),
    ("GET", f"{PAYMENTS}/1/"),
    ("POST", f"{PAYMENTS}/"),
]


async def test_anonymous_gets_401_everywhere(shop: Quart, alice: Client) -> None:
    done = await checkout(alice)
    assert done["invoice_id"] == 1
    api = API(shop)
    for method, path in ANONYMOUS_CALLS:
        body = {"invoice": 1, "amount": "29.99"} if method == "POST" else None
        reply = await api.call(method, path, body)
        assert_error(reply, 401, "not_authenticated")
        assert reply.headers["WWW-Authenticate"] == "Bearer", path
    with db(shop):
        assert await Payment.all().count() == 0
        assert (await Invoice.get(id=1)).status == InvoiceStatus.SENT


# --- what the dashboards read ---------------------------------------------------------------


async def test_invoice_amount_client_and_line_amounts(alice: Client, staff: Client) -> None:
    done = await checkout(alice, product=3, cycle="monthly", quantity=2)  # 44.00
    invoice = (await alice.get(f"{INVOICES}/{done['invoice_id']}/")).body
    # dashboard/invoices/page.tsx sums parseFloat(amount): the invoice total.
    assert invoice["amount"] == invoice["total"] == "44.00"
    # admin/invoices/page.tsx prints client.company_name and each item's amount.
    assert invoice["client"]["company_name"] == "Test client"
    assert invoice["client"]["email"] == "alice@example.com"
    [item] = invoice["items"]
    assert item["amount"] == item["total"] == "44.00"
    assert item["hosting_product"] == 3 and item["domain_product"] is None
    assert invoice["notes"] == "" and invoice["terms"] == ""
    assert (await staff.get(f"{INVOICES}/{done['invoice_id']}/")).body == invoice


# --- staff-written invoices ----------------------------------------------------------------


async def client_id(app: Quart, email: str) -> int:
    with db(app):
        profile = await ClientProfile.get(user__email=email)
    return profile.id


def staff_invoice(client: int, **changes: Any) -> dict[str, Any]:
    """What admin/invoices/page.tsx sends."""
    return {
        "client": client,
        "issue_date": "2026-03-01",
        "due_date": "2026-03-31",
        "items": [
            {"description": "Website design", "quantity": 1, "unit_price": 450.0},
            {"description": "Hours of support", "quantity": 3, "unit_price": 25.34},
        ],
        "tax_rate": 15,
        "discount_amount": 50,
        "notes": "Thank you",
        "terms": "Payment is due within 30 days of invoice date.",
        **changes,
    }


async def test_staff_create_a_draft_invoice(shop: Quart, alice: Client, staff: Client) -> None:
    body = staff_invoice(await client_id(shop, "alice@example.com"))
    created = await staff.post(f"{INVOICES}/", body)
    assert created.status == 201, created.body
    invoice = created.body
    assert invoice["status"] == "draft"
    assert re.fullmatch(r"INV-\d{6}", invoice["invoice_number"])
    assert invoice["invoice_number"] == f"INV-{invoice['id']:06d}"
    assert invoice["issue_date"] == "2026-03-01" and invoice["due_date"] == "2026-03-31"
    # 450.00 + 3 x 25.34 = 526.02; minus 50 = 476.02; 15 % tax = 71.40; total 547.42
    assert invoice["subtotal"] == "526.02"
    assert invoice["discount_amount"] == "50.00"
    assert invoice["tax_rate"] == "15.00" and invoice["tax_amount"] == "71.40"
    assert invoice["total"] == invoice["amount"] == "547.42"
    assert [i["description"] for i in invoice["items"]] == ["Website design", "Hours of support"]
    assert [i["total"] for i in invoice["items"]] == ["450.00", "76.02"]
    assert invoice["items"][1]["service_category"] == "custom"
    assert invoice["notes"] == "Thank you" and invoice["terms"].startswith("Payment is due")
    assert invoice["client"]["email"] == "alice@example.com"
    mine = (await alice.get(f"{INVOICES}/")).body["results"]
    assert [i["id"] for i in mine] == [invoice["id"]]

    # Free lines provision nothing when paid.
    assert (await staff.post(f"{INVOICES}/{invoice['id']}/mark_paid/")).status == 200
    with db(shop):
        assert await Subscription.all().count() == 0


async def test_staff_invoice_defaults(taxed_shop: Quart) -> None:
    await make_user(taxed_shop, "alice@example.com")
    staff = await login(taxed_shop, "staff@example.com", Role.STAFF)
    with db(taxed_shop):
        alice = await User.get(email="alice@example.com")
    body = {"user": alice.id, "items": [{"description": "Consulting", "unit_price": "100"}]}
    created = await staff.post(f"{INVOICES}/", body)
    assert created.status == 201, created.body
    today = date.today()
    assert created.body["issue_date"] == today.isoformat()
    assert created.body["due_date"] == (today + timedelta(days=14)).isoformat()
    assert created.body["tax_rate"] == "15.00"  # TAX_RATE
    assert created.body["total"] == "115.00" and created.body["payment_method"] == "bank"


STAFF_INVOICE_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"items": []}, "items"),
    ({"items": [{"description": "", "unit_price": 1}]}, "items.0.description"),
    ({"items": [{"description": "a\x00b", "unit_price": 1}]}, "items.0.description"),
    ({"items": [{"description": "x", "unit_price": -1}]}, "items.0.unit_price"),
    ({"items": [{"description": "x", "unit_price": 10**20}]}, "items.0.unit_price"),
    ({"items": [{"description": "x", "unit_price": "1.001"}]}, "items.0.unit_price"),
    ({"items": [{"description": "x", "unit_price": 1, "quantity": 0}]}, "items.0.quantity"),
    ({"items": [{"description": "x", "unit_price": 1, "quantity": 10**9}]}, "items.0.quantity"),
    ({"items": [{"description": "x", "unit_price": 1, "amount": 5}]}, "items.0.amount"),
    # Within each field's limits, but the total would not fit a money column.
    ({"items": [{"description": "x", "unit_price": "9999999999.99", "quantity": 2}]}, "items"),
    ({"discount_amount": 10_000}, "discount_amount"),
    ({"discount_amount": -1}, "discount_amount"),
    ({"tax_rate": 101}, "tax_rate"),
    ({"tax_rate": "abc"}, "tax_rate"),
    ({"due_date": "2026-02-01"}, "due_date"),
    ({"issue_date": "someday"}, "issue_date"),
    ({"notes": "n\x00"}, "notes"),
    ({"terms": "t" * 10_001}, "terms"),
    ({"client": 999}, "client"),
    ({"client": 10**20}, "client"),
    ({"client": None}, "client"),
    ({"user": 1}, "client"),  # both client and user
    ({"total": "0.01"}, "total"),  # totals are computed, never taken
]


async def test_invalid_staff_invoice_is_400_not_500(
    shop: Quart, alice: Client, staff: Client
) -> None:
    profile = await client_id(shop, "alice@example.com")
    for change, field in STAFF_INVOICE_ERRORS:
        reply = await staff.post(f"{INVOICES}/", {**staff_invoice(profile), **change})
        assert_error(reply, 400, "invalid", f"{field}: ")
        assert field in reply.body["errors"], (change, reply.body)
    with db(shop):
        assert await Invoice.all().count() == 0


async def test_staff_edit_drafts_only(shop: Quart, alice: Client, staff: Client) -> None:
    profile = await client_id(shop, "alice@example.com")
    draft = (await staff.post(f"{INVOICES}/", staff_invoice(profile))).body
    path = f"{INVOICES}/{draft['id']}/"
    changed = await staff.call_patch(path, {"discount_amount": 0, "notes": "Revised"})
    assert changed.status == 200, changed.body
    # 450.00 + 3 x 25.34 = 526.02, no discount, 15 % tax = 78.90
    assert changed.body["subtotal"] == "526.02" and changed.body["discount_amount"] == "0.00"
    assert changed.body["tax_amount"] == "78.90" and changed.body["total"] == "604.92"
    assert changed.body["notes"] == "Revised" and changed.body["terms"] == draft["terms"]
    lines = await staff.call_patch(
        path, {"items": [{"description": "Logo", "quantity": 2, "unit_price": "10"}], "tax_rate": 0}
    )
    assert lines.status == 200, lines.body
    assert [i["description"] for i in lines.body["items"]] == ["Logo"]
    assert lines.body["total"] == "20.00" and lines.body["status"] == "draft"
    assert_error(await staff.call_patch(path, {"status": "sent"}), 400, "invalid", "status: ")
    assert_error(await staff.call_patch(path, {"discount_amount": 21}), 400, "invalid")
    assert_error(await staff.call_patch(path, {"items": []}), 400, "invalid", "items: ")
    assert_error(await staff.call_patch(path, {"due_date": "2000-01-01"}), 400, "invalid")
    assert_error(await staff.call_patch(path, {"notes": None}), 400, "invalid", "notes: ")
    assert (await staff.get(path)).body == lines.body
    assert_error(await alice.call_patch(path, {"notes": "mine"}), 403, "permission_denied")
    assert_error(await alice.call_delete(path), 403, "permission_denied")

    assert (await staff.post(f"{path}send/")).status == 200
    assert_error(await staff.call_patch(path, {"notes": "late"}), 409, "not_draft", "status: ")
    assert_error(await staff.call_delete(path), 409, "not_draft")
    cart_invoice = await checkout(alice)  # sent
    cart_path = f"{INVOICES}/{cart_invoice['invoice_id']}/"
    assert_error(await staff.call_patch(cart_path, {"notes": "x"}), 409, "not_draft")
    assert_error(await staff.call_delete(cart_path), 409, "not_draft")
    assert_error(await staff.call_patch(f"{INVOICES}/999/", {"notes": "x"}), 404, "not_found")
    assert_error(await staff.call_delete(f"{INVOICES}/999/"), 404, "not_found")


async def test_staff_delete_a_draft(shop: Quart, alice: Client, staff: Client) -> None:
    profile = await client_id(shop, "alice@example.com")
    draft = (await staff.post(f"{INVOICES}/", staff_invoice(profile))).body
    paid_draft = (await staff.post(f"{INVOICES}/", staff_invoice(profile))).body
    deleted = await staff.call_delete(f"{INVOICES}/{draft['id']}/")
    assert deleted.status == 204 and deleted.body is None
    assert_error(await staff.get(f"{INVOICES}/{draft['id']}/"), 404, "not_found")
    assert_error(await staff.call_delete(f"{INVOICES}/{draft['id']}/"), 404, "not_found")
    # A draft with a payment recorded keeps its amounts and cannot be deleted.
    payment = await record(staff, paid_draft["id"], "1.00")
    assert payment.status == 201
    path = f"{INVOICES}/{paid_draft['id']}/"
    assert_error(await staff.call_delete(path), 409, "has_payments")
    assert_error(await staff.call_patch(path, {"tax_rate": 0}), 409, "has_payments")
    with db(shop):
        assert await Invoice.filter(id=paid_draft["id"]).exists()
        assert not await Invoice.filter(id=draft["id"]).exists()


async def test_a_draft_edit_and_a_settlement_at_once(
    shop: Quart, alice: Client, staff: Client
) -> None:
    """An edit that races mark_paid either happens before it (and the invoice is paid at
    the new total) or is refused with 409: never an edited paid invoice."""
    profile = await client_id(shop, "alice@example.com")
    for _ in range(3):
        draft = (await staff.post(f"{INVOICES}/", staff_invoice(profile))).body
        path = f"{INVOICES}/{draft['id']}/"
        edit, paid = await asyncio.gather(
            staff.call_patch(path, {"discount_amount": 0}), staff.post(f"{path}mark_paid/")
        )
        assert paid.status == 200, paid.body
        final = (await staff.get(path)).body
        assert final["status"] == "paid"
        if edit.status == 200:
            assert final["discount_amount"] == "0.00"
        else:
            assert_error(edit, 409, "not_draft")
            assert final["discount_amount"] == "50.00"


# --- payment stats -------------------------------------------------------------------------


async def test_payment_stats(shop: Quart, alice: Client, bob: Client, staff: Client) -> None:
    empty = await staff.get(f"{PAYMENTS}/stats/")
    assert empty.status == 200, empty.body
    assert empty.body == {
        "total": 0,
        "by_status": {"pending": 0, "completed": 0, "failed": 0},
        "by_method": {},
        "total_completed": 0,
        "last_30_days": 0,
    }
    a = await checkout(alice)
    b = await checkout(bob)
    assert (await record(staff, a["invoice_id"], "10.00")).status == 201
    assert (await record(staff, a["invoice_id"], "19.99", method="paynow")).status == 201
    assert (await record(staff, b["invoice_id"], "5.50", method="paynow")).status == 201
    assert (await record(staff, b["invoice_id"], "99", status="pending")).status == 201
    assert (await record(staff, b["invoice_id"], "7", status="failed")).status == 201
    old = await record(staff, b["invoice_id"], "1.25")
    with db(shop):
        await Payment.filter(id=old.body["id"]).update(
            paid_at=datetime.now(UTC) - timedelta(days=40)
        )
    stats = (await staff.get(f"{PAYMENTS}/stats/")).body
    # admin/analytics/page.tsx: by_method entries {count, total} and last_30_days, formatted.
    assert stats == {
        "total": 6,
        "by_status": {"pending": 1, "completed": 4, "failed": 1},
        "by_method": {
            "bank": {"count": 2, "total": 11.25},
            "paynow": {"count": 2, "total": 25.49},
        },
        "total_completed": 36.74,
        "last_30_days": 35.49,
    }
    assert_error(await alice.get(f"{PAYMENTS}/stats/"), 403, "permission_denied")
    assert_error(await API(shop).get(f"{PAYMENTS}/stats/"), 401, "not_authenticated")


async def test_anonymous_cannot_write_invoices(shop: Quart, alice: Client) -> None:
    done = await checkout(alice)
    api = API(shop)
    for method, path in (
        ("POST", f"{INVOICES}/"),
        ("PATCH", f"{INVOICES}/{done['invoice_id']}/"),
        ("DELETE", f"{INVOICES}/{done['invoice_id']}/"),
    ):
        reply = await api.call(method, path, {"notes": "x"} if method != "DELETE" else None)
        assert_error(reply, 401, "not_authenticated")
    assert_error(
        await alice.post(f"{INVOICES}/", {"user": 1, "items": []}), 403, "permission_denied"
    )
