"""Carts: one active cart per identity (a user, or an anonymous visitor's cart token), its
lines priced from the catalog, limits, the merge at login, and coupons.

An anonymous cart is identified by a token slyker issues: ``<random>.<HMAC-SHA256 of it under
SECRET_KEY>``. Only a token slyker signed names a cart (a client cannot choose, fixate or
guess one); a token without a valid MAC is treated as absent. The database keeps only the
random part. Carts of tokens issued before signing, and every anonymous cart after a change of
SECRET_KEY, simply start over empty.

Plain arguments in, :class:`CartView` (rows, no models) or domain errors out; the HTTP layer
(``slyker.blueprints.billing.carts``) maps them to responses.

The cart read (:func:`read_cart`: one indexed join) is, on SQLite and outside a transaction,
run on the event loop on a read-only connection instead of through aiosqlite's thread (the
hop and its wait for the GIL were most of ``current/``'s time under load, issue 12); why that
is safe, and its fallback to the normal path, are in :mod:`slyker.sqlite`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import FunctionType
from typing import Any

from tortoise import connections
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.fields import DatetimeField
from tortoise.timezone import get_default_timezone, get_use_tz
from tortoise.transactions import in_transaction

from slyker.models.accounts import User
from slyker.models.billing import (
    Cart,
    CartItem,
    CartStatus,
    DiscountType,
    DomainProduct,
    HostingProduct,
    Invoice,
    InvoiceStatus,
    Promotion,
    Service,
)
from slyker.money import ZERO, cents
from slyker.pricing import (
    Line,
    PricedLine,
    PromotionTerms,
    discount,
    discount_description,
    price_domain,
    price_hosting,
    price_service,
    promotion_problem,
    subtotal,
    too_large,
)
from slyker.services.errors import CartClosed, CartFull, CartNotFound, InvalidInput, NotFound
from slyker.sqlite import file_client

log = logging.getLogger(__name__)

# <random>.<mac>: the random part is what the database stores (Cart.anonymous_token).
_SIGNED_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]{32,64})\.([A-Za-z0-9_-]{43})")
_TOKEN_MAC_PREFIX = b"slyker.cart-token:"


# --- identity ----------------------------------------------------------------------------


def _token_mac(secret_key: str, token: str) -> str:
    digest = hmac.new(secret_key.encode(), _TOKEN_MAC_PREFIX + token.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def signed_cart_token(token: str, secret_key: str) -> str:
    """What the client holds for the anonymous cart token ``token``."""
    return f"{token}.{_token_mac(secret_key, token)}"


def verified_cart_token(value: str | None, secret_key: str) -> str | None:
    """The cart token in ``value`` if slyker signed it, else None (constant-time check)."""
    match = _SIGNED_TOKEN_RE.fullmatch(value or "")
    if match is None:
        return None
    token, mac = match.groups()
    return token if hmac.compare_digest(mac, _token_mac(secret_key, token)) else None


def new_cart_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CartIdentity:
    """Who is asking: a signed-in user, and/or the verified anonymous cart token (and the
    signed value it came in, which a reply can send back without signing it again)."""

    user_id: int | None
    anonymous_token: str | None
    signed_token: str | None = None

    @property
    def is_anonymous_without_token(self) -> bool:
        return self.user_id is None and self.anonymous_token is None


def identity_of(
    user_id: int | None, presented_tokens: Iterable[str | None], secret_key: str
) -> CartIdentity:
    """The identity of a caller presenting ``presented_tokens`` (header, cookie; the first
    that slyker signed wins)."""
    for presented in presented_tokens:
        token = verified_cart_token(presented, secret_key)
        if token is not None:
            return CartIdentity(user_id, token, presented)
    return CartIdentity(user_id, None)


# --- reading: one query for the cart, its coupon and its lines ----------------------------


@dataclass(frozen=True)
class CouponTerms:
    """The promotion applied to a cart, as read along with it (satisfies
    :class:`slyker.pricing.PromotionTerms`)."""

    id: int
    code: str
    discount_type: DiscountType
    discount_value: Decimal
    start_date: datetime | None
    end_date: datetime | None
    is_active: bool
    usage_limit: int | None
    usage_count: int
    minimum_order_amount: Decimal
    product_types: list[str]
    max_uses_per_customer: int | None


@dataclass(frozen=True)
class CartLine:
    id: int
    hosting_product_id: int | None
    domain_product_id: int | None
    service_id: int | None
    service_name: str
    service_category: str
    product_type: str
    service_metadata: dict[str, Any]
    quantity: int
    billing_cycle: str
    unit_price: Decimal
    created_at: datetime

    @property
    def line(self) -> Line:
        return Line(self.product_type, self.unit_price, self.quantity)

    @property
    def total(self) -> Decimal:
        return cents(self.unit_price * self.quantity)


@dataclass(frozen=True)
class CartPrice:
    """``subtotal``: the lines before any discount; ``discount``: what the applied coupon
    takes off now (zero if it does not apply, and then ``description`` says why)."""

    subtotal: Decimal
    discount: Decimal
    applied_coupon: str | None
    description: str | None

    @property
    def final_total(self) -> Decimal:
        return self.subtotal - self.discount


@dataclass
class CartView:
    """A cart with its lines and coupon terms, read in one query."""

    id: int
    status: CartStatus
    user_id: int | None
    anonymous_token: str | None
    coupon: CouponTerms | None
    created_at: datetime
    updated_at: datetime
    lines: list[CartLine] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status == CartStatus.ACTIVE

    def price(self) -> CartPrice:
        return price_cart(self.lines, self.coupon)


_CART_COLUMNS = (
    "id",
    "status",
    "user_id",
    "anonymous_token",
    "coupon_id",
    "created_at",
    "updated_at",
)
_COUPON_COLUMNS = tuple(
    name for name in CouponTerms.__dataclass_fields__ if name != "id"
)  # coupon__<name>
_LINE_COLUMNS = tuple(CartLine.__dataclass_fields__)  # items__<name>
# The row keys of a coupon's and a line's fields, in their dataclasses' order.
_COUPON_KEYS = tuple(f"coupon__{name}" for name in _COUPON_COLUMNS)
_LINE_KEYS = tuple(f"items__{name}" for name in _LINE_COLUMNS)
_READ_COLUMNS = (*_CART_COLUMNS, *_COUPON_KEYS, *_LINE_KEYS)


def _view_of(rows: Sequence[dict[str, Any]]) -> CartView:
    """Rows of one cart (one per line, or one with null line columns) as a CartView; the
    cart's and coupon's columns are read from the first row."""
    first = rows[0]
    coupon = None
    if first["coupon_id"] is not None:
        coupon = CouponTerms(first["coupon_id"], *[first[key] for key in _COUPON_KEYS])
    lines = [
        CartLine(*[row[key] for key in _LINE_KEYS]) for row in rows if row["items__id"] is not None
    ]
    return CartView(
        id=first["id"],
        status=first["status"],
        user_id=first["user_id"],
        anonymous_token=first["anonymous_token"],
        coupon=coupon,
        created_at=first["created_at"],
        updated_at=first["updated_at"],
        lines=lines,
    )


Converter = Callable[[Any], Any]


def _timestamp_converter(tortoise_convert: Converter) -> Converter:
    """``DatetimeField.to_python_value`` with time zones on, without iso8601's parser: SQLite
    returns timestamps as ISO 8601 text with an offset, which ``datetime.fromisoformat``
    parses several times faster; converted to the default zone as Tortoise does, so the
    result is the same datetime (same instant, fields and zone). Anything else (naive values,
    text fromisoformat refuses) goes to Tortoise's own converter."""
    zone = get_default_timezone()

    def convert(value: Any) -> Any:
        parsed = value
        if value.__class__ is str:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return tortoise_convert(value)
        if parsed.__class__ is datetime and parsed.tzinfo is not None:
            return parsed.astimezone(zone)
        return tortoise_convert(value)

    return convert


def _converter(field: Any, tortoise_convert: Converter) -> Converter:
    if isinstance(field, DatetimeField) and get_use_tz():
        return _timestamp_converter(tortoise_convert)
    return tortoise_convert


Converters = list[tuple[str, Converter]]
# SQL; converters of the cart's and coupon's columns, of the cart's alone, of a line's.
_Prepared = tuple[str, Converters, Converters, Converters]


class _PreparedRead:
    """The cart read (cart, coupon, lines: one LEFT JOIN) by one column.

    Tortoise builds this 30-column join in more CPU time than the database takes to run it,
    so its SQL and column converters are built once per database dialect and reused; each
    read is then one round trip, and values are converted as ``.values()`` would, the
    cart's and coupon's columns once (not once per line)."""

    def __init__(self, column: str) -> None:
        self.column = column
        self._prepared: dict[str, _Prepared] = {}

    def _prepare(self) -> _Prepared:
        query = Cart.filter(**{self.column: 0}).order_by("items__id").values(*_READ_COLUMNS)
        converters = [
            (alias, _converter(getattr(convert, "__self__", None), convert))
            for alias in _READ_COLUMNS
            # Identity converters (columns the driver already types) are plain functions.
            if not isinstance(convert := query.resolve_to_python_value(Cart, alias), FunctionType)
        ]
        per_cart = [(a, c) for a, c in converters if not a.startswith("items__")]
        no_coupon = [(a, c) for a, c in per_cart if not a.startswith("coupon__")]
        per_line = [(a, c) for a, c in converters if a.startswith("items__")]
        return query.sql(), per_cart, no_coupon, per_line

    async def __call__(self, value: int | str) -> list[dict[str, Any]]:
        connection = connections.get("default")
        dialect = connection.capabilities.dialect
        prepared = self._prepared.get(dialect)
        if prepared is None:
            prepared = self._prepared[dialect] = self._prepare()
        sql, per_cart, no_coupon, per_line = prepared
        rows = None
        # SQLite outside a transaction: read on the event loop, no thread hop (slyker.sqlite).
        if (client := file_client(connection)) is not None:
            rows = client.read_now(sql, (value,))
        if rows is None:
            rows = await connection.execute_query_dict(sql, [value])
        if rows:
            first = rows[0]
            # Without a coupon its columns are null and unread (_view_of): not converted.
            for alias, convert in per_cart if first["coupon_id"] is not None else no_coupon:
                first[alias] = convert(first[alias])
            for row in rows:
                for alias, convert in per_line:
                    row[alias] = convert(row[alias])
        return rows


_READ_BY_ID = _PreparedRead("id")
_READ_BY_ACTIVE_KEY = _PreparedRead("active_key")


async def read_cart(*, id: int | None = None, active_key: str | None = None) -> CartView | None:
    """The cart with this id (or active key), its coupon and lines: one query (a join),
    rows, no model instances."""
    if id is not None:
        rows = await _READ_BY_ID(id)
    else:
        assert active_key is not None
        rows = await _READ_BY_ACTIVE_KEY(active_key)
    return _view_of(rows) if rows else None


def _new_view(cart: Cart) -> CartView:
    return CartView(
        id=cart.id,
        status=cart.status,
        user_id=cart.user_id,  # type: ignore[attr-defined]
        anonymous_token=cart.anonymous_token,
        coupon=None,
        created_at=cart.created_at,
        updated_at=cart.updated_at,
    )


def price_cart(lines: Sequence[CartLine], coupon: PromotionTerms | None) -> CartPrice:
    """The cart's prices: no round trip (lines and coupon terms are already read)."""
    plain = [line.line for line in lines]
    amount = subtotal(plain)
    if coupon is None:
        return CartPrice(amount, ZERO, None, None)
    problem = promotion_problem(coupon, plain)
    if problem is not None:
        return CartPrice(amount, ZERO, coupon.code, f"{coupon.code}: {problem}")
    return CartPrice(amount, discount(coupon, plain), coupon.code, discount_description(coupon))


# --- which cart: the caller's --------------------------------------------------------------


async def active_cart(key: str, **fields: Any) -> CartView:
    """The active cart for ``key``, created if needed; race-safe: ``active_key`` is unique,
    so of two concurrent creations one fails and then reads the winner's cart."""
    view = await read_cart(active_key=key)
    if view is not None:
        return view
    try:
        return _new_view(await Cart.create(active_key=key, **fields))
    except IntegrityError:
        winner = await read_cart(active_key=key)
        if winner is None:  # closed meanwhile: a fresh one
            return _new_view(await Cart.create(active_key=key, **fields))
        return winner


async def user_cart(user_id: int) -> CartView:
    return await active_cart(f"user:{user_id}", user_id=user_id)


async def merge_anonymous_cart(token: str, into_id: int) -> bool:
    """Move an anonymous cart's lines (and coupon, if the user's cart has none) into the
    user's cart ``into_id``, once, and close it. True if anything moved.

    Every line moves, even when the result holds more than ``CART_MAX_LINES``: a shopper
    who signs in expects what they picked in both carts, and every cart route of a signed-in
    caller merges first, so refusing here would refuse all of them. The reply tells the
    client (``over_limit``), and ``add_item`` refuses (``cart_full``) until lines are removed.
    Each merge adds at most one anonymous cart's worth of lines (itself capped), and anonymous
    carts and their writes are rate limited per address."""
    anonymous = await Cart.get_or_none(active_key=f"anon:{token}")
    if anonymous is None or not await CartItem.filter(cart_id=anonymous.id).exists():
        return False
    async with in_transaction():
        # The user's cart is locked as checkout locks it: moved lines land on its invoice
        # or stay in the anonymous cart, never in a cart checked out meanwhile.
        target = await Cart.filter(id=into_id).select_for_update().get()
        if target.status != CartStatus.ACTIVE:
            return False
        closed = await Cart.filter(id=anonymous.id, status=CartStatus.ACTIVE).update(
            status=CartStatus.MERGED, active_key=None, merged_into_id=into_id
        )
        if not closed:  # a concurrent request merged it already
            return False
        moved = await CartItem.filter(cart_id=anonymous.id).update(cart_id=into_id)
        if target.coupon_id is None and anonymous.coupon_id is not None:  # type: ignore[attr-defined]
            await Cart.filter(id=into_id).update(coupon_id=anonymous.coupon_id)  # type: ignore[attr-defined]
    log.info("Merged anonymous cart %s (%s items) into cart %s", anonymous.id, moved, into_id)
    return True


async def current_cart(identity: CartIdentity) -> CartView:
    """The caller's active cart, created if needed: the user's own when signed in (with any
    anonymous cart of this browser merged into it), else the anonymous cart of the token,
    else a new anonymous cart with a new token (``anonymous_token`` of the result)."""
    if identity.user_id is not None:
        cart = await user_cart(identity.user_id)
        if identity.anonymous_token and await merge_anonymous_cart(
            identity.anonymous_token, cart.id
        ):
            return await _must_read(cart.id)
        return cart
    token = identity.anonymous_token
    if token is None:
        token = new_cart_token()
        log.info("New anonymous cart token issued")
    return await active_cart(f"anon:{token}", anonymous_token=token)


async def _must_read(cart_id: int) -> CartView:
    view = await read_cart(id=cart_id)
    if view is None:  # deleted meanwhile (a user deleted with their carts)
        raise CartNotFound("Cart not found.")
    return view


def _not_found(identity: CartIdentity) -> CartNotFound:
    if identity.is_anonymous_without_token:
        return CartNotFound(
            "Cart not found. This request carried no cart cookie and no X-Cart-Token header: "
            "if third-party cookies are blocked, send back the X-Cart-Token from "
            "GET /api/billing/carts/current/."
        )
    return CartNotFound("Cart not found.")


async def caller_cart(identity: CartIdentity, cart_id: int) -> CartView:
    """The cart ``cart_id`` if it is the caller's, else :class:`CartNotFound` (never reveal
    that it exists). A signed-in caller addressing the anonymous cart that was merged into
    theirs (the storefront keeps the cart id it had before login) gets their own cart."""
    own: CartView | None = None
    if identity.user_id is not None:
        own = await current_cart(identity)
        if cart_id == own.id:
            return own
    cart = await read_cart(id=cart_id)
    if cart is not None:
        if identity.user_id is not None and cart.user_id == identity.user_id:
            return cart
        if identity.anonymous_token and cart.anonymous_token == identity.anonymous_token:
            if cart.status == CartStatus.MERGED and own is not None:
                return own
            if cart.user_id is None:
                return cart
    raise _not_found(identity)


async def open_cart(identity: CartIdentity, cart_id: int) -> CartView:
    cart = await caller_cart(identity, cart_id)
    if not cart.is_open:
        raise CartClosed()
    return cart


@asynccontextmanager
async def locked_open_cart(identity: CartIdentity, cart_id: int) -> AsyncIterator[Cart]:
    """The caller's open cart, locked until the block ends.

    Checkout locks the same row, so a change to the lines either lands before it (and on the
    invoice) or finds the cart closed (409): never in a closed cart on no invoice, as 57 of
    66 acknowledged items once did. PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite: the
    transaction holds the database's write lock from its start (``slyker.sqlite``) and the
    status is read inside it.
    """
    cart = await caller_cart(identity, cart_id)
    async with in_transaction():
        locked = await Cart.filter(id=cart.id).select_for_update().get()
        if locked.status != CartStatus.ACTIVE:
            raise CartClosed()
        yield locked


# --- lines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemChoice:
    """What a line is of (exactly one product id) and how: validated input, plain values."""

    hosting_product: int | None = None
    domain_product: int | None = None
    service: int | None = None
    service_metadata: dict[str, Any] = field(default_factory=dict)
    quantity: int = 1
    billing_cycle: str | None = None

    @classmethod
    def of(
        cls, line: CartLine | CartItem, quantity: int | None = None, cycle: str | None = None
    ) -> ItemChoice:
        """The choice that would add ``line`` again (to re-price it), with changes."""
        return cls(
            hosting_product=line.hosting_product_id,  # type: ignore[union-attr]
            domain_product=line.domain_product_id,  # type: ignore[union-attr]
            service=line.service_id,  # type: ignore[union-attr]
            service_metadata=line.service_metadata,
            quantity=quantity or line.quantity,
            billing_cycle=cycle or line.billing_cycle,
        )

    @property
    def kind(self) -> str:
        chosen = [
            name for name in ("hosting_product", "domain_product", "service") if getattr(self, name)
        ]
        if len(chosen) != 1:
            raise InvalidInput(
                "hosting_product", "exactly one of hosting_product, domain_product or service."
            )
        return chosen[0]


# The service_metadata keys each kind of line may carry: what the storefront's service pages
# send and its cart page shows. Anything else is refused (400), never stored unseen.
METADATA_KEYS = {
    "hosting_product": frozenset(
        {"type", "region", "os", "domain", "domain_option", "ram", "cpu", "storage"}
    ),
    "domain_product": frozenset(
        {
            "action",
            "domain_name",
            "registration_years",
            "whois_privacy",
            "auto_renew",
            "nameservers",
            "with_hosting",
            "epp_code",
        }
    ),
    "service": frozenset({"type", "domain", "project_name", "timeline", "notes"}),
}


def check_metadata_keys(kind: str, metadata: dict[str, Any]) -> None:
    unknown = sorted(set(metadata) - METADATA_KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(METADATA_KEYS[kind]))
        raise InvalidInput(
            "service_metadata",
            f"unknown key(s) {', '.join(unknown)}; a {kind} line takes {allowed}.",
        )


Catalog = tuple[
    dict[int, HostingProduct], dict[int, DomainProduct], dict[int, Service]
]  # active products by id


async def active_catalog(choices: Sequence[ItemChoice]) -> Catalog:
    """The active catalog rows these choices name: one query per kind named, not per line."""

    async def by_id(model: Any, ids: set[int]) -> dict[int, Any]:
        if not ids:
            return {}
        return {row.id: row for row in await model.filter(id__in=ids, is_active=True)}

    return (
        await by_id(HostingProduct, {c.hosting_product for c in choices if c.hosting_product}),
        await by_id(DomainProduct, {c.domain_product for c in choices if c.domain_product}),
        await by_id(Service, {c.service for c in choices if c.service}),
    )


def price_choice(choice: ItemChoice, catalog: Catalog) -> PricedLine:
    """The catalog's price of ``choice`` (never the browser's)."""
    hosting, domains, services = catalog
    kind = choice.kind
    if kind == "hosting_product":
        product = hosting.get(choice.hosting_product)  # type: ignore[arg-type]
        if product is None:
            raise InvalidInput("hosting_product", "unknown or unavailable product.")
        line = price_hosting(product, choice.billing_cycle)
        line.service_metadata = dict(choice.service_metadata)
        return line
    if kind == "domain_product":
        domain = domains.get(choice.domain_product)  # type: ignore[arg-type]
        if domain is None:
            raise InvalidInput("domain_product", "unknown or unavailable TLD.")
        if choice.quantity != 1:
            raise InvalidInput("quantity", "must be 1 for a domain.")
        return price_domain(domain, dict(choice.service_metadata), choice.billing_cycle)
    service = services.get(choice.service)  # type: ignore[arg-type]
    if service is None:
        raise InvalidInput("service", "unknown or unavailable service.")
    line = price_service(service)
    line.service_metadata = dict(choice.service_metadata)
    return line


async def priced(choice: ItemChoice) -> PricedLine:
    return price_choice(choice, await active_catalog([choice]))


def refuse_too_large(
    lines: Sequence[Line], tax_rate: Decimal, field_name: str = "quantity"
) -> None:
    """A 400 when the cart would no longer fit an invoice's money columns, so it is refused
    here, never as a database error at checkout."""
    problem = too_large(lines, tax_rate)
    if problem is not None:
        raise InvalidInput(field_name, f"too large: {problem}")


async def _lines_of(cart_id: int, *, excluding: int | None = None) -> list[Line]:
    query = CartItem.filter(cart_id=cart_id)
    if excluding is not None:
        query = query.exclude(id=excluding)
    rows = await query.values_list("product_type", "unit_price", "quantity")
    return [Line(kind, price, quantity) for kind, price, quantity in rows]


async def add_item(
    identity: CartIdentity, cart_id: int, choice: ItemChoice, *, max_lines: int, tax_rate: Decimal
) -> CartView:
    """Add a line priced from the catalog. A closed cart is a 409 before any pricing;
    ``service_metadata`` keys outside the line's kind are a 400; at most ``max_lines`` lines
    (:class:`CartFull`)."""
    async with locked_open_cart(identity, cart_id) as cart:
        # Under the cart's lock: concurrent adds cannot together pass the line or money caps.
        line = await priced(choice)
        check_metadata_keys(choice.kind, choice.service_metadata)
        others = await _lines_of(cart.id)
        if len(others) >= max_lines:
            raise CartFull(max_lines)
        refuse_too_large(
            [*others, Line(line.product_type, line.unit_price, choice.quantity)], tax_rate
        )
        await CartItem.create(
            cart_id=cart.id,
            hosting_product_id=choice.hosting_product,
            domain_product_id=choice.domain_product,
            service_id=choice.service,
            service_name=line.service_name,
            service_category=line.service_category,
            product_type=line.product_type,
            service_metadata=line.service_metadata,
            quantity=choice.quantity,
            billing_cycle=line.billing_cycle,
            unit_price=line.unit_price,
        )
        await Cart.filter(id=cart.id).update(updated_at=datetime.now(UTC))
    return await _must_read(cart.id)


def _no_such_item() -> NotFound:
    return NotFound("item_id: no such item in this cart.", errors={"item_id": ["not found"]})


async def update_item(
    identity: CartIdentity,
    cart_id: int,
    item_id: int,
    *,
    quantity: int | None,
    billing_cycle: str | None,
    tax_rate: Decimal,
) -> CartView:
    """Change a line's quantity and/or billing cycle; the line is re-priced from the catalog."""
    async with locked_open_cart(identity, cart_id) as cart:
        item = await CartItem.get_or_none(id=item_id, cart_id=cart.id)
        if item is None:
            raise _no_such_item()
        choice = ItemChoice.of(item, quantity, billing_cycle)
        line = await priced(choice)
        # Inside the lock: two concurrent changes cannot together pass the money cap.
        others = await _lines_of(cart.id, excluding=item.id)
        refuse_too_large(
            [*others, Line(line.product_type, line.unit_price, choice.quantity)], tax_rate
        )
        await CartItem.filter(id=item.id).update(
            quantity=choice.quantity,
            billing_cycle=line.billing_cycle,
            unit_price=line.unit_price,
            service_metadata=line.service_metadata,
        )
    return await _must_read(cart.id)


async def remove_item(identity: CartIdentity, cart_id: int, item_id: int) -> CartView:
    async with locked_open_cart(identity, cart_id) as cart:
        if not await CartItem.filter(id=item_id, cart_id=cart.id).delete():
            raise _no_such_item()
    return await _must_read(cart.id)


async def clear_cart(identity: CartIdentity, cart_id: int) -> CartView:
    """Remove every line (an applied coupon stays)."""
    async with locked_open_cart(identity, cart_id) as cart:
        await CartItem.filter(cart_id=cart.id).delete()
    return await _must_read(cart.id)


# --- coupons: the rules, once ------------------------------------------------------------


async def find_promotion(code: str) -> Promotion:
    """The promotion of ``code`` (case-insensitive), else a 400 on ``code``."""
    promotion = await Promotion.get_or_none(code=code.strip().upper())
    if promotion is None:
        raise InvalidInput("code", "Invalid coupon code.")
    return promotion


async def customer_uses(promotion_id: int, user_id: int) -> int:
    """How often a customer used a coupon: their invoices with it, cancelled ones aside."""
    return (
        await Invoice.filter(user_id=user_id, promotion_id=promotion_id)
        .exclude(status=InvoiceStatus.CANCELLED)
        .count()
    )


async def customer_problem(promotion: Promotion | CouponTerms, user_id: int) -> str | None:
    """Why ``user_id`` may not use the coupon again (``max_uses_per_customer``), or None."""
    limit = promotion.max_uses_per_customer
    if limit is not None and await customer_uses(promotion.id, user_id) >= limit:
        if limit == 1:
            return "You have already used this coupon."
        return f"You have already used this coupon {limit} times."
    return None


async def coupon_refusal(
    promotion: Promotion | CouponTerms, lines: Sequence[Line], user_id: int | None
) -> str | None:
    """Why the coupon cannot be used for these lines by this customer now, or None: its own
    terms (:func:`slyker.pricing.promotion_problem`), then the customer's past uses."""
    problem = promotion_problem(promotion, lines)
    if problem is None and user_id is not None:
        problem = await customer_problem(promotion, user_id)
    return problem


async def apply_coupon(identity: CartIdentity, cart_id: int, code: str) -> CartView:
    """Apply a coupon (code case-insensitive) if it is valid for this cart now, and for the
    signed-in customer (``max_uses_per_customer``)."""
    cart = await open_cart(identity, cart_id)
    promotion = await find_promotion(code)
    problem = await coupon_refusal(promotion, [line.line for line in cart.lines], identity.user_id)
    if problem is not None:
        raise InvalidInput("code", problem)
    await Cart.filter(id=cart.id).update(coupon_id=promotion.id)
    return await _must_read(cart.id)


async def remove_coupon(identity: CartIdentity, cart_id: int) -> CartView:
    cart = await open_cart(identity, cart_id)
    await Cart.filter(id=cart.id).update(coupon_id=None)
    return await _must_read(cart.id)


async def claim_coupon(coupon: CouponTerms, lines: Sequence[Line], user_id: int) -> Decimal:
    """At checkout, inside its transaction: count one use of the coupon and return the
    discount, or refuse (400 on ``code``, telling the customer to remove it)."""
    # Per customer: the user's row is locked first (PostgreSQL; SQLite's transaction holds
    # the write lock), so two checkouts of one user count each other's invoice.
    await User.filter(id=user_id).select_for_update().first()
    problem = await coupon_refusal(coupon, lines, user_id)
    if problem is not None:
        raise InvalidInput("code", f"{coupon.code}: {problem} Remove it to check out.")
    # Counted once, here; the conditional update keeps the limit under concurrency.
    query = Promotion.filter(id=coupon.id)
    if coupon.usage_limit is not None:
        query = query.filter(usage_count__lt=coupon.usage_limit)
    if not await query.update(usage_count=F("usage_count") + 1):
        raise InvalidInput("code", f"{coupon.code}: This coupon has reached its usage limit.")
    return discount(coupon, lines)
