"""Provisioning: a paid invoice's lines become subscriptions and domain registrations,
exactly once, in the settlement transaction. Runs on SQLite, and on PostgreSQL with
SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import secrets
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from quart import Quart
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from slyker.models.accounts import Role, User
from slyker.models.billing import Invoice, InvoiceItem, InvoiceStatus
from slyker.models.services import DomainRegistration, DomainStatus, Subscription
from slyker.services.provisioning import add_months, next_due_date, provision_invoice
from slyker.services.settlement import mark_invoice_paid
from tests.api import db, make_user, seed_catalog

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2026, 5, 1), 36, date(2029, 5, 1)),
        (date(2026, 5, 1), 120, date(2036, 5, 1)),
    ],
)
def test_add_months_clamps_to_the_month_end(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_next_due_date_by_cycle() -> None:
    start = date(2026, 1, 31)
    assert next_due_date(start, "monthly") == date(2026, 2, 28)
    assert next_due_date(start, "quarterly") == date(2026, 4, 30)
    assert next_due_date(start, "semi_annual") == date(2026, 7, 31)
    assert next_due_date(start, "annual") == date(2027, 1, 31)
    assert next_due_date(start, "biennial") == date(2028, 1, 31)
    assert next_due_date(start, "triennial") == date(2029, 1, 31)
    assert next_due_date(start, "one_time") is None


@pytest.fixture
async def shop(app: Quart) -> Quart:
    await seed_catalog(app)
    return app


@pytest.fixture
async def alice(shop: Quart) -> User:
    return await make_user(shop, "alice@example.com", Role.CLIENT)


async def invoice_with(app: Quart, user: User, *lines: dict[str, Any]) -> Invoice:
    """An unpaid invoice with ``lines`` as checkout writes them."""
    with db(app):
        invoice = await Invoice.create(
            invoice_number=f"T-{secrets.token_hex(6)}",
            user=user,
            issue_date=date.today(),
            due_date=date.today(),
            subtotal=Decimal("1"),
            total=Decimal("1"),
            payment_method="bank",
        )
        for line in lines:
            values = {
                "description": "line",
                "service_category": "hosting",
                "billing_cycle": "annual",
                "quantity": 1,
                "unit_price": Decimal("1"),
                "total": Decimal("1"),
                **line,
            }
            await InvoiceItem.create(invoice=invoice, **values)
    return invoice


HOSTING_LINE: dict[str, Any] = {
    "description": "VPS 2 GB",
    "service_category": "hosting",
    "billing_cycle": "monthly",
    "quantity": 2,
    "unit_price": Decimal("22.00"),  # 12.00 a month + 10.00 setup
    "setup_fee": Decimal("10.00"),
    "total": Decimal("44.00"),
    "hosting_product_id": 3,
    "service_metadata": {"type": "vps", "region": "Africa", "os": "ubuntu", "domain": "Ex.COM"},
}


def domain_line(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "description": f"Domain registration: {name}",
        "service_category": "domain",
        "billing_cycle": "annual",
        "domain_product_id": 1,
        "service_metadata": {
            "action": "registration",
            "domain_name": name,
            "registration_years": 1,
            "whois_privacy": False,
            **metadata,
        },
    }


async def settle(invoice_id: int) -> bool:
    """One settlement, in its own transaction (the database context must be current)."""
    async with in_transaction() as connection:
        return await mark_invoice_paid(invoice_id, connection)


async def pay(app: Quart, invoice_id: int) -> bool:
    with db(app):
        return await settle(invoice_id)


async def test_hosting_line_becomes_one_subscription_per_account(shop: Quart, alice: User) -> None:
    invoice = await invoice_with(shop, alice, HOSTING_LINE, {"service_category": "custom"})
    assert await pay(shop, invoice.id) is True
    today = date.today()
    with db(shop):
        made = await Subscription.all().order_by("id")
    assert len(made) == 2  # quantity 2; the custom line makes nothing
    assert [s.unit for s in made] == [0, 1]
    for subscription in made:
        assert subscription.user_id == alice.id and subscription.invoice_id == invoice.id
        assert subscription.hosting_product_id == 3
        assert subscription.service_name == "VPS 2 GB"
        assert subscription.price == Decimal("12.00")  # the setup fee is not recurring
        assert subscription.billing_cycle == "monthly"
        assert subscription.status == "active"
        assert subscription.start_date == today
        assert subscription.next_due_date == add_months(today, 1)
        assert subscription.domain == "ex.com" and subscription.region == "Africa"
        assert subscription.hosting_type == "vps"
        assert subscription.provisioning_completed is False


async def test_domain_lines_become_registrations(shop: Quart, alice: User) -> None:
    invoice = await invoice_with(
        shop,
        alice,
        domain_line(
            "two.com",
            registration_years=2,
            whois_privacy=True,
            auto_renew=True,
            nameservers=["NS1.Example.com", " ns2.example.com ", 5, "", "ns3.x", "ns4.x", "ns5.x"],
        ),
        domain_line("moved.com", action="transfer", epp_code="secret", registration_years=1),
        # Values from the browser that are not what they claim are not trusted.
        domain_line("odd.com", whois_privacy="yes", auto_renew="false", registration_years=True),
    )
    assert await pay(shop, invoice.id) is True
    today = date.today()
    with db(shop):
        two, moved, odd = await DomainRegistration.all().order_by("id")
    assert two.domain_name == "two.com" and two.status == DomainStatus.ACTIVE
    assert two.years == 2 and two.registration_date == today
    assert two.expiry_date == add_months(today, 24)
    assert two.whois_privacy is True and two.auto_renew is True
    assert two.nameservers == ["ns1.example.com", "ns2.example.com"]  # the first four, if text
    assert two.invoice_id == invoice.id and two.user_id == alice.id
    assert two.domain_product_id == 1
    assert moved.status == DomainStatus.PENDING_TRANSFER and moved.action == "transfer"
    assert moved.expiry_date == add_months(today, 12)
    assert odd.whois_privacy is False and odd.auto_renew is False and odd.years == 1


async def test_renewal_extends_the_clients_own_registration(shop: Quart, alice: User) -> None:
    first = await invoice_with(shop, alice, domain_line("mine.com"))
    assert await pay(shop, first.id)
    renewal = await invoice_with(
        shop, alice, domain_line("mine.com", action="renewal", registration_years=3)
    )
    assert await pay(shop, renewal.id)
    with db(shop):
        [registration] = await DomainRegistration.all()
    assert registration.expiry_date == add_months(date.today(), 12 * 4)
    assert registration.years == 4 and registration.status == DomainStatus.ACTIVE


async def test_a_name_already_held_here_waits_for_staff(shop: Quart, alice: User) -> None:
    bob = await make_user(shop, "bob@example.com")
    assert await pay(shop, (await invoice_with(shop, alice, domain_line("taken.com"))).id)
    assert await pay(shop, (await invoice_with(shop, bob, domain_line("taken.com"))).id)
    with db(shop):
        first, second = await DomainRegistration.all().order_by("id")
    assert first.status == DomainStatus.ACTIVE and first.user_id == alice.id
    assert second.status == DomainStatus.PENDING and second.user_id == bob.id
    assert "staff" in second.notes


async def test_concurrent_settlements_provision_once(shop: Quart, alice: User) -> None:
    invoice = await invoice_with(shop, alice, HOSTING_LINE, domain_line("once.com"))
    with db(shop):  # the tasks inherit the database context
        results = await asyncio.gather(*(settle(invoice.id) for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
    with db(shop):
        assert await Subscription.all().count() == 2
        assert await DomainRegistration.all().count() == 1
        assert (await Invoice.get(id=invoice.id)).status == InvoiceStatus.PAID
    assert await pay(shop, invoice.id) is False  # a replay
    with db(shop):
        assert await Subscription.all().count() == 2


async def test_the_database_refuses_a_second_provisioning(shop: Quart, alice: User) -> None:
    """Even a caller that skips the status flip cannot provision a line twice."""
    invoice = await invoice_with(shop, alice, HOSTING_LINE, domain_line("twice.com"))
    assert await pay(shop, invoice.id)
    with db(shop), pytest.raises(IntegrityError):
        async with in_transaction() as connection:
            await provision_invoice(invoice.id, connection)
    with db(shop):
        assert await Subscription.all().count() == 2
        assert await DomainRegistration.all().count() == 1


async def test_a_failed_provisioning_rolls_the_payment_back(shop: Quart, alice: User) -> None:
    invoice = await invoice_with(shop, alice, HOSTING_LINE)
    with db(shop):
        # A subscription row already claiming the line makes provisioning fail.
        item = await InvoiceItem.get(invoice_id=invoice.id)
        await Subscription.create(
            user=alice,
            invoice_item=item,
            unit=1,
            service_name="x",
            billing_cycle="monthly",
            price=Decimal("1"),
            start_date=date.today(),
            next_due_date=date.today(),
        )
    with pytest.raises(IntegrityError):
        await pay(shop, invoice.id)
    with db(shop):
        assert (await Invoice.get(id=invoice.id)).status == InvoiceStatus.SENT
        assert await Subscription.all().count() == 1
