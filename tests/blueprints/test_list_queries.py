"""Lists serialise without a query per row: a page of 20 invoices, subscriptions or domain
registrations costs as many database queries as a page of 2 (counted with Tortoise's
``tortoise.db_client`` DEBUG log, which records every statement sent)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal

import pytest
from quart import Quart

from slyker.models.accounts import Role, User
from slyker.models.billing import Invoice, InvoiceItem, Payment
from slyker.models.services import DomainRegistration, Subscription
from tests.api import API, db, make_user

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

LISTS = [
    "/api/billing/invoices/",
    "/api/services/subscriptions/",
    "/api/services/domain-registrations/",
]
_STATEMENT = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


class StatementCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if _STATEMENT.match(message):
            self.statements.append(message)


@contextmanager
def counted_statements() -> Iterator[StatementCounter]:
    logger = logging.getLogger("tortoise.db_client")
    counter = StatementCounter()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)


async def add_clients_with_services(app: Quart, first: int, last: int) -> None:
    """Clients ``first``..``last``, each with a paid invoice (two lines, one payment), a
    subscription and a domain: every row refers to a client of its own."""
    for n in range(first, last + 1):
        user = await make_user(app, f"client{n}@example.com")
        with db(app):
            invoice = await Invoice.create(
                invoice_number=f"INV-{n:05d}",
                user=user,
                issue_date=date(2026, 1, 1),
                due_date=date(2026, 1, 15),
                subtotal=Decimal("15.00"),
                total=Decimal("15.00"),
                payment_method="bank",
            )
            for description in ("Hosting", "Domain"):
                await InvoiceItem.create(
                    invoice=invoice,
                    description=description,
                    service_category="hosting",
                    billing_cycle="monthly",
                    quantity=1,
                    unit_price=Decimal("7.50"),
                    total=Decimal("7.50"),
                )
            await Payment.create(invoice=invoice, amount=Decimal("15.00"), method="bank")
            await Subscription.create(
                user=user,
                invoice=invoice,
                service_name="Starter",
                billing_cycle="monthly",
                price=Decimal("7.50"),
                start_date=date(2026, 1, 1),
                next_due_date=date(2026, 2, 1),
            )
            await DomainRegistration.create(
                user=user,
                invoice=invoice,
                domain_name=f"client{n}.co.zw",
                registration_date=date(2026, 1, 1),
                expiry_date=date(2027, 1, 1),
                nameservers=["ns1.example.com", "ns2.example.com"],
            )


async def statements_per_list(api: API, token: str) -> dict[str, tuple[int, int]]:
    """For each list: (rows on the first page, statements it took)."""
    counts = {}
    for path in LISTS:
        with counted_statements() as counter:
            reply = await api.get(f"{path}?page_size=20", token=token)
        assert reply.status == 200, reply.body
        counts[path] = (len(reply.body["results"]), len(counter.statements))
    return counts


async def test_a_page_costs_the_same_queries_whatever_its_rows(app: Quart) -> None:
    await make_user(app, "staff@example.com", Role.STAFF)
    api = API(app)
    staff = await api.login("staff@example.com")
    await add_clients_with_services(app, 1, 2)
    small = await statements_per_list(api, staff)
    await add_clients_with_services(app, 3, 25)
    full = await statements_per_list(api, staff)
    for path in LISTS:
        assert small[path][0] == 2 and full[path][0] == 20, (path, small, full)
        # The same statements for 20 rows as for 2 (none per row) ...
        assert full[path][1] == small[path][1], (path, small[path], full[path])
    # ... and few: identity, count, page, then one query per kind of related row.
    assert full["/api/billing/invoices/"][1] <= 7, full
    with db(app):
        assert await User.all().count() == 26
