"""Payments against invoices: clients see their own, staff see all and record them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from slyker.auth import authenticated_user, login_required, staff_required, visible_to_caller
from slyker.contracts import IsoDateTime, Money, Page
from slyker.errors import APIError, invalid
from slyker.models.billing import Invoice, InvoiceStatus, Payment, PaymentStatus
from slyker.money import ZERO, as_number, cents
from slyker.pagination import PageQuery, paginate
from slyker.services.settlement import settle_if_covered
from slyker.validation import Id

blueprint = Blueprint("payments", __name__, url_prefix="/api/billing/payments")


class PaymentOut(BaseModel):
    id: int
    invoice: int
    amount: Money
    method: str
    status: str
    reference: str
    paid_at: IsoDateTime | None
    created_at: IsoDateTime

    @classmethod
    def from_row(cls, payment: Payment) -> PaymentOut:
        return cls(
            id=payment.id,
            invoice=payment.invoice_id,  # type: ignore[attr-defined]
            amount=payment.amount,
            method=payment.method,
            status=str(payment.status),
            reference=payment.reference,
            paid_at=payment.paid_at,
            created_at=payment.created_at,
        )


@blueprint.get("/")
@login_required
@validate_querystring(PageQuery)
@validate_response(Page[PaymentOut])
async def list_payments(query_args: PageQuery) -> dict[str, Any]:
    """The caller's payments (staff: all), newest first."""
    return await paginate(
        visible_to_caller(Payment, "invoice__user_id").order_by("-id"),
        PaymentOut.from_row,
        query_args,
    )


@blueprint.get("/<int:payment_id>/")
@login_required
@validate_response(PaymentOut)
async def get_payment(payment_id: int) -> PaymentOut:
    """One payment (404 if it is not on one of the caller's invoices)."""
    payment = await visible_to_caller(Payment, "invoice__user_id").get_or_none(id=payment_id)
    if payment is None:
        raise APIError(404, "Payment not found.")
    return PaymentOut.from_row(payment)


class PaymentIn(BaseModel):
    invoice: Id
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    method: str = Field(default="bank", max_length=20)
    reference: str = Field(default="", max_length=100)
    status: PaymentStatus = PaymentStatus.COMPLETED


@blueprint.post("/")
@staff_required
@validate_request(PaymentIn)
@validate_response(PaymentOut, 201)
async def record_payment(data: PaymentIn) -> tuple[PaymentOut, int]:
    """Staff: record a payment; the invoice becomes paid once its completed payments cover
    its total."""
    staff = authenticated_user()
    async with in_transaction() as connection:
        invoice = await Invoice.filter(id=data.invoice).select_for_update().get_or_none()
        if invoice is None:
            raise invalid("invoice", "no such invoice.")
        if invoice.status == InvoiceStatus.CANCELLED:
            raise invalid("invoice", "this invoice is cancelled.")
        payment = await Payment.create(
            invoice=invoice,
            amount=cents(data.amount),
            method=data.method,
            reference=data.reference,
            status=data.status,
            recorded_by=staff,
            paid_at=datetime.now(UTC) if data.status == PaymentStatus.COMPLETED else None,
        )
        await settle_if_covered(invoice, connection)
    return PaymentOut.from_row(payment), 201


# --- staff-written invoices --------------------------------------------------------------


class MethodTotal(BaseModel):
    count: int
    total: float


class PaymentStats(BaseModel):
    total: int
    by_status: dict[str, int]
    by_method: dict[str, MethodTotal]
    total_completed: float
    last_30_days: float


@blueprint.get("/stats/")
@staff_required
@validate_response(PaymentStats)
async def payment_stats() -> PaymentStats:
    """Staff: ``total`` (number of payments), ``by_status`` (counts), ``by_method``
    (completed payments: ``{method: {count, total}}``), ``total_completed`` and
    ``last_30_days`` (completed amounts; numbers, as the staff pages format them)."""
    rows = (
        await Payment.all().group_by("status").annotate(count=Count("id")).values("status", "count")
    )
    by_status = {s.value: 0 for s in PaymentStatus}
    for row in rows:
        by_status[getattr(row["status"], "value", row["status"])] = row["count"]
    completed = Payment.filter(status=PaymentStatus.COMPLETED)
    methods = (
        await completed.group_by("method")
        .annotate(count=Count("id"), amount=Sum("amount"))
        .order_by("method")
        .values("method", "count", "amount")
    )
    since = datetime.now(UTC) - timedelta(days=30)
    recent = (
        await completed.filter(paid_at__gte=since)
        .annotate(amount=Sum("amount"))
        .first()
        .values_list("amount", flat=True)
    )
    total_completed = sum((cents(row["amount"] or ZERO) for row in methods), ZERO)
    return PaymentStats(
        total=sum(by_status.values()),
        by_status=by_status,
        by_method={
            row["method"]: MethodTotal(count=row["count"], total=as_number(row["amount"] or ZERO))
            for row in methods
        },
        total_completed=as_number(total_completed),
        last_30_days=as_number(cents(recent or ZERO)),
    )
