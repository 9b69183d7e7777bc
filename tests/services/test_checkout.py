"""Checkout and the one invoice-creation function, without HTTP: a cart becomes one invoice
at today's catalog prices with its coupon counted once; staff drafts are written by the same
function. Runs on SQLite, and on PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import httpx
import pytest
from quart import Quart
from tortoise.exceptions import IntegrityError

from slyker.areas.billing_settings import PaynowSettings
from slyker.models.accounts import Role, User
from slyker.models.billing import (
    Cart,
    CartItem,
    CartStatus,
    HostingProduct,
    Invoice,
    InvoiceItem,
    InvoiceStatus,
    Promotion,
)
from slyker.services import carts
from slyker.services.carts import CartIdentity, ItemChoice
from slyker.services.checkout import CheckoutTerms, checkout
from slyker.services.errors import CartNotFound, InvalidInput
from slyker.services.invoicing import DraftLine, InvoiceLine, create_draft, create_invoice
from slyker.services.paynow_protocol import PaynowNotConfigured
from tests.api import db, make_user, seed_catalog

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

NO_PAYNOW = PaynowSettings(None, None, None, None, "http://127.0.0.1:9", 1.0, None)
# Never used: Paynow is not configured here (a paynow checkout is refused before any call).
UNUSED_HTTP = httpx.AsyncClient()
TERMS = CheckoutTerms(
    tax_rate=Decimal("15"), invoice_due_days=14, paynow=NO_PAYNOW, paynow_http=UNUSED_HTTP
)
BILLING = {"full_name": "Tariro Moyo", "email": "tariro@example.com"}
HOSTING = ItemChoice(hosting_product=1, billing_cycle="annual")  # 29.99
DOMAIN = ItemChoice(
    domain_product=1, billing_cycle="2yr", service_metadata={"domain_name": "example.com"}
)  # 25.49


@pytest.fixture
async def shop(app: Quart) -> Iterator[Quart]:
    await seed_catalog(app)
    with db(app):
        yield app


@pytest.fixture
async def alice(shop: Quart) -> User:
    return await make_user(shop, "alice@example.com", Role.CLIENT)


async def cart_of(user: User, *choices: ItemChoice, coupon: str | None = None) -> int:
    identity = CartIdentity(user.id, None)
    cart = await carts.current_cart(identity)
    for choice in choices:
        await carts.add_item(identity, cart.id, choice, max_lines=50, tax_rate=TERMS.tax_rate)
    if coupon:
        await carts.apply_coupon(identity, cart.id, coupon)
    return cart.id


async def check_out(user: User, cart_id: int, payment_method: str = "bank") -> Invoice:
    result = await checkout(
        user,
        CartIdentity(user.id, None),
        cart_id,
        billing_info=BILLING,
        payment_method=payment_method,
        terms=TERMS,
    )
    assert result.created
    return result.invoice


async def test_a_cart_becomes_one_invoice_with_its_coupon_counted_once(
    shop: Quart, alice: User
) -> None:
    cart_id = await cart_of(alice, HOSTING, DOMAIN, coupon="WELCOME10")
    invoice = await check_out(alice, cart_id)
    assert invoice.invoice_number == f"INV-{invoice.id:06d}"
    stored = await Invoice.get(id=invoice.id)
    # 55.48 - 5.55 (10 %), + 15 % tax on 49.93
    assert (stored.subtotal, stored.discount_amount, stored.tax_amount, stored.total) == (
        Decimal("55.48"),
        Decimal("5.55"),
        Decimal("7.49"),
        Decimal("57.42"),
    )
    assert stored.status == InvoiceStatus.SENT and stored.billing_info == BILLING
    assert stored.due_date == stored.issue_date + timedelta(days=14)
    lines = await InvoiceItem.filter(invoice_id=invoice.id).order_by("id")
    assert [(line.description, line.unit_price, line.hosting_product_id) for line in lines] == [
        ("Starter Shared", Decimal("29.99"), 1),
        ("Domain registration: example.com", Decimal("25.49"), None),
    ]
    assert lines[1].domain_product_id == 1
    assert lines[1].service_metadata["domain_name"] == "example.com"
    assert (await Promotion.get(code="WELCOME10")).usage_count == 1
    closed = await Cart.get(id=cart_id)
    assert closed.status == CartStatus.COMPLETED and closed.active_key is None

    again = await checkout(
        alice,
        CartIdentity(alice.id, None),
        cart_id,
        billing_info=BILLING,
        payment_method="bank",
        terms=TERMS,
    )
    assert not again.created and again.invoice.id == invoice.id
    assert await Invoice.filter(user_id=alice.id).count() == 1
    assert (await Promotion.get(code="WELCOME10")).usage_count == 1


async def test_the_database_refuses_a_second_invoice_for_a_cart(shop: Quart, alice: User) -> None:
    """One invoice per cart holds even for a writer that skips checkout's lock."""
    cart_id = await cart_of(alice, HOSTING)
    invoice = await check_out(alice, cart_id)
    second = {
        name: getattr(invoice, name)
        for name in ("user_id", "cart_id", "issue_date", "due_date", "subtotal", "total")
    }
    with pytest.raises(IntegrityError):
        await Invoice.create(invoice_number="INV-SECOND", payment_method="bank", **second)


async def test_checkout_charges_todays_catalog_price(shop: Quart, alice: User) -> None:
    cart_id = await cart_of(alice, HOSTING)
    await HostingProduct.filter(id=1).update(annual_price=Decimal("31.00"))
    invoice = await check_out(alice, cart_id)
    [line] = await InvoiceItem.filter(invoice_id=invoice.id)
    assert line.unit_price == Decimal("31.00")
    [item] = await CartItem.filter(cart_id=cart_id)
    assert item.unit_price == Decimal("31.00")  # the cart shows what was charged


async def test_checkout_refusals(shop: Quart, alice: User) -> None:
    empty = await cart_of(alice)
    with pytest.raises(InvalidInput) as nothing:
        await check_out(alice, empty)
    assert nothing.value.message == "items: Your cart is empty."
    await carts.add_item(
        CartIdentity(alice.id, None), empty, HOSTING, max_lines=50, tax_rate=TERMS.tax_rate
    )
    with pytest.raises(PaynowNotConfigured):
        await check_out(alice, empty, "paynow")
    await HostingProduct.filter(id=1).update(is_active=False)
    with pytest.raises(InvalidInput) as withdrawn:
        await check_out(alice, empty)
    assert withdrawn.value.message == (
        "items: Starter Shared: hosting_product: unknown or unavailable product."
    )
    bob = await make_user(shop, "bob@example.com", Role.CLIENT)
    with pytest.raises(CartNotFound):
        await check_out(bob, empty)
    assert not await Invoice.exists()
    assert (await Cart.get(id=empty)).status == CartStatus.ACTIVE


async def test_a_used_coupon_is_refused_at_checkout(shop: Quart, alice: User) -> None:
    await check_out(alice, await cart_of(alice, HOSTING, coupon="WELCOME10"))
    second = await cart_of(alice, HOSTING)
    promotion = await Promotion.get(code="WELCOME10")
    await Cart.filter(id=second).update(coupon_id=promotion.id)  # e.g. from a merged cart
    with pytest.raises(InvalidInput) as refused:
        await check_out(alice, second)
    assert refused.value.field == "code"
    assert refused.value.message == (
        "code: WELCOME10: You have already used this coupon. Remove it to check out."
    )
    assert (await Promotion.get(id=promotion.id)).usage_count == 1
    assert (await Cart.get(id=second)).status == CartStatus.ACTIVE


async def test_the_usage_limit_is_kept_at_checkout(shop: Quart, alice: User) -> None:
    await Promotion.filter(code="WELCOME10").update(usage_limit=1, usage_count=1)
    cart_id = await cart_of(alice, HOSTING)
    await Cart.filter(id=cart_id).update(coupon_id=(await Promotion.get(code="WELCOME10")).id)
    with pytest.raises(InvalidInput) as refused:
        await check_out(alice, cart_id)
    assert "usage limit" in refused.value.message


# --- the one invoice-creation function ----------------------------------------------------


async def test_create_invoice_writes_totals_number_and_lines(shop: Quart, alice: User) -> None:
    today = date.today()
    invoice = await create_invoice(
        alice,
        [
            InvoiceLine("Design", 2, Decimal("100"), service_category="design"),
            InvoiceLine(
                "Hosting", 1, Decimal("22.00"), hosting_product_id=3, setup_fee=Decimal("10")
            ),
        ],
        issue_date=today,
        due_date=today + timedelta(days=7),
        tax_rate=Decimal("15"),
        discount_amount=Decimal("22"),
        payment_method="crypto",
    )
    stored = await Invoice.get(id=invoice.id)
    assert stored.invoice_number == f"INV-{invoice.id:06d}"
    assert (stored.subtotal, stored.tax_amount, stored.total) == (
        Decimal("222.00"),
        Decimal("30.00"),
        Decimal("230.00"),
    )
    lines = await InvoiceItem.filter(invoice_id=invoice.id).order_by("id")
    assert [(line.total, line.service_category, line.setup_fee) for line in lines] == [
        (Decimal("200.00"), "design", Decimal("0.00")),
        (Decimal("22.00"), "custom", Decimal("10.00")),
    ]
    assert lines[1].hosting_product_id == 3
    with pytest.raises(InvalidInput) as too_much:
        await create_invoice(
            alice,
            [InvoiceLine("x", 1, Decimal("5"))],
            issue_date=today,
            due_date=today,
            tax_rate=Decimal("0"),
            discount_amount=Decimal("6"),
        )
    assert too_much.value.field == "discount_amount"


async def test_staff_drafts_use_the_same_function(shop: Quart, alice: User) -> None:
    today = date.today()
    draft = await create_draft(
        alice,
        [DraftLine("Consulting", 3, Decimal("50"))],
        issue_date=today,
        due_date=today,
        tax_rate=Decimal("10"),
        discount_amount=Decimal("0"),
        notes="thanks",
    )
    stored = await Invoice.get(id=draft.id)
    assert stored.status == InvoiceStatus.DRAFT and stored.notes == "thanks"
    assert stored.invoice_number == f"INV-{draft.id:06d}" and stored.total == Decimal("165.00")
    [line] = await InvoiceItem.filter(invoice_id=draft.id)
    assert (line.service_category, line.billing_cycle) == ("custom", "one_time")
