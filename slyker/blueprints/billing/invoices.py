"""Invoices and payments: clients see their own, staff see and manage all."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, request
from quart_schema import validate_request
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from slyker.auth import authenticated_user, login_required, staff_required
from slyker.errors import APIError, invalid
from slyker.models.billing import Invoice, InvoiceItem, InvoiceStatus, Payment, PaymentStatus
from slyker.money import ZERO, as_string, cents
from slyker.pagination import paginate
from slyker.services.settlement import mark_invoice_paid, settle_if_covered

invoices = Blueprint("invoices", __name__, url_prefix="/api/billing/invoices")
payments = Blueprint("payments", __name__, url_prefix="/api/billing/payments")


def payment_json(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "invoice": payment.invoice_id,
        "amount": as_string(payment.amount),
        "method": payment.method,
        "status": str(payment.status),
        "reference": payment.reference,
        "paid_at": payment.paid_at.isoformat() if payment.paid_at else None,
        "created_at": payment.created_at.isoformat(),
    }


async def invoice_json(invoice: Invoice) -> dict[str, Any]:
    items = await InvoiceItem.filter(invoice_id=invoice.id).order_by("id")
    paid = await Payment.filter(invoice_id=invoice.id).order_by("id")
    return {
        "id": invoice.id,
        "invoice_number": invoice.invoice_number,
        "user": invoice.user_id,
        "status": str(invoice.status),
        "issue_date": invoice.issue_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "paid_date": invoice.paid_date.isoformat() if invoice.paid_date else None,
        "subtotal": as_string(invoice.subtotal),
        "tax_rate": as_string(invoice.tax_rate),
        "tax_amount": as_string(invoice.tax_amount),
        "discount_amount": as_string(invoice.discount_amount),
        "total": as_string(invoice.total),
        "payment_method": invoice.payment_method,
        "billing_info": invoice.billing_info,
        "items": [
            {
                "id": item.id,
                "description": item.description,
                "service_category": item.service_category,
                "billing_cycle": item.billing_cycle,
                "quantity": item.quantity,
                "unit_price": as_string(item.unit_price),
                "total": as_string(item.total),
                "service_metadata": item.service_metadata,
            }
            for item in items
        ],
        "payments": [payment_json(payment) for payment in paid],
        "created_at": invoice.created_at.isoformat(),
    }


def _visible_invoices() -> Any:
    user = authenticated_user()
    queryset = Invoice.all()
    return queryset if user.is_staff else queryset.filter(user_id=user.id)


async def _invoice(invoice_id: int) -> Invoice:
    invoice = await _visible_invoices().get_or_none(id=invoice_id)
    if invoice is None:
        raise APIError(404, "Invoice not found.")
    return invoice


@invoices.get("/")
@login_required
async def list_invoices() -> dict[str, Any]:
    """The caller's invoices (staff: everyone's), newest first; ``?status=`` filters."""
    queryset = _visible_invoices()
    status = request.args.get("status")
    if status:
        if status not in {s.value for s in InvoiceStatus}:
            raise invalid("status", f"must be one of {', '.join(s.value for s in InvoiceStatus)}.")
        queryset = queryset.filter(status=status)
    return await paginate(queryset.order_by("-id"), invoice_json)


@invoices.get("/stats/")
@staff_required
async def invoice_stats() -> dict[str, Any]:
    """Staff: how many invoices per status and the amounts paid and outstanding."""
    rows = (
        await Invoice.all()
        .group_by("status")
        .annotate(count=Count("id"), amount=Sum("total"))
        .values("status", "count", "amount")
    )
    by_status = {s.value: {"count": 0, "total": "0.00"} for s in InvoiceStatus}
    for row in rows:
        status = getattr(row["status"], "value", row["status"])
        by_status[status] = {"count": row["count"], "total": as_string(row["amount"] or ZERO)}
    outstanding = sum((Decimal(by_status[s]["total"]) for s in ("draft", "sent", "overdue")), ZERO)
    return {
        "total_invoices": sum(entry["count"] for entry in by_status.values()),
        "by_status": by_status,
        "paid_amount": by_status["paid"]["total"],
        "outstanding_amount": as_string(outstanding),
    }


@invoices.get("/<int:invoice_id>/")
@login_required
async def get_invoice(invoice_id: int) -> dict[str, Any]:
    """One invoice with its lines and payments (404 if it is not the caller's)."""
    return await invoice_json(await _invoice(invoice_id))


async def _transition(
    invoice_id: int, allowed_from: set[InvoiceStatus], to: InvoiceStatus, **extra: Any
) -> dict[str, Any]:
    invoice = await _invoice(invoice_id)
    moved = await Invoice.filter(id=invoice.id, status__in=list(allowed_from)).update(
        status=to, **extra
    )
    if not moved:
        raise APIError(
            409,
            f"status: a {invoice.status!s} invoice cannot become {to.value}.",
            code="invalid_transition",
        )
    return await invoice_json(await Invoice.get(id=invoice.id))


@invoices.post("/<int:invoice_id>/send/")
@staff_required
async def send_invoice(invoice_id: int) -> dict[str, Any]:
    """Staff: mark a draft invoice as sent."""
    return await _transition(invoice_id, {InvoiceStatus.DRAFT}, InvoiceStatus.SENT)


@invoices.post("/<int:invoice_id>/mark_paid/")
@staff_required
async def mark_paid(invoice_id: int) -> dict[str, Any]:
    """Staff: mark an invoice paid (without recording a payment)."""
    invoice = await _invoice(invoice_id)
    async with in_transaction() as connection:
        if not await mark_invoice_paid(invoice.id, connection):
            raise APIError(
                409,
                f"status: a {invoice.status!s} invoice cannot become paid.",
                code="invalid_transition",
            )
    return await invoice_json(await Invoice.get(id=invoice.id))


@invoices.post("/<int:invoice_id>/cancel/")
@staff_required
async def cancel_invoice(invoice_id: int) -> dict[str, Any]:
    """Staff: cancel an unpaid invoice."""
    return await _transition(
        invoice_id,
        {InvoiceStatus.DRAFT, InvoiceStatus.SENT, InvoiceStatus.OVERDUE},
        InvoiceStatus.CANCELLED,
    )


def _visible_payments() -> Any:
    user = authenticated_user()
    queryset = Payment.all()
    return queryset if user.is_staff else queryset.filter(invoice__user_id=user.id)


@payments.get("/")
@login_required
async def list_payments() -> dict[str, Any]:
    """The caller's payments (staff: all), newest first."""
    return await paginate(_visible_payments().order_by("-id"), payment_json)


@payments.get("/<int:payment_id>/")
@login_required
async def get_payment(payment_id: int) -> dict[str, Any]:
    """One payment (404 if it is not on one of the caller's invoices)."""
    payment = await _visible_payments().get_or_none(id=payment_id)
    if payment is None:
        raise APIError(404, "Payment not found.")
    return payment_json(payment)


class PaymentIn(BaseModel):
    invoice: int
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    method: str = Field(default="bank", max_length=20)
    reference: str = Field(default="", max_length=100)
    status: PaymentStatus = PaymentStatus.COMPLETED


@payments.post("/")
@staff_required
@validate_request(PaymentIn)
async def record_payment(data: PaymentIn) -> tuple[dict[str, Any], int]:
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
    return payment_json(payment), 201
