"""Invoices: clients see their own, staff see and manage all (payments: :mod:`.payments`)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, request
from quart_schema import document_querystring, validate_request
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from slyker.auth import authenticated_user, login_required, staff_required
from slyker.errors import APIError, invalid
from slyker.models.billing import Invoice, InvoiceItem, InvoiceStatus, Payment
from slyker.money import ZERO, as_number, as_string, cents
from slyker.pagination import PageQuery, paginate
from slyker.services.clients import client_summary
from slyker.services.invoicing import (
    DraftLine,
    create_draft,
    delete_draft,
    invoice_owner,
    update_draft,
)
from slyker.services.settlement import mark_invoice_paid
from slyker.settings import current_settings
from slyker.validation import MAX_INT, NO_NUL, Day

MAX_INVOICE_LINES = 200
MAX_LINE_QUANTITY = 100_000

blueprint = Blueprint("invoices", __name__, url_prefix="/api/billing/invoices")


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
        "client": await client_summary(invoice.user_id),
        "status": str(invoice.status),
        "issue_date": invoice.issue_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "paid_date": invoice.paid_date.isoformat() if invoice.paid_date else None,
        "subtotal": as_string(invoice.subtotal),
        "tax_rate": as_string(invoice.tax_rate),
        "tax_amount": as_string(invoice.tax_amount),
        "discount_amount": as_string(invoice.discount_amount),
        "total": as_string(invoice.total),
        # What the client dashboard lists and sums: the invoice total.
        "amount": as_string(invoice.total),
        "payment_method": invoice.payment_method,
        "billing_info": invoice.billing_info,
        "notes": invoice.notes,
        "terms": invoice.terms,
        "items": [
            {
                "id": item.id,
                "description": item.description,
                "service_category": item.service_category,
                "billing_cycle": item.billing_cycle,
                "quantity": item.quantity,
                "unit_price": as_string(item.unit_price),
                "total": as_string(item.total),
                "amount": as_string(item.total),  # the staff invoice page's name for it
                "service_metadata": item.service_metadata,
                "hosting_product": item.hosting_product_id,
                "domain_product": item.domain_product_id,
                "service": item.service_id,
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


class InvoiceQuery(PageQuery):
    status: InvoiceStatus | None = None


@blueprint.get("/")
@document_querystring(InvoiceQuery)
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


@blueprint.get("/stats/")
@staff_required
async def invoice_stats() -> dict[str, Any]:
    """Staff: invoices per status (``by_status``: counts, ``amount_by_status``: totals),
    revenue from paid invoices (all time, this and last calendar month by paid date, growth
    in percent, null without last-month revenue), the outstanding amount (draft, sent and
    overdue totals) and ``recent_count``: invoices issued in the last 30 days. Amounts in
    ``revenue`` and ``outstanding`` are numbers (the staff pages format them)."""
    rows = (
        await Invoice.all()
        .group_by("status")
        .annotate(count=Count("id"), amount=Sum("total"))
        .values("status", "count", "amount")
    )
    counts = {s.value: 0 for s in InvoiceStatus}
    amounts = {s.value: ZERO for s in InvoiceStatus}
    for row in rows:
        status = getattr(row["status"], "value", row["status"])
        counts[status] = row["count"]
        amounts[status] = cents(row["amount"] or ZERO)
    outstanding = sum((amounts[s] for s in ("draft", "sent", "overdue")), ZERO)
    today = date.today()
    this_month = today.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    this_revenue = await _paid_between(this_month, today)
    last_revenue = await _paid_between(last_month, this_month - timedelta(days=1))
    growth = (
        round(float((this_revenue - last_revenue) / last_revenue * 100), 1)
        if last_revenue
        else None
    )
    recent = await Invoice.filter(issue_date__gte=today - timedelta(days=30)).count()
    return {
        "total": sum(counts.values()),
        "total_invoices": sum(counts.values()),
        "by_status": counts,
        "amount_by_status": {status: as_string(amount) for status, amount in amounts.items()},
        "revenue": {
            "total": as_number(amounts["paid"]),
            "this_month": as_number(this_revenue),
            "last_month": as_number(last_revenue),
            "growth_percent": growth,
        },
        "outstanding": as_number(outstanding),
        "paid_amount": as_string(amounts["paid"]),
        "outstanding_amount": as_string(outstanding),
        "recent_count": recent,
    }


async def _paid_between(first: date, last: date) -> Decimal:
    paid = (
        await Invoice.filter(status=InvoiceStatus.PAID, paid_date__gte=first, paid_date__lte=last)
        .annotate(amount=Sum("total"))
        .first()
        .values_list("amount", flat=True)
    )
    return cents(paid or ZERO)


@blueprint.get("/<int:invoice_id>/")
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


@blueprint.post("/<int:invoice_id>/send/")
@staff_required
async def send_invoice(invoice_id: int) -> dict[str, Any]:
    """Staff: mark a draft invoice as sent."""
    return await _transition(invoice_id, {InvoiceStatus.DRAFT}, InvoiceStatus.SENT)


@blueprint.post("/<int:invoice_id>/mark_paid/")
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


@blueprint.post("/<int:invoice_id>/cancel/")
@staff_required
async def cancel_invoice(invoice_id: int) -> dict[str, Any]:
    """Staff: cancel an unpaid invoice."""
    return await _transition(
        invoice_id,
        {InvoiceStatus.DRAFT, InvoiceStatus.SENT, InvoiceStatus.OVERDUE},
        InvoiceStatus.CANCELLED,
    )


# --- staff-written invoices --------------------------------------------------------------


class InvoiceLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Annotated[str, Field(min_length=1, max_length=255), NO_NUL]
    quantity: int = Field(default=1, ge=1, le=MAX_LINE_QUANTITY)
    unit_price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)

    def line(self) -> DraftLine:
        return DraftLine(self.description, self.quantity, self.unit_price)


Notes = Annotated[str, Field(max_length=10_000), NO_NUL]
TaxRate = Annotated[Decimal, Field(ge=0, le=100, max_digits=5, decimal_places=2)]
Discount = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]


class InvoiceIn(BaseModel):
    """A draft invoice: ``client`` (a client profile id, as the staff page sends) or
    ``user`` (a user id). ``tax_rate`` defaults to TAX_RATE; totals are computed here."""

    model_config = ConfigDict(extra="forbid")

    client: int | None = Field(default=None, ge=1, le=MAX_INT)
    user: int | None = Field(default=None, ge=1, le=MAX_INT)
    issue_date: Day | None = None
    due_date: Day | None = None
    items: list[InvoiceLineIn] = Field(min_length=1, max_length=MAX_INVOICE_LINES)
    tax_rate: TaxRate | None = None
    discount_amount: Discount = Decimal("0")
    notes: Notes = ""
    terms: Notes = ""
    payment_method: Annotated[str, Field(min_length=1, max_length=20), NO_NUL] = "bank"


class InvoiceChange(BaseModel):
    """Any of these; ``items`` replaces every line. ``status`` may only say ``draft``: the
    send, mark_paid and cancel actions move an invoice on."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["draft"] | None = None
    issue_date: Day | None = None
    due_date: Day | None = None
    items: list[InvoiceLineIn] | None = Field(
        default=None, min_length=1, max_length=MAX_INVOICE_LINES
    )
    tax_rate: TaxRate | None = None
    discount_amount: Discount | None = None
    notes: Notes | None = None
    terms: Notes | None = None
    payment_method: Annotated[str, Field(min_length=1, max_length=20), NO_NUL] | None = None


@blueprint.post("/")
@staff_required
@validate_request(InvoiceIn)
async def create_invoice(data: InvoiceIn) -> tuple[dict[str, Any], int]:
    """Staff: write a draft invoice for a client: ``{client | user, issue_date?, due_date?,
    items: [{description, quantity, unit_price}], tax_rate?, discount_amount?, notes?,
    terms?}`` → 201 with the invoice. Lines are free text (nothing is provisioned when paid);
    subtotal, tax and total are computed from them."""
    settings = current_settings()
    owner = await invoice_owner(client=data.client, user=data.user)
    issue = data.issue_date or date.today()
    invoice = await create_draft(
        owner,
        [item.line() for item in data.items],
        issue_date=issue,
        due_date=data.due_date or issue + timedelta(days=settings.invoice_due_days),
        tax_rate=settings.tax_rate if data.tax_rate is None else data.tax_rate,
        discount_amount=data.discount_amount,
        notes=data.notes,
        terms=data.terms,
        payment_method=data.payment_method,
    )
    return await invoice_json(invoice), 201


@blueprint.patch("/<int:invoice_id>/")
@staff_required
@validate_request(InvoiceChange)
async def update_invoice(invoice_id: int, data: InvoiceChange) -> dict[str, Any]:
    """Staff: change a draft (only the fields sent); totals are recomputed. 409 unless the
    invoice is a draft without payments."""
    changes = data.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise invalid(name, "may not be null.")
    changes.pop("status", None)
    if data.items is not None:
        changes["items"] = [item.line() for item in data.items]
    await update_draft(invoice_id, changes)
    return await invoice_json(await Invoice.get(id=invoice_id))


@blueprint.delete("/<int:invoice_id>/")
@staff_required
async def delete_invoice(invoice_id: int) -> tuple[str, int]:
    """Staff: delete a draft without payments (409 for any other invoice)."""
    await delete_draft(invoice_id)
    return "", 204
