"""An invoice becomes paid exactly once, whoever notices first (staff, a payment, Paynow).

Every path that can settle an invoice goes through :func:`mark_invoice_paid`, inside the
caller's transaction: the status flip is a conditional UPDATE, so of two concurrent
settlements exactly one returns ``True`` and runs what follows payment (provisioning).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.functions import Sum

from slyker.models.billing import Invoice, InvoiceStatus, Payment, PaymentStatus
from slyker.services.provisioning import provision_invoice

SETTLEABLE = (InvoiceStatus.DRAFT, InvoiceStatus.SENT, InvoiceStatus.OVERDUE)


async def mark_invoice_paid(invoice_id: int, connection: BaseDBAsyncClient) -> bool:
    """Flip an unpaid invoice to paid; ``False`` when it was not settleable (already paid,
    cancelled). Call inside a transaction (``connection``)."""
    moved = (
        await Invoice.filter(id=invoice_id, status__in=list(SETTLEABLE))
        .using_db(connection)
        .update(status=InvoiceStatus.PAID, paid_date=date.today())
    )
    if not moved:
        return False
    # Only the settlement that flipped the status gets here: what was sold is made once.
    await provision_invoice(invoice_id, connection)
    return True


async def completed_amount(invoice_id: int, connection: BaseDBAsyncClient) -> Decimal:
    paid = (
        await Payment.filter(invoice_id=invoice_id, status=PaymentStatus.COMPLETED)
        .using_db(connection)
        .annotate(amount_sum=Sum("amount"))
        .first()
        .values_list("amount_sum", flat=True)
    )
    return Decimal(paid or 0)


async def settle_if_covered(invoice: Invoice, connection: BaseDBAsyncClient) -> bool:
    """Mark ``invoice`` (locked by the caller) paid once completed payments cover its total."""
    if invoice.status not in SETTLEABLE:
        return False
    if await completed_amount(invoice.id, connection) < invoice.total:
        return False
    return await mark_invoice_paid(invoice.id, connection)
