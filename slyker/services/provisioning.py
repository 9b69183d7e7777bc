"""What a paid invoice gives its client: a subscription per hosting account and a domain
registration per domain line.

:func:`provision_invoice` runs inside the settlement transaction, right after
:func:`slyker.services.settlement.mark_invoice_paid` flipped the status, so it runs exactly
once per invoice (and rolls back with the payment if it fails). Unique constraints on the
invoice line (``Subscription(invoice_item, unit)``, ``DomainRegistration.invoice_item``) are
the second lock on the door.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from slyker.models.billing import BillingCycle, Invoice, InvoiceItem
from slyker.models.services import (
    DomainRegistration,
    DomainStatus,
    Subscription,
    SubscriptionStatus,
)
from slyker.money import ZERO, cents

log = logging.getLogger(__name__)

CYCLE_MONTHS = {
    BillingCycle.MONTHLY: 1,
    BillingCycle.QUARTERLY: 3,
    BillingCycle.SEMI_ANNUAL: 6,
    BillingCycle.ANNUAL: 12,
    BillingCycle.BIENNIAL: 24,
    BillingCycle.TRIENNIAL: 36,
}
MAX_NAMESERVERS = 4
# Registrations that still hold their name: a second registration of it needs staff.
HOLDING_STATUSES = (DomainStatus.ACTIVE, DomainStatus.PENDING_TRANSFER)


def add_months(start: date, months: int) -> date:
    """``start`` plus ``months`` calendar months; the day is clamped to the month's end
    (31 January + 1 month = 28 or 29 February)."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def next_due_date(start: date, billing_cycle: str) -> date | None:
    """When the next invoice for a subscription started on ``start`` falls due."""
    try:
        return add_months(start, CYCLE_MONTHS[BillingCycle(billing_cycle)])
    except ValueError:
        return None


@dataclass(frozen=True)
class Provisioned:
    subscriptions: list[Subscription]
    domains: list[DomainRegistration]


def _text(value: Any, limit: int) -> str:
    """A client-supplied metadata value as stored text: strings only, no NUL, bounded."""
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "").strip()[:limit]


def _nameservers(metadata: dict[str, Any]) -> list[str]:
    raw = metadata.get("nameservers")
    if not isinstance(raw, list):
        return []
    names = [_text(name, 253).lower() for name in raw[:MAX_NAMESERVERS]]
    return [name for name in names if name]


async def provision_invoice(invoice_id: int, connection: BaseDBAsyncClient) -> Provisioned:
    """Create what the paid invoice ``invoice_id`` sold. Call only from settlement, in its
    transaction, when the invoice has just become paid."""
    invoice = await Invoice.get(id=invoice_id).using_db(connection)
    today = invoice.paid_date or date.today()
    items = await InvoiceItem.filter(invoice_id=invoice_id).order_by("id").using_db(connection)
    subscriptions: list[Subscription] = []
    domains: list[DomainRegistration] = []
    for item in items:
        if item.hosting_product_id is not None or item.service_category == "hosting":
            subscriptions.extend(await _subscriptions(invoice, item, today, connection))
        elif item.domain_product_id is not None or item.service_category == "domain":
            domains.append(await _domain(invoice, item, today, connection))
    if subscriptions or domains:
        log.info(
            "Invoice %s paid: %s subscription(s), %s domain(s)",
            invoice.invoice_number,
            len(subscriptions),
            len(domains),
        )
    return Provisioned(subscriptions, domains)


async def _subscriptions(
    invoice: Invoice, item: InvoiceItem, today: date, connection: BaseDBAsyncClient
) -> list[Subscription]:
    metadata = item.service_metadata if isinstance(item.service_metadata, dict) else {}
    due = next_due_date(today, item.billing_cycle)
    notes = ""
    if due is None:  # not a cart line; keep the payment, let staff set the cycle
        due, notes = today, f"Unknown billing cycle {item.billing_cycle!r}: set it."
    price = max(cents(item.unit_price - item.setup_fee), ZERO)
    made = []
    for unit in range(item.quantity):
        made.append(
            await Subscription.create(
                using_db=connection,
                user_id=invoice.user_id,
                hosting_product_id=item.hosting_product_id,
                invoice_id=invoice.id,
                invoice_item_id=item.id,
                unit=unit,
                service_name=item.description,
                hosting_type=_text(metadata.get("type"), 16),
                billing_cycle=item.billing_cycle,
                price=price,
                status=SubscriptionStatus.ACTIVE if not notes else SubscriptionStatus.PENDING,
                start_date=today,
                next_due_date=due,
                domain=_text(metadata.get("domain"), 253).lower(),
                region=_text(metadata.get("region"), 50),
                service_metadata=metadata,
                notes=notes,
            )
        )
    return made


def _years(metadata: dict[str, Any]) -> int:
    raw = metadata.get("registration_years", 1)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 10 else 1


async def _domain(
    invoice: Invoice, item: InvoiceItem, today: date, connection: BaseDBAsyncClient
) -> DomainRegistration:
    metadata = item.service_metadata if isinstance(item.service_metadata, dict) else {}
    name = _text(metadata.get("domain_name"), 253).lower().rstrip(".")
    action = _text(metadata.get("action"), 16) or "registration"
    years = 1 if action == "transfer" else _years(metadata)
    details = {
        "whois_privacy": metadata.get("whois_privacy") is True,
        "auto_renew": metadata.get("auto_renew") is True,
        "nameservers": _nameservers(metadata),
    }
    if action == "renewal":
        own = (
            await DomainRegistration.filter(user_id=invoice.user_id, domain_name=name)
            .order_by("-expiry_date")
            .using_db(connection)
            .first()
        )
        if own is not None:
            own.expiry_date = add_months(max(own.expiry_date, today), 12 * years)
            own.status = DomainStatus.ACTIVE
            own.years += years
            own.whois_privacy = own.whois_privacy or details["whois_privacy"]
            await own.save(using_db=connection)
            return own
    status, notes = DomainStatus.ACTIVE, ""
    if action == "transfer":
        status = DomainStatus.PENDING_TRANSFER
        notes = "Transfer requested: completes once the current registrar releases it."
    elif action == "registration":
        taken = (
            await DomainRegistration.filter(
                domain_name=name, status__in=list(HOLDING_STATUSES), expiry_date__gte=today
            )
            .using_db(connection)
            .exists()
        )
        if taken:
            status = DomainStatus.PENDING
            notes = "Already registered here: staff must resolve this order (refund or fix)."
    return await DomainRegistration.create(
        using_db=connection,
        user_id=invoice.user_id,
        domain_product_id=item.domain_product_id,
        invoice_id=invoice.id,
        invoice_item_id=item.id,
        domain_name=name,
        action=action,
        years=years,
        status=status,
        registration_date=today,
        expiry_date=add_months(today, 12 * years),
        notes=notes,
        **details,
    )
