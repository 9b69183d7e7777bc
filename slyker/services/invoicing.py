"""Invoices: the one way an invoice is created (:func:`create_invoice`, used by checkout and
by staff), and the drafts staff write by hand: created as drafts, editable and deletable only
while they are drafts without payments. Totals are always computed here, never taken from
the client."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from tortoise.transactions import in_transaction

from slyker.models.accounts import ClientProfile, User
from slyker.models.billing import Invoice, InvoiceItem, InvoiceStatus, Payment, Promotion
from slyker.money import ZERO, cents
from slyker.services.errors import Conflict, InvalidInput, NotFound

# Money columns hold 12 digits with 2 decimals.
MONEY_LIMIT = Decimal("10000000000")
STAFF_LINE_CATEGORY = "custom"


@dataclass(frozen=True)
class InvoiceLine:
    """One line of an invoice. Staff lines are free text (``custom``, ``one_time``); a
    checkout's lines also name what was sold, for provisioning once the invoice is paid."""

    description: str
    quantity: int
    unit_price: Decimal
    service_category: str = STAFF_LINE_CATEGORY
    billing_cycle: str = "one_time"
    service_metadata: dict[str, Any] = field(default_factory=dict)
    hosting_product_id: int | None = None
    domain_product_id: int | None = None
    service_id: int | None = None
    setup_fee: Decimal = ZERO  # the one-off part of unit_price

    @property
    def total(self) -> Decimal:
        return cents(self.unit_price * self.quantity)


# What the staff routes build: a free-text line.
DraftLine = InvoiceLine


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    discount_amount: Decimal
    tax_rate: Decimal
    tax_amount: Decimal
    total: Decimal


def compute_totals(
    lines: Sequence[DraftLine], tax_rate: Decimal, discount_amount: Decimal
) -> Totals:
    """Subtotal of the lines, minus the discount, plus tax on the discounted amount."""
    subtotal = cents(sum((line.total for line in lines), ZERO))
    discount = cents(discount_amount)
    if discount > subtotal:
        raise InvalidInput("discount_amount", "cannot exceed the subtotal.")
    taxable = subtotal - discount
    tax = cents(taxable * tax_rate / 100)
    total = cents(taxable + tax)
    if max(subtotal, total) >= MONEY_LIMIT:
        raise InvalidInput("items", "the invoice total is too large.")
    return Totals(subtotal, discount, cents(tax_rate), tax, total)


async def invoice_owner(*, client: int | None, user: int | None) -> User:
    """The user a staff invoice is for: by client profile id (what the storefront sends)
    or by user id; exactly one."""
    if (client is None) == (user is None):
        raise InvalidInput("client", "send exactly one of client (profile id) or user.")
    if client is not None:
        profile = await ClientProfile.get_or_none(id=client)
        owner = await User.get_or_none(id=profile.user_id) if profile else None
        if owner is None:
            raise InvalidInput("client", "no such client.")
        return owner
    owner = await User.get_or_none(id=user)
    if owner is None:
        raise InvalidInput("user", "no such user.")
    return owner


def _check_dates(issue_date: date, due_date: date) -> None:
    if due_date < issue_date:
        raise InvalidInput("due_date", "cannot be before issue_date.")


async def _write_lines(invoice: Invoice, lines: Sequence[InvoiceLine]) -> None:
    """All lines in one statement (not one round trip per line)."""
    await InvoiceItem.bulk_create(
        [
            InvoiceItem(
                invoice_id=invoice.id,
                description=line.description,
                service_category=line.service_category,
                billing_cycle=line.billing_cycle,
                quantity=line.quantity,
                unit_price=cents(line.unit_price),
                total=line.total,
                service_metadata=line.service_metadata,
                hosting_product_id=line.hosting_product_id,
                domain_product_id=line.domain_product_id,
                service_id=line.service_id,
                setup_fee=cents(line.setup_fee),
            )
            for line in lines
        ]
    )


async def create_invoice(
    owner: User | int,
    lines: Sequence[InvoiceLine],
    *,
    issue_date: date,
    due_date: date,
    tax_rate: Decimal,
    discount_amount: Decimal = ZERO,
    status: InvoiceStatus = InvoiceStatus.SENT,
    payment_method: str = "bank",
    promotion: Promotion | int | None = None,
    cart_id: int | None = None,
    billing_info: dict[str, Any] | None = None,
    notes: str = "",
    terms: str = "",
) -> Invoice:
    """The one way an invoice is written: totals computed from ``lines`` (tax on the
    discounted amount), numbered ``INV-000123`` from its id, its lines in one statement.

    Runs in the caller's transaction if there is one (checkout holds the cart's lock, which
    is what keeps one invoice per cart), else in its own.
    """
    if not lines:
        raise InvalidInput("items", "an invoice needs at least one line.")
    _check_dates(issue_date, due_date)
    totals = compute_totals(lines, tax_rate, discount_amount)
    owner_id = owner if isinstance(owner, int) else owner.id
    promotion_id = promotion if promotion is None or isinstance(promotion, int) else promotion.id
    async with in_transaction():
        invoice = await Invoice.create(
            invoice_number=f"PENDING-{secrets.token_hex(8)}",
            user_id=owner_id,
            cart_id=cart_id,
            status=status,
            issue_date=issue_date,
            due_date=due_date,
            subtotal=totals.subtotal,
            tax_rate=totals.tax_rate,
            tax_amount=totals.tax_amount,
            discount_amount=totals.discount_amount,
            total=totals.total,
            promotion_id=promotion_id,
            billing_info=billing_info or {},
            payment_method=payment_method,
            notes=notes,
            terms=terms,
        )
        invoice.invoice_number = f"INV-{invoice.id:06d}"
        await Invoice.filter(id=invoice.id).update(invoice_number=invoice.invoice_number)
        await _write_lines(invoice, lines)
    return invoice


async def create_draft(
    owner: User,
    lines: Sequence[DraftLine],
    *,
    issue_date: date,
    due_date: date,
    tax_rate: Decimal,
    discount_amount: Decimal,
    notes: str = "",
    terms: str = "",
    payment_method: str = "bank",
) -> Invoice:
    """A draft invoice with ``lines`` (numbered ``INV-000123`` like checkout's)."""
    return await create_invoice(
        owner,
        lines,
        issue_date=issue_date,
        due_date=due_date,
        tax_rate=tax_rate,
        discount_amount=discount_amount,
        status=InvoiceStatus.DRAFT,
        payment_method=payment_method,
        notes=notes,
        terms=terms,
    )


async def _locked_draft(invoice_id: int) -> Invoice:
    """The invoice, locked for this transaction, if it is a draft without payments."""
    invoice = await Invoice.filter(id=invoice_id).select_for_update().get_or_none()
    if invoice is None:
        raise NotFound("Invoice not found.")
    if invoice.status != InvoiceStatus.DRAFT:
        raise Conflict(
            f"status: only draft invoices can be changed; this one is {invoice.status!s}.",
            code="not_draft",
        )
    if await Payment.filter(invoice_id=invoice_id).exists():
        raise Conflict(
            "payments: this draft has payments recorded; its amounts are fixed.",
            code="has_payments",
        )
    return invoice


async def update_draft(invoice_id: int, changes: dict[str, Any]) -> Invoice:
    """Apply ``changes`` (issue_date, due_date, tax_rate, discount_amount, notes, terms,
    payment_method, items: a list of DraftLine replacing every line) to a draft and
    recompute its totals; 409 unless it is a draft without payments."""
    async with in_transaction():
        invoice = await _locked_draft(invoice_id)
        new_lines: list[DraftLine] | None = changes.pop("items", None)
        if new_lines is not None and not new_lines:
            raise InvalidInput("items", "an invoice needs at least one line.")
        for name, value in changes.items():
            setattr(invoice, name, value)
        _check_dates(invoice.issue_date, invoice.due_date)
        if new_lines is None:
            stored = await InvoiceItem.filter(invoice_id=invoice.id)
            lines = [DraftLine(i.description, i.quantity, i.unit_price) for i in stored]
        else:
            lines = new_lines
        totals = compute_totals(lines, Decimal(invoice.tax_rate), invoice.discount_amount)
        invoice.subtotal = totals.subtotal
        invoice.discount_amount = totals.discount_amount
        invoice.tax_rate = totals.tax_rate
        invoice.tax_amount = totals.tax_amount
        invoice.total = totals.total
        await invoice.save()
        if new_lines is not None:
            await InvoiceItem.filter(invoice_id=invoice.id).delete()
            await _write_lines(invoice, new_lines)
    return invoice


async def delete_draft(invoice_id: int) -> None:
    """Delete a draft without payments (409 otherwise)."""
    async with in_transaction():
        invoice = await _locked_draft(invoice_id)
        await InvoiceItem.filter(invoice_id=invoice.id).delete()
        await Invoice.filter(id=invoice.id).delete()
