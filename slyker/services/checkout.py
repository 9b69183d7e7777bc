"""Checkout: a cart becomes an invoice, once.

Prices are re-read from today's catalog and the coupon is re-checked and counted, all under
the cart's lock (changes to the lines land before the checkout or find the cart closed). The
invoice is written by :func:`slyker.services.invoicing.create_invoice`, the one way invoices
are made. A repeated or concurrent checkout of the same cart returns the same invoice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from slyker.areas.billing_settings import PaynowSettings
from slyker.models.accounts import User
from slyker.models.billing import Cart, CartItem, CartStatus, Invoice
from slyker.money import ZERO
from slyker.pricing import Line, PricedLine, too_large
from slyker.services import paynow as paynow_service
from slyker.services.carts import (
    CartIdentity,
    CartLine,
    ItemChoice,
    active_catalog,
    caller_cart,
    claim_coupon,
    price_choice,
    read_cart,
)
from slyker.services.errors import (
    CartClosed,
    CartNotFound,
    InvalidInput,
    PaymentNotStarted,
    UpstreamError,
)
from slyker.services.invoicing import InvoiceLine, create_invoice
from slyker.services.paynow_protocol import PaynowNotConfigured

log = logging.getLogger(__name__)

PAYMENT_METHODS = ("bank", "paynow", "crypto")


@dataclass(frozen=True)
class CheckoutTerms:
    """The shop's settings a checkout needs (plain values, from the settings)."""

    tax_rate: Decimal
    invoice_due_days: int
    paynow: PaynowSettings
    paynow_http: httpx.AsyncClient  # the app's client to Paynow (slyker.outbound)


@dataclass(frozen=True)
class CheckoutResult:
    invoice: Invoice
    created: bool  # False: a repeated (or concurrent) checkout found the cart's invoice
    payment_id: int | None = None  # Paynow: the pending payment
    redirect_url: str | None = None  # Paynow: the page to send the customer to


async def repriced_lines(
    lines: list[CartLine], tax_rate: Decimal
) -> list[tuple[CartLine, PricedLine]]:
    """Every line priced from today's catalog (one query per product kind, not per line);
    a withdrawn product stops the checkout (400 on ``items``, naming the line), and so does
    a total past what an invoice holds."""
    choices = [ItemChoice.of(line) for line in lines]
    catalog = await active_catalog(choices)
    priced = []
    for line, choice in zip(lines, choices, strict=True):
        try:
            priced.append((line, price_choice(choice, catalog)))
        except InvalidInput as error:
            raise InvalidInput("items", f"{line.service_name}: {error.message}") from None
    # Prices may have risen, or a merged cart added lines, since each line was checked.
    problem = too_large(
        [Line(line.product_type, now.unit_price, line.quantity) for line, now in priced], tax_rate
    )
    if problem is not None:
        raise InvalidInput("items", f"too large: {problem}")
    return priced


async def _create_invoice(
    cart: Cart, user: User, billing_info: dict[str, Any], payment_method: str, terms: CheckoutTerms
) -> Invoice:
    """The invoice of the locked cart ``cart`` (inside the caller's transaction)."""
    view = await read_cart(id=cart.id)
    lines = view.lines if view is not None else []
    priced = await repriced_lines(lines, terms.tax_rate)
    if not priced:
        raise InvalidInput("items", "Your cart is empty.")
    for line, now in priced:  # the cart shows what the invoice charges
        if now.unit_price != line.unit_price:
            await CartItem.filter(id=line.id).update(unit_price=now.unit_price)
    plain = [Line(line.product_type, now.unit_price, line.quantity) for line, now in priced]
    reduction = ZERO
    coupon = view.coupon if view is not None else None
    if coupon is not None:
        reduction = await claim_coupon(coupon, plain, user.id)
    today = date.today()
    invoice = await create_invoice(
        user,
        [
            InvoiceLine(
                description=line.service_name,
                quantity=line.quantity,
                unit_price=now.unit_price,
                service_category=line.service_category,
                billing_cycle=line.billing_cycle,
                service_metadata=line.service_metadata,
                hosting_product_id=line.hosting_product_id,
                domain_product_id=line.domain_product_id,
                service_id=line.service_id,
                setup_fee=now.setup_fee,
            )
            for line, now in priced
        ],
        issue_date=today,
        due_date=today + timedelta(days=terms.invoice_due_days),
        tax_rate=terms.tax_rate,
        discount_amount=reduction,
        payment_method=payment_method,
        promotion=coupon.id if coupon is not None else None,
        cart_id=cart.id,
        billing_info=billing_info,
    )
    await Cart.filter(id=cart.id).update(status=CartStatus.COMPLETED, active_key=None)
    return invoice


async def _with_payment(
    invoice: Invoice, user: User, terms: CheckoutTerms, *, created: bool
) -> CheckoutResult:
    """The result, with the Paynow payment for ``paynow``. If Paynow cannot start it the
    invoice still exists: :class:`PaymentNotStarted` names it (checking out again, or
    ``POST /api/billing/invoices/{id}/paynow_payment/``, retries)."""
    if invoice.payment_method != "paynow":
        return CheckoutResult(invoice, created)
    try:
        attempt = await paynow_service.checkout_attempt(
            terms.paynow, terms.paynow_http, invoice, user, created=created
        )
    except UpstreamError as error:
        raise PaymentNotStarted(
            f"Invoice {invoice.invoice_number} was created, but the Paynow payment could not "
            f"be started: {error.message} Check out again or pay it from your invoices.",
            code=error.code,
            extra={
                "invoice_id": invoice.id,
                "invoice_number": invoice.invoice_number,
                "retry_url": f"/api/billing/invoices/{invoice.id}/paynow_payment/",
            },
        ) from error
    if attempt is None:
        return CheckoutResult(invoice, created)
    return CheckoutResult(invoice, created, attempt.payment_id, attempt.browser_url or None)


async def checkout(
    user: User,
    identity: CartIdentity,
    cart_id: int,
    *,
    billing_info: dict[str, Any],
    payment_method: str,
    terms: CheckoutTerms,
) -> CheckoutResult:
    """Turn the caller's cart into an invoice (``created``), or return the invoice a
    previous checkout of it made. Paynow not configured: 400 naming the missing setting."""
    cart = await caller_cart(identity, cart_id)
    existing = await Invoice.get_or_none(cart_id=cart.id)
    if existing is not None:
        return await _with_payment(existing, user, terms, created=False)
    missing = terms.paynow.missing if payment_method == "paynow" else None
    if missing is not None:
        raise PaynowNotConfigured(missing)
    if cart.user_id != user.id:
        raise CartNotFound("Cart not found.")
    invoice: Invoice | None = None
    try:
        async with in_transaction():
            locked = await Cart.filter(id=cart.id).select_for_update().get()
            if locked.status == CartStatus.ACTIVE:
                invoice = await _create_invoice(locked, user, billing_info, payment_method, terms)
    except IntegrityError:
        invoice = None  # a concurrent checkout of this cart won; its invoice is returned
    if invoice is None:
        winner = await Invoice.get_or_none(cart_id=cart.id)
        if winner is None:
            raise CartClosed("This cart is closed.")
        return await _with_payment(winner, user, terms, created=False)
    log.info("Checkout: cart %s -> %s for user %s", cart.id, invoice.invoice_number, user.id)
    return await _with_payment(invoice, user, terms, created=True)
