"""The cart service without HTTP: signed tokens, the one-query read, lines and their limits,
prices and coupons, the merge at login. Runs on SQLite, and on PostgreSQL with
SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from quart import Quart
from tortoise.fields import DatetimeField
from tortoise.transactions import in_transaction

from slyker.models.accounts import Role, User
from slyker.models.billing import Cart, CartItem, CartStatus, DiscountType, Promotion
from slyker.services import carts
from slyker.services.carts import CartIdentity, CouponTerms, ItemChoice
from slyker.services.errors import CartClosed, CartFull, CartNotFound, InvalidInput, NotFound
from tests.api import db, make_user, seed_catalog
from tests.conftest import sqlite_file

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

SECRET = "service-test-secret-0123456789abcdef0123456789"
TAX = Decimal("15")
HOSTING = ItemChoice(hosting_product=1, billing_cycle="annual", service_metadata={"type": "x"})
DOMAIN = ItemChoice(
    domain_product=1,
    billing_cycle="2yr",
    service_metadata={"domain_name": "Example.com", "whois_privacy": True},
)
SSL = ItemChoice(service=1, quantity=2)


@pytest.fixture
async def shop(app: Quart) -> Iterator[Quart]:
    await seed_catalog(app)
    with db(app):
        yield app


@pytest.fixture
async def alice(shop: Quart) -> User:
    return await make_user(shop, "alice@example.com", Role.CLIENT)


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements sent while the block runs (Tortoise logs each one at DEBUG)."""
    sent: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sent.append(record.getMessage())

    logger = logging.getLogger("tortoise.db_client")
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield sent
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def anonymous_cart_with(*choices: ItemChoice) -> tuple[CartIdentity, int]:
    cart = await carts.current_cart(CartIdentity(None, None))
    identity = CartIdentity(None, cart.anonymous_token)
    for choice in choices:
        await carts.add_item(identity, cart.id, choice, max_lines=50, tax_rate=TAX)
    return identity, cart.id


# --- tokens --------------------------------------------------------------------------------


def test_only_a_token_slyker_signed_names_a_cart() -> None:
    token = carts.new_cart_token()
    signed = carts.signed_cart_token(token, SECRET)
    assert carts.verified_cart_token(signed, SECRET) == token
    _, mac = signed.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in (
        token,  # unsigned
        f"{token}.{flipped}",
        carts.signed_cart_token(token, "another-secret-0123456789abcdef0123456789"),
        f"{token}.",
        None,
        "",
    ):
        assert carts.verified_cart_token(forged, SECRET) is None, forged


def test_identity_takes_the_first_signed_token_and_keeps_it_as_presented() -> None:
    good = carts.signed_cart_token(carts.new_cart_token(), SECRET)
    identity = carts.identity_of(7, ["M" * 43, None, good], SECRET)
    assert identity.user_id == 7
    assert identity.anonymous_token == good.split(".")[0]
    assert identity.signed_token == good
    assert carts.identity_of(None, ["M" * 43], SECRET).is_anonymous_without_token


# --- reading and identity ----------------------------------------------------------------


async def test_an_anonymous_cart_is_found_again_by_its_token(shop: Quart) -> None:
    first = await carts.current_cart(CartIdentity(None, None))
    assert first.anonymous_token and first.user_id is None and first.lines == []
    again = await carts.current_cart(CartIdentity(None, first.anonymous_token))
    assert again.id == first.id
    assert (await carts.current_cart(CartIdentity(None, None))).id != first.id


async def test_the_cart_and_its_lines_are_read_in_one_statement(shop: Quart) -> None:
    identity, cart_id = await anonymous_cart_with(HOSTING, DOMAIN, SSL)
    with statements() as sent:
        view = await carts.current_cart(identity)
    assert len(sent) == 1, sent
    assert view.id == cart_id
    assert [line.service_name for line in view.lines] == [
        "Starter Shared",
        "Domain registration: example.com",
        "SSL Certificate (1 year)",
    ]
    assert [line.unit_price for line in view.lines] == [
        Decimal("29.99"),
        Decimal("35.47"),
        Decimal("39.00"),
    ]
    assert view.lines[1].service_metadata["domain_name"] == "example.com"
    assert isinstance(view.lines[0].created_at, datetime) and view.lines[0].created_at.tzinfo
    # The same values the models give.
    [item] = await CartItem.filter(id=view.lines[2].id)
    assert item.created_at == view.lines[2].created_at and item.quantity == 2


async def test_the_read_sees_writes_of_other_workers_and_of_its_transaction(shop: Quart) -> None:
    """On SQLite the read outside a transaction runs on a read-only connection of its own
    (slyker/sqlite.py): it must still see what another worker committed, and a read inside
    a transaction must see that transaction's own uncommitted writes."""
    identity, cart_id = await anonymous_cart_with(HOSTING, SSL)
    ssl_line = (await carts.current_cart(identity)).lines[1]
    assert ssl_line.quantity == 2
    database = sqlite_file(shop)
    if database is not None:  # another worker: a connection of its own to the same file
        worker = sqlite3.connect(database, isolation_level=None, timeout=5)
        try:
            worker.execute("UPDATE billing_cart_item SET quantity = 5 WHERE id = ?", (ssl_line.id,))
        finally:
            worker.close()
    else:
        await CartItem.filter(id=ssl_line.id).update(quantity=5)
    assert [line.quantity for line in (await carts.current_cart(identity)).lines] == [1, 5]
    async with in_transaction():
        await CartItem.filter(id=ssl_line.id).update(quantity=7)
        inside = await carts.read_cart(id=cart_id)
        assert inside is not None and [line.quantity for line in inside.lines] == [1, 7]
    assert [line.quantity for line in (await carts.current_cart(identity)).lines] == [1, 7]


async def test_the_read_gives_what_the_models_give(shop: Quart) -> None:
    """read_cart converts columns itself (timestamps with datetime.fromisoformat): every
    value, time zones included, is the one Tortoise's models hold, with and without a
    coupon."""
    identity, cart_id = await anonymous_cart_with(HOSTING, DOMAIN, SSL)
    for with_coupon in (False, True):
        if with_coupon:
            await carts.apply_coupon(identity, cart_id, "welcome10")
        view = await carts.read_cart(id=cart_id)
        assert view is not None
        cart = await Cart.get(id=cart_id)
        assert (view.status, view.user_id, view.anonymous_token) == (
            cart.status,
            cart.user_id,  # type: ignore[attr-defined]
            cart.anonymous_token,
        )
        assert repr((view.created_at, view.updated_at)) == repr((cart.created_at, cart.updated_at))
        items = await CartItem.filter(cart_id=cart_id).order_by("id")
        assert len(view.lines) == len(items) == 3
        for line, item in zip(view.lines, items, strict=True):
            assert repr((line.id, line.unit_price, line.service_metadata, line.created_at)) == repr(
                (item.id, item.unit_price, item.service_metadata, item.created_at)
            )
        if not with_coupon:
            assert view.coupon is None
            continue
        assert view.coupon is not None
        promotion = await Promotion.get(id=view.coupon.id)
        for name in CouponTerms.__dataclass_fields__:
            assert repr(getattr(view.coupon, name)) == repr(getattr(promotion, name)), name


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30 19:09:19.853000+00:00",
        "2026-11-30 19:09:19+00:00",
        "2026-11-30T19:09:19.5+02:00",
        "2026-11-30 19:09:19.853000Z",
        "2026-11-30 19:09:19",
        "2026-11-30",
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 1, 1),
        None,
    ],
)
def test_timestamps_convert_as_tortoise_converts_them(value: str | datetime | None) -> None:
    field = DatetimeField()
    assert repr(carts._converter(field, field.to_python_value)(value)) == repr(
        field.to_python_value(value)
    )


async def test_someone_elses_cart_is_not_found(shop: Quart, alice: User) -> None:
    _, cart_id = await anonymous_cart_with(HOSTING)
    stranger = CartIdentity(None, carts.new_cart_token())
    with pytest.raises(CartNotFound) as refused:
        await carts.caller_cart(stranger, cart_id)
    assert refused.value.message == "Cart not found."
    with pytest.raises(CartNotFound) as tokenless:
        await carts.caller_cart(CartIdentity(None, None), cart_id)
    assert "X-Cart-Token" in tokenless.value.message
    with pytest.raises(CartNotFound):
        await carts.caller_cart(CartIdentity(alice.id, None), cart_id)


async def test_login_merges_the_anonymous_cart_once(shop: Quart, alice: User) -> None:
    anonymous, cart_id = await anonymous_cart_with(HOSTING, DOMAIN)
    await carts.apply_coupon(anonymous, cart_id, "welcome10")
    signed_in = CartIdentity(alice.id, anonymous.anonymous_token)
    merged = await carts.current_cart(signed_in)
    assert merged.id != cart_id and merged.user_id == alice.id
    assert len(merged.lines) == 2 and merged.coupon is not None
    assert merged.coupon.code == "WELCOME10"
    assert len((await carts.current_cart(signed_in)).lines) == 2  # once, not twice
    closed = await Cart.get(id=cart_id)
    assert closed.status == CartStatus.MERGED and closed.merged_into_id == merged.id
    # The id the storefront kept now means the user's cart.
    assert (await carts.caller_cart(signed_in, cart_id)).id == merged.id


# --- lines -------------------------------------------------------------------------------


async def test_lines_are_priced_from_the_catalog_and_capped(shop: Quart) -> None:
    identity, cart_id = await anonymous_cart_with(HOSTING)
    with pytest.raises(CartFull) as full:
        await carts.add_item(identity, cart_id, SSL, max_lines=1, tax_rate=TAX)
    assert full.value.code == "cart_full" and "at most 1 lines" in full.value.message
    with pytest.raises(InvalidInput) as unknown_key:
        await carts.add_item(
            identity,
            cart_id,
            ItemChoice(hosting_product=1, billing_cycle="annual", service_metadata={"p": 0}),
            max_lines=50,
            tax_rate=TAX,
        )
    assert unknown_key.value.field == "service_metadata"
    with pytest.raises(InvalidInput) as two_products:
        await carts.add_item(
            identity, cart_id, ItemChoice(hosting_product=1, service=1), max_lines=50, tax_rate=TAX
        )
    assert two_products.value.field == "hosting_product"
    huge = ItemChoice(hosting_product=1, billing_cycle="annual", quantity=100)
    with pytest.raises(InvalidInput) as too_large:
        await carts.add_item(identity, cart_id, huge, max_lines=50, tax_rate=Decimal("1e9"))
    assert too_large.value.field == "quantity" and "too large" in too_large.value.message
    assert len((await carts.caller_cart(identity, cart_id)).lines) == 1


async def test_update_reprices_and_remove_refuses_a_missing_line(shop: Quart) -> None:
    identity, cart_id = await anonymous_cart_with(HOSTING)
    [line] = (await carts.caller_cart(identity, cart_id)).lines
    changed = await carts.update_item(
        identity, cart_id, line.id, quantity=3, billing_cycle="monthly", tax_rate=TAX
    )
    [updated] = changed.lines
    assert (updated.quantity, updated.billing_cycle, updated.unit_price) == (
        3,
        "monthly",
        Decimal("2.99"),
    )
    assert changed.price().subtotal == Decimal("8.97")
    assert (await carts.remove_item(identity, cart_id, line.id)).lines == []
    with pytest.raises(NotFound) as missing:
        await carts.remove_item(identity, cart_id, line.id)
    assert missing.value.errors == {"item_id": ["not found"]}


async def test_a_closed_cart_takes_no_changes(shop: Quart) -> None:
    identity, cart_id = await anonymous_cart_with(HOSTING)
    await Cart.filter(id=cart_id).update(status=CartStatus.COMPLETED, active_key=None)
    for change in (
        carts.add_item(identity, cart_id, SSL, max_lines=50, tax_rate=TAX),
        carts.clear_cart(identity, cart_id),
        carts.apply_coupon(identity, cart_id, "WELCOME10"),
        carts.remove_coupon(identity, cart_id),
    ):
        with pytest.raises(CartClosed):
            await change
    assert len((await carts.caller_cart(identity, cart_id)).lines) == 1


# --- prices and coupons --------------------------------------------------------------------


def coupon(**terms: Any) -> CouponTerms:
    values: dict[str, Any] = {
        "id": 1,
        "code": "TEN",
        "discount_type": DiscountType.PERCENTAGE,
        "discount_value": Decimal("10"),
        "start_date": None,
        "end_date": None,
        "is_active": True,
        "usage_limit": None,
        "usage_count": 0,
        "minimum_order_amount": Decimal("10"),
        "product_types": [],
        "max_uses_per_customer": 1,
        **terms,
    }
    return CouponTerms(**values)


def cart_line(product_type: str, unit_price: str, quantity: int = 1) -> carts.CartLine:
    return carts.CartLine(
        id=1,
        hosting_product_id=None,
        domain_product_id=None,
        service_id=None,
        service_name="x",
        service_category="x",
        product_type=product_type,
        service_metadata={},
        quantity=quantity,
        billing_cycle="annual",
        unit_price=Decimal(unit_price),
        created_at=datetime.now(UTC),
    )


def test_a_cart_is_priced_without_the_database() -> None:
    lines = [cart_line("shared", "29.99"), cart_line("domain", "8.47")]
    assert carts.price_cart(lines, None) == carts.CartPrice(
        Decimal("38.46"), Decimal(0), None, None
    )
    applied = carts.price_cart(lines, coupon())
    assert applied.discount == Decimal("3.85") and applied.final_total == Decimal("34.61")
    assert applied.description == "10% off (TEN)" and applied.applied_coupon == "TEN"
    only_domains = carts.price_cart(lines, coupon(product_types=["domain"], minimum_order_amount=0))
    assert only_domains.discount == Decimal("0.85")
    under_minimum = carts.price_cart(lines[1:], coupon())
    assert under_minimum.discount == 0 and under_minimum.applied_coupon == "TEN"
    assert under_minimum.description == "TEN: This coupon needs an order of at least 10.00."
    expired = coupon(end_date=datetime.now(UTC) - timedelta(days=1))
    assert carts.price_cart(lines, expired).description == "TEN: This coupon has expired."


async def test_coupons_are_applied_only_when_they_apply(shop: Quart) -> None:
    identity, cart_id = await anonymous_cart_with(
        ItemChoice(hosting_product=1, billing_cycle="monthly")
    )
    with pytest.raises(InvalidInput) as small:
        await carts.apply_coupon(identity, cart_id, "welcome10")
    assert small.value.field == "code" and "at least 10.00" in small.value.message
    with pytest.raises(InvalidInput) as unknown:
        await carts.apply_coupon(identity, cart_id, "NOPE")
    assert unknown.value.message == "code: Invalid coupon code."
    await carts.add_item(identity, cart_id, DOMAIN, max_lines=50, tax_rate=TAX)
    applied = await carts.apply_coupon(identity, cart_id, " welcome10 ")
    assert applied.coupon is not None and applied.price().discount == Decimal("3.85")
    assert (await carts.remove_coupon(identity, cart_id)).coupon is None


async def test_the_customer_limit_counts_their_invoices(shop: Quart, alice: User) -> None:
    from slyker.services.invoicing import InvoiceLine, create_invoice

    promotion = await Promotion.get(code="WELCOME10")
    assert await carts.coupon_refusal(promotion, [], alice.id) is None
    today = datetime.now(UTC).date()
    await create_invoice(
        alice,
        [InvoiceLine("x", 1, Decimal("20"))],
        issue_date=today,
        due_date=today,
        tax_rate=TAX,
        promotion=promotion,
    )
    assert await carts.coupon_refusal(promotion, [], alice.id) == (
        "You have already used this coupon."
    )
    assert await carts.coupon_refusal(promotion, [], None) is None  # anonymous: not yet known
    await Promotion.filter(id=promotion.id).update(max_uses_per_customer=2)
    assert await carts.customer_problem(await Promotion.get(id=promotion.id), alice.id) is None
