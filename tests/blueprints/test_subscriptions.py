"""Subscriptions and domain registrations: what a paid invoice gives its client, made once
whichever way the invoice is settled; clients see their own, staff see all. Runs on SQLite,
and on PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest
from quart import Quart

from slyker.models.accounts import Role
from slyker.models.billing import Invoice, InvoiceStatus
from slyker.models.services import DomainRegistration, Subscription
from slyker.services.provisioning import add_months
from tests.api import API, Reply, assert_error, db, make_user, seed_catalog

CARTS = "/api/billing/carts"
INVOICES = "/api/billing/invoices"
PAYMENTS = "/api/billing/payments"
SUBSCRIPTIONS = "/api/services/subscriptions"
DOMAINS = "/api/services/domain-registrations"
CHECKOUT = {
    "billing_info": {"full_name": "A B", "email": "a@example.com"},
    "payment_method": "bank",
}
# What the storefront's plan and domain pages add (contract: frontend-api.md).
HOSTING_ITEM = {
    "hosting_product": 3,  # VPS 2 GB: 12.00 a month + 10.00 setup
    "service_metadata": {"type": "vps", "region": "Africa", "os": "ubuntu", "domain": "a.com"},
    "quantity": 1,
    "unit_price": 1.0,
    "billing_cycle": "monthly",
}
DOMAIN_ITEM = {
    "domain_product": 1,  # .com: 2 years 25.49, privacy 4.99 a year
    "service_metadata": {
        "action": "registration",
        "domain_name": "alice-shop.com",
        "registration_years": 2,
        "whois_privacy": True,
        "auto_renew": True,
        "nameservers": ["ns1.slykertech.co.zw", "ns2.slykertech.co.zw"],
    },
    "quantity": 1,
    "unit_price": 1.0,
    "billing_cycle": "2yr",
}

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


class Client:
    def __init__(self, api: API, token: str) -> None:
        self.api, self.token = api, token

    async def get(self, path: str) -> Reply:
        return await self.api.get(path, token=self.token)

    async def post(self, path: str, json: Any = None) -> Reply:
        return await self.api.post(path, json, token=self.token)

    async def patch(self, path: str, json: Any = None) -> Reply:
        return await self.api.call("PATCH", path, json, token=self.token)


async def login(app: Quart, email: str, role: Role = Role.CLIENT) -> Client:
    await make_user(app, email, role)
    api = API(app)
    return Client(api, await api.login(email))


async def checkout(client: Client, *items: dict[str, Any]) -> dict[str, Any]:
    cart = (await client.get(f"{CARTS}/current/")).body
    for item in items:
        added = await client.post(f"{CARTS}/{cart['id']}/add_item/", item)
        assert added.status == 201, added.body
    done = await client.post(f"{CARTS}/{cart['id']}/checkout/", CHECKOUT)
    assert done.status == 201, done.body
    return done.body  # type: ignore[no-any-return]


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


async def test_after_payment_the_dashboard_shows_the_service_and_domain(
    alice: Client, staff: Client
) -> None:
    done = await checkout(alice, HOSTING_ITEM, DOMAIN_ITEM)
    assert done["total"] == "57.47"  # 22.00 + 25.49 + 2 x 4.99
    empty = {"count": 0, "next": None, "previous": None, "results": []}
    assert (await alice.get(f"{SUBSCRIPTIONS}/")).body == empty
    assert (await alice.get(f"{DOMAINS}/")).body == empty

    paid = await staff.post(f"{INVOICES}/{done['invoice_id']}/mark_paid/")
    assert paid.status == 200, paid.body
    today = date.today()

    listed = await alice.get(f"{SUBSCRIPTIONS}/")
    assert listed.status == 200 and listed.body["count"] == 1
    [subscription] = listed.body["results"]
    # dashboard/services/page.tsx: service_name, status, start_date, next_billing_date, amount
    assert subscription["service_name"] == "VPS 2 GB"
    assert subscription["status"] == "active"
    assert subscription["start_date"] == today.isoformat()
    assert subscription["next_billing_date"] == add_months(today, 1).isoformat()
    assert subscription["next_due_date"] == subscription["next_billing_date"]
    assert subscription["amount"] == "12.00"  # the monthly price, without the setup fee
    # admin/subscriptions/page.tsx: client.company_name, service.name, price, billing_cycle
    assert subscription["price"] == "12.00" and subscription["billing_cycle"] == "monthly"
    assert subscription["service"]["name"] == "VPS 2 GB"
    assert subscription["service"]["category"] == "hosting"
    assert subscription["client"]["company_name"] == "Test client"
    assert subscription["client"]["user"]["email"] == "alice@example.com"
    assert subscription["hosting_product"] == 3 and subscription["invoice"] == done["invoice_id"]
    assert subscription["domain"] == "a.com" and subscription["region"] == "Africa"
    assert subscription["provisioning_completed"] is False
    one = await alice.get(f"{SUBSCRIPTIONS}/{subscription['id']}/")
    assert one.status == 200 and one.body == subscription

    domains = await alice.get(f"{DOMAINS}/")
    assert domains.status == 200 and domains.body["count"] == 1
    [domain] = domains.body["results"]
    # dashboard/domains/page.tsx: domain_name, status, registration_date, expiry_date,
    # auto_renew, nameserver1/2
    assert domain["domain_name"] == "alice-shop.com"
    assert domain["status"] == "active"
    assert domain["registration_date"] == today.isoformat()
    assert domain["expiry_date"] == add_months(today, 24).isoformat()
    assert domain["years"] == 2 and domain["whois_privacy"] is True
    assert domain["auto_renew"] is True
    assert domain["nameserver1"] == "ns1.slykertech.co.zw"
    assert domain["nameserver2"] == "ns2.slykertech.co.zw"
    assert domain["invoice"] == done["invoice_id"]
    one = await alice.get(f"{DOMAINS}/{domain['id']}/")
    assert one.status == 200 and one.body == domain

    # The dashboard's invoice list sums ``amount``.
    [invoice] = (await alice.get(f"{INVOICES}/")).body["results"]
    assert invoice["amount"] == "57.47" and invoice["status"] == "paid"


async def test_recorded_payments_provision_when_they_cover_the_total(
    shop: Quart, alice: Client, staff: Client
) -> None:
    done = await checkout(alice, {**HOSTING_ITEM, "quantity": 2})  # 44.00
    body = {"invoice": done["invoice_id"], "amount": "40.00", "method": "bank"}
    assert (await staff.post(f"{PAYMENTS}/", body)).status == 201
    assert (await alice.get(f"{SUBSCRIPTIONS}/")).body["count"] == 0
    assert (await staff.post(f"{PAYMENTS}/", {**body, "amount": "4.00"})).status == 201
    listed = await alice.get(f"{SUBSCRIPTIONS}/")
    assert listed.body["count"] == 2  # one per hosting account
    # A later payment (overpayment) provisions nothing more.
    assert (await staff.post(f"{PAYMENTS}/", {**body, "amount": "1.00"})).status == 201
    assert (await staff.post(f"{INVOICES}/{done['invoice_id']}/mark_paid/")).status == 409
    with db(shop):
        assert await Subscription.all().count() == 2


async def test_concurrent_mark_paid_provisions_once(
    shop: Quart, alice: Client, staff: Client
) -> None:
    done = await checkout(alice, HOSTING_ITEM, DOMAIN_ITEM)
    path = f"{INVOICES}/{done['invoice_id']}/mark_paid/"
    replies = await asyncio.gather(*(staff.post(path) for _ in range(4)))
    assert sorted(r.status for r in replies) == [200, 409, 409, 409], [r.body for r in replies]
    with db(shop):
        assert await Subscription.all().count() == 1
        assert await DomainRegistration.all().count() == 1


async def test_concurrent_payments_provision_once(
    shop: Quart, alice: Client, staff: Client
) -> None:
    done = await checkout(alice, HOSTING_ITEM, DOMAIN_ITEM)
    body = {"invoice": done["invoice_id"], "amount": done["total"], "method": "bank"}
    replies = await asyncio.gather(*(staff.post(f"{PAYMENTS}/", body) for _ in range(3)))
    assert [r.status for r in replies] == [201, 201, 201], [r.body for r in replies]
    with db(shop):
        assert (await Invoice.get(id=done["invoice_id"])).status == InvoiceStatus.PAID
        assert await Subscription.all().count() == 1
        assert await DomainRegistration.all().count() == 1


async def test_unpaid_and_cancelled_invoices_provision_nothing(
    shop: Quart, alice: Client, staff: Client
) -> None:
    await checkout(alice, HOSTING_ITEM)
    cancelled = await checkout(alice, DOMAIN_ITEM)
    assert (await staff.post(f"{INVOICES}/{cancelled['invoice_id']}/cancel/")).status == 200
    assert (await staff.post(f"{INVOICES}/{cancelled['invoice_id']}/mark_paid/")).status == 409
    assert (await alice.get(f"{SUBSCRIPTIONS}/")).body["count"] == 0
    assert (await alice.get(f"{DOMAINS}/")).body["count"] == 0


async def test_clients_see_only_their_own(
    shop: Quart, alice: Client, bob: Client, staff: Client
) -> None:
    for client in (alice, bob):
        done = await checkout(
            client,
            HOSTING_ITEM,
            DOMAIN_ITEM
            if client is alice
            else {
                **DOMAIN_ITEM,
                "service_metadata": {**DOMAIN_ITEM["service_metadata"], "domain_name": "bob.com"},
            },
        )
        assert (await staff.post(f"{INVOICES}/{done['invoice_id']}/mark_paid/")).status == 200
    alice_subs = (await alice.get(f"{SUBSCRIPTIONS}/")).body["results"]
    bob_subs = (await bob.get(f"{SUBSCRIPTIONS}/")).body["results"]
    alice_domains = (await alice.get(f"{DOMAINS}/")).body["results"]
    bob_domains = (await bob.get(f"{DOMAINS}/")).body["results"]
    assert len(alice_subs) == len(bob_subs) == len(alice_domains) == len(bob_domains) == 1
    assert bob_domains[0]["domain_name"] == "bob.com"
    assert_error(await bob.get(f"{SUBSCRIPTIONS}/{alice_subs[0]['id']}/"), 404, "not_found")
    assert_error(await alice.get(f"{SUBSCRIPTIONS}/{bob_subs[0]['id']}/"), 404, "not_found")
    assert_error(await bob.get(f"{DOMAINS}/{alice_domains[0]['id']}/"), 404, "not_found")
    assert_error(await alice.get(f"{DOMAINS}/999/"), 404, "not_found")
    assert_error(await alice.get(f"{DOMAINS}/99999999999999999999/"), 404, "not_found")

    everyone = await staff.get(f"{SUBSCRIPTIONS}/")
    assert everyone.body["count"] == 2
    assert [s["id"] for s in everyone.body["results"]] == [bob_subs[0]["id"], alice_subs[0]["id"]]
    assert (await staff.get(f"{DOMAINS}/")).body["count"] == 2
    one = await staff.get(f"{DOMAINS}/{alice_domains[0]['id']}/")
    assert one.status == 200 and one.body == alice_domains[0]


async def test_lists_paginate_and_filter_by_status(
    shop: Quart, alice: Client, staff: Client
) -> None:
    done = await checkout(alice, {**HOSTING_ITEM, "quantity": 3})
    assert (await staff.post(f"{INVOICES}/{done['invoice_id']}/mark_paid/")).status == 200
    page = await alice.get(f"{SUBSCRIPTIONS}/?page_size=2")
    assert page.body["count"] == 3 and len(page.body["results"]) == 2
    assert page.body["next"].endswith(f"{SUBSCRIPTIONS}/?page_size=2&page=2")
    last = await alice.get(f"{SUBSCRIPTIONS}/?page_size=2&page=2")
    assert len(last.body["results"]) == 1 and last.body["next"] is None
    first_id = last.body["results"][0]["id"]
    assert (
        await staff.patch(f"{SUBSCRIPTIONS}/{first_id}/", {"status": "suspended"})
    ).status == 200
    suspended = await alice.get(f"{SUBSCRIPTIONS}/?status=suspended")
    assert [s["id"] for s in suspended.body["results"]] == [first_id]
    assert (await alice.get(f"{SUBSCRIPTIONS}/?status=active")).body["count"] == 2
    assert_error(await alice.get(f"{SUBSCRIPTIONS}/?status=bogus"), 400, "invalid", "status: ")
    assert_error(await alice.get(f"{DOMAINS}/?status=bogus"), 400, "invalid", "status: ")


async def test_staff_update_a_subscription(shop: Quart, alice: Client, staff: Client) -> None:
    done = await checkout(alice, HOSTING_ITEM)
    assert (await staff.post(f"{INVOICES}/{done['invoice_id']}/mark_paid/")).status == 200
    [subscription] = (await alice.get(f"{SUBSCRIPTIONS}/")).body["results"]
    path = f"{SUBSCRIPTIONS}/{subscription['id']}/"
    # admin/subscriptions/page.tsx sends {status, billing_cycle, price: <float>, notes}
    change = {"status": "suspended", "billing_cycle": "annual", "price": 120.5, "notes": "late"}
    changed = await staff.patch(path, change)
    assert changed.status == 200, changed.body
    assert changed.body["status"] == "suspended" and changed.body["billing_cycle"] == "annual"
    assert changed.body["price"] == "120.50" and changed.body["notes"] == "late"
    assert changed.body["start_date"] == subscription["start_date"]  # untouched
    only = await staff.patch(path, {"provisioning_completed": True})
    assert only.body["provisioning_completed"] is True and only.body["status"] == "suspended"
    assert (await alice.get(path)).body == only.body

    for bad, field in (
        ({"status": "bogus"}, "status"),
        ({"price": "-1"}, "price"),
        ({"price": 10**20}, "price"),
        ({"price": "1.001"}, "price"),
        ({"notes": "a\x00b"}, "notes"),
        ({"billing_cycle": "weekly"}, "billing_cycle"),
        ({"status": None}, "status"),
    ):
        reply = await staff.patch(path, bad)
        assert_error(reply, 400, "invalid", f"{field}: ")
    assert (await alice.get(path)).body == only.body
    assert_error(await alice.patch(path, {"status": "active"}), 403, "permission_denied")
    assert_error(await staff.patch(f"{SUBSCRIPTIONS}/999/", {"notes": "x"}), 404, "not_found")


async def test_anonymous_gets_401(shop: Quart) -> None:
    api = API(shop)
    for path in (f"{SUBSCRIPTIONS}/", f"{SUBSCRIPTIONS}/1/", f"{DOMAINS}/", f"{DOMAINS}/1/"):
        assert_error(await api.get(path), 401, "not_authenticated")
    assert_error(
        await api.call("PATCH", f"{SUBSCRIPTIONS}/1/", {"status": "active"}),
        401,
        "not_authenticated",
    )
