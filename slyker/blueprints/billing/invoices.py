"""Invoices: clients see their own, staff see and manage all."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from slyker.auth import login_required, staff_required, visible_to_caller
from slyker.blueprints.billing.payments import PaymentOut
from slyker.contracts import NO_CONTENT, IsoDate, IsoDateTime, Money, NoContent, Page
from slyker.errors import APIError, invalid
from slyker.models.billing import Invoice, InvoiceItem, InvoiceStatus, Payment
from slyker.money import ZERO, as_number, cents
from slyker.pagination import PageQuery, paginate_rows
from slyker.services.clients import ClientSummary, client_summaries
from slyker.services.invoicing import (
    DraftLine,
    create_draft,
    delete_draft,
    invoice_owner,
    update_draft,
)
from slyker.services.settlement import mark_invoice_paid
from slyker.settings import current_settings
from slyker.validation import MAX_INT, NO_NUL, Day, query_choice

MAX_INVOICE_LINES = 200
MAX_LINE_QUANTITY = 100_000

blueprint = Blueprint("invoices", __name__, url_prefix="/api/billing/invoices")


class InvoiceItemOut(BaseModel):
    id: int
    description: str
    service_category: str
    billing_cycle: str
    quantity: int
    unit_price: Money
    total: Money
    amount: Money = Field(description="= total (the staff invoice page's name for it)")
    service_metadata: dict[str, Any]
    hosting_product: int | None
    domain_product: int | None
    service: int | None

    @classmethod
    def from_row(cls, item: InvoiceItem) -> InvoiceItemOut:
        return cls(
            id=item.id,
            description=item.description,
            service_category=item.service_category,
            billing_cycle=item.billing_cycle,
            quantity=item.quantity,
            unit_price=item.unit_price,
            total=item.total,
            amount=item.total,
            service_metadata=item.service_metadata,
            hosting_product=item.hosting_product_id,  # type: ignore[attr-defined]
            domain_product=item.domain_product_id,  # type: ignore[attr-defined]
            service=item.service_id,  # type: ignore[attr-defined]
        )


class InvoiceOut(BaseModel):
    id: int
    invoice_number: str
    user: int
    client: ClientSummary
    status: str
    issue_date: IsoDate
    due_date: IsoDate
    paid_date: IsoDate | None
    subtotal: Money
    tax_rate: Money = Field(description="percent")
    tax_amount: Money
    discount_amount: Money
    total: Money
    # What the client dashboard lists and sums: the invoice total.
    amount: Money = Field(description="= total")
    payment_method: str
    billing_info: dict[str, Any]
    notes: str
    terms: str
    items: list[InvoiceItemOut]
    payments: list[PaymentOut]
    created_at: IsoDateTime

    @classmethod
    def from_row(
        cls,
        invoice: Invoice,
        client: ClientSummary,
        items: list[InvoiceItem],
        payments: list[Payment],
    ) -> InvoiceOut:
        return cls(
            id=invoice.id,
            invoice_number=invoice.invoice_number,
            user=invoice.user_id,  # type: ignore[attr-defined]
            client=client,
            status=str(invoice.status),
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            paid_date=invoice.paid_date,
            subtotal=invoice.subtotal,
            tax_rate=invoice.tax_rate,
            tax_amount=invoice.tax_amount,
            discount_amount=invoice.discount_amount,
            total=invoice.total,
            amount=invoice.total,
            payment_method=invoice.payment_method,
            billing_info=invoice.billing_info,
            notes=invoice.notes,
            terms=invoice.terms,
            items=[InvoiceItemOut.from_row(item) for item in items],
            payments=[PaymentOut.from_row(payment) for payment in payments],
            created_at=invoice.created_at,
        )

    @classmethod
    async def of_rows(cls, invoices: list[Invoice]) -> list[InvoiceOut]:
        """Invoices with their lines, payments and clients: three queries for the lot,
        whatever their number (not one per invoice)."""
        ids = [invoice.id for invoice in invoices]
        items: dict[int, list[InvoiceItem]] = {id_: [] for id_ in ids}
        payments: dict[int, list[Payment]] = {id_: [] for id_ in ids}
        if ids:
            for item in await InvoiceItem.filter(invoice_id__in=ids).order_by("id"):
                items[item.invoice_id].append(item)  # type: ignore[attr-defined]
            for payment in await Payment.filter(invoice_id__in=ids).order_by("id"):
                payments[payment.invoice_id].append(payment)  # type: ignore[attr-defined]
        clients = await client_summaries(invoice.user_id for invoice in invoices)  # type: ignore[attr-defined]
        return [
            cls.from_row(
                invoice,
                clients[invoice.user_id],  # type: ignore[attr-defined]
                items[invoice.id],
                payments[invoice.id],
            )
            for invoice in invoices
        ]

    @classmethod
    async def of(cls, invoice: Invoice) -> InvoiceOut:
        return (await cls.of_rows([invoice]))[0]


async def _invoice(invoice_id: int) -> Invoice:
    invoice = await visible_to_caller(Invoice).get_or_none(id=invoice_id)
    if invoice is None:
        raise APIError(404, "Invoice not found.")
    return invoice


class InvoiceQuery(PageQuery):
    status: Annotated[InvoiceStatus | None, query_choice(InvoiceStatus)] = None


@blueprint.get("/")
@login_required
@validate_querystring(InvoiceQuery)
@validate_response(Page[InvoiceOut])
async def list_invoices(query_args: InvoiceQuery) -> dict[str, Any]:
    """The caller's invoices (staff: everyone's), newest first; ``?status=`` filters."""
    queryset = visible_to_caller(Invoice)
    if query_args.status is not None:
        queryset = queryset.filter(status=query_args.status)
    return await paginate_rows(queryset.order_by("-id"), InvoiceOut.of_rows, query_args)


class Revenue(BaseModel):
    total: float
    this_month: float
    last_month: float
    growth_percent: float | None


class InvoiceStats(BaseModel):
    total: int
    total_invoices: int = Field(description="= total")
    by_status: dict[str, int]
    amount_by_status: dict[str, Money]
    revenue: Revenue
    outstanding: float
    paid_amount: Money
    outstanding_amount: Money
    recent_count: int


@blueprint.get("/stats/")
@staff_required
@validate_response(InvoiceStats)
async def invoice_stats() -> InvoiceStats:
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
    return InvoiceStats(
        total=sum(counts.values()),
        total_invoices=sum(counts.values()),
        by_status=counts,
        amount_by_status=amounts,
        revenue=Revenue(
            total=as_number(amounts["paid"]),
            this_month=as_number(this_revenue),
            last_month=as_number(last_revenue),
            growth_percent=growth,
        ),
        outstanding=as_number(outstanding),
        paid_amount=amounts["paid"],
        outstanding_amount=outstanding,
        recent_count=recent,
    )


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
@validate_response(InvoiceOut)
async def get_invoice(invoice_id: int) -> InvoiceOut:
    """One invoice with its lines and payments (404 if it is not the caller's)."""
    return await InvoiceOut.of(await _invoice(invoice_id))


async def _transition(
    invoice_id: int, allowed_from: set[InvoiceStatus], to: InvoiceStatus, **extra: Any
) -> InvoiceOut:
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
    return await InvoiceOut.of(await Invoice.get(id=invoice.id))


@blueprint.post("/<int:invoice_id>/send/")
@staff_required
@validate_response(InvoiceOut)
async def send_invoice(invoice_id: int) -> InvoiceOut:
    """Staff: mark a draft invoice as sent."""
    return await _transition(invoice_id, {InvoiceStatus.DRAFT}, InvoiceStatus.SENT)


@blueprint.post("/<int:invoice_id>/mark_paid/")
@staff_required
@validate_response(InvoiceOut)
async def mark_paid(invoice_id: int) -> InvoiceOut:
    """Staff: mark an invoice paid (without recording a payment)."""
    invoice = await _invoice(invoice_id)
    async with in_transaction() as connection:
        if not await mark_invoice_paid(invoice.id, connection):
            raise APIError(
                409,
                f"status: a {invoice.status!s} invoice cannot become paid.",
                code="invalid_transition",
            )
    return await InvoiceOut.of(await Invoice.get(id=invoice.id))


@blueprint.post("/<int:invoice_id>/cancel/")
@staff_required
@validate_response(InvoiceOut)
async def cancel_invoice(invoice_id: int) -> InvoiceOut:
    """Staff: cancel an unpaid invoice."""
    return await _transition(
        invoice_id,
        {InvoiceStatus.DRAFT, InvoiceStatus.SENT, InvoiceStatus.OVERDUE},
        InvoiceStatus.CANCELLED,
    )


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
@validate_response(InvoiceOut, 201)
async def create_invoice(data: InvoiceIn) -> tuple[InvoiceOut, int]:
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
        due_date=data.due_date or issue + timedelta(days=settings.billing.invoice_due_days),
        tax_rate=settings.billing.tax_rate if data.tax_rate is None else data.tax_rate,
        discount_amount=data.discount_amount,
        notes=data.notes,
        terms=data.terms,
        payment_method=data.payment_method,
    )
    return await InvoiceOut.of(invoice), 201


@blueprint.patch("/<int:invoice_id>/")
@staff_required
@validate_request(InvoiceChange)
@validate_response(InvoiceOut)
async def update_invoice(invoice_id: int, data: InvoiceChange) -> InvoiceOut:
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
    return await InvoiceOut.of(await Invoice.get(id=invoice_id))


@blueprint.delete("/<int:invoice_id>/")
@staff_required
@validate_response(NoContent, 204)
async def delete_invoice(invoice_id: int) -> tuple[NoContent, int]:
    """Staff: delete a draft without payments (409 for any other invoice)."""
    await delete_draft(invoice_id)
    return NO_CONTENT, 204
