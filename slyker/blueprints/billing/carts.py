"""Carts: one active cart per identity (a user, or an anonymous visitor's cart token),
priced from the catalog, and checkout into an invoice.

An anonymous cart is identified by a token the API issues: in an HttpOnly cookie, and also in
the ``X-Cart-Token`` response header, which the storefront may send back in the request
header of the same name when the browser blocks third-party cookies.

The token is ``<random>.<HMAC-SHA256 of it under SECRET_KEY>``: only a token slyker issued
names a cart (a client cannot choose, fixate or guess one). A token without a valid MAC, in
the cookie or the header, is treated as absent: the caller gets a new cart and token. The
database keeps only the random part. Carts of tokens issued before signing (unsigned), and
every anonymous cart after a change of SECRET_KEY, simply start over empty.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, EmailStr, Field, field_validator
from quart import Blueprint, Response, jsonify, request
from quart_rate_limiter import rate_limit
from quart_schema import validate_request
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from slyker.auth import authenticated_user, current_user, login_required
from slyker.blueprints.accounts import client_address
from slyker.errors import APIError, error_body, invalid
from slyker.models.accounts import User
from slyker.models.billing import (
    Cart,
    CartItem,
    CartStatus,
    DomainProduct,
    HostingProduct,
    Invoice,
    InvoiceItem,
    InvoiceStatus,
    Promotion,
    Service,
)
from slyker.money import as_number, as_string, cents
from slyker.pricing import (
    MAX_QUANTITY,
    Line,
    PricedLine,
    discount,
    discount_description,
    price_domain,
    price_hosting,
    price_service,
    promotion_problem,
    subtotal,
    too_large,
)
from slyker.ratelimit import SettingRateLimit
from slyker.services import paynow as paynow_service
from slyker.services.errors import UpstreamError
from slyker.settings import current_settings
from slyker.validation import NO_NUL, Id

blueprint = Blueprint("carts", __name__, url_prefix="/api/billing/carts")
log = logging.getLogger(__name__)

CART_TOKEN_HEADER = "X-Cart-Token"
# <random>.<mac>: the random part is what the database stores (Cart.anonymous_token).
_SIGNED_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]{32,64})\.([A-Za-z0-9_-]{43})")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
MAX_METADATA_BYTES = 4096


# --- identity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CartIdentity:
    user: User | None
    anonymous_token: str | None  # from the X-Cart-Token header or the cart cookie


def _token_mac(secret_key: str, token: str) -> str:
    digest = hmac.new(
        secret_key.encode(), b"slyker.cart-token:" + token.encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signed_cart_token(token: str, secret_key: str | None = None) -> str:
    """What the client holds for the anonymous cart token ``token``."""
    return f"{token}.{_token_mac(secret_key or current_settings().secret_key, token)}"


def verified_cart_token(value: str | None, secret_key: str | None = None) -> str | None:
    """The cart token in ``value`` if slyker signed it, else None (constant-time check)."""
    match = _SIGNED_TOKEN_RE.fullmatch(value or "")
    if match is None:
        return None
    token, mac = match.groups()
    expected = _token_mac(secret_key or current_settings().secret_key, token)
    return token if hmac.compare_digest(mac, expected) else None


def new_cart_token() -> str:
    return secrets.token_urlsafe(32)


def cart_identity() -> CartIdentity:
    candidates = (
        request.headers.get(CART_TOKEN_HEADER),
        request.cookies.get(current_settings().cart_cookie_name),
    )
    verified = (verified_cart_token(c) for c in candidates)
    return CartIdentity(current_user(), next((t for t in verified if t), None))


async def cart_writer_key() -> str:
    """Cart changes are counted per user when signed in, else per client address."""
    user = current_user()
    return f"user:{user.id}" if user is not None else f"addr:{await client_address()}"


async def not_creating_a_cart() -> bool:
    """Skip the creation limit unless this request would make a new anonymous cart."""
    identity = cart_identity()
    return identity.user is not None or identity.anonymous_token is not None


CART_WRITES = SettingRateLimit("cart_writes_per_minute", timedelta(minutes=1), cart_writer_key)
COUPON_CHECKS = SettingRateLimit("coupon_checks_per_minute", timedelta(minutes=1), client_address)


async def active_cart(key: str, **fields: Any) -> Cart:
    """The active cart for ``key``, created if needed; race-safe: ``active_key`` is unique,
    so of two concurrent creations one fails and then reads the winner's cart."""
    cart = await Cart.get_or_none(active_key=key)
    if cart is not None:
        return cart
    try:
        return await Cart.create(active_key=key, **fields)
    except IntegrityError:
        return await Cart.get(active_key=key)


async def user_cart(user: User) -> Cart:
    return await active_cart(f"user:{user.id}", user=user)


async def merge_anonymous_cart(token: str, into: Cart) -> None:
    """Move an anonymous cart's items (and coupon, if ``into`` has none) into the user's
    cart, once, and close it; ``into`` is refreshed."""
    anonymous = await Cart.get_or_none(active_key=f"anon:{token}")
    if anonymous is None or not await CartItem.filter(cart_id=anonymous.id).exists():
        return
    async with in_transaction():
        # The user's cart is locked as checkout locks it: moved items land on its invoice
        # or stay in the anonymous cart, never in a cart checked out meanwhile.
        target = await Cart.filter(id=into.id).select_for_update().get()
        if target.status != CartStatus.ACTIVE:
            return
        closed = await Cart.filter(id=anonymous.id, status=CartStatus.ACTIVE).update(
            status=CartStatus.MERGED, active_key=None, merged_into_id=into.id
        )
        if not closed:  # a concurrent request merged it already
            return
        moved = await CartItem.filter(cart_id=anonymous.id).update(cart_id=into.id)
        if into.coupon_id is None and anonymous.coupon_id is not None:
            await Cart.filter(id=into.id).update(coupon_id=anonymous.coupon_id)
    await into.refresh_from_db()
    log.info("Merged anonymous cart %s (%s items) into cart %s", anonymous.id, moved, into.id)


async def caller_cart(cart_id: int) -> Cart:
    """The cart ``cart_id`` if it is the caller's, else 404 (never reveal that it exists).

    A logged-in caller addressing the anonymous cart that was merged into theirs (the
    storefront keeps the cart id it had before login) gets their own cart.
    """
    identity = cart_identity()
    own: Cart | None = None
    if identity.user is not None:
        own = await user_cart(identity.user)
        if identity.anonymous_token:
            await merge_anonymous_cart(identity.anonymous_token, own)
        if cart_id == own.id:
            return own
    cart = await Cart.get_or_none(id=cart_id)
    if cart is not None:
        if identity.user is not None and cart.user_id == identity.user.id:
            return cart
        if identity.anonymous_token and cart.anonymous_token == identity.anonymous_token:
            if cart.status == CartStatus.MERGED and own is not None:
                return own
            if cart.user_id is None:
                return cart
    if identity.user is None and identity.anonymous_token is None:
        raise APIError(
            404,
            "Cart not found. This request carried no cart cookie and no X-Cart-Token header: "
            "if third-party cookies are blocked, send back the X-Cart-Token from "
            "GET /api/billing/carts/current/.",
            code="cart_not_found",
        )
    raise APIError(404, "Cart not found.", code="cart_not_found")


def cart_closed() -> APIError:
    return APIError(409, "This cart is closed: it was checked out or merged.", code="cart_closed")


async def open_cart(cart_id: int) -> Cart:
    cart = await caller_cart(cart_id)
    if cart.status != CartStatus.ACTIVE:
        raise cart_closed()
    return cart


@asynccontextmanager
async def locked_open_cart(cart_id: int) -> AsyncIterator[Cart]:
    """The caller's open cart, locked (with its lines) until the block ends.

    Checkout locks the same row, so a change to the lines either lands before it (and on the
    invoice) or finds the cart closed (409): never in a closed cart on no invoice, as 57 of
    66 acknowledged items once did. PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite: the
    transaction holds the database's write lock from its start (``slyker.sqlite``) and the
    status is read inside it.
    """
    cart = await caller_cart(cart_id)
    async with in_transaction():
        locked = await Cart.filter(id=cart.id).select_for_update().get()
        if locked.status != CartStatus.ACTIVE:
            raise cart_closed()
        yield locked


# --- JSON --------------------------------------------------------------------------------


def item_json(item: CartItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "hosting_product": item.hosting_product_id,
        "domain_product": item.domain_product_id,
        "service": item.service_id,
        "service_name": item.service_name,
        "service_category": item.service_category,
        "service_metadata": item.service_metadata,
        "quantity": item.quantity,
        "billing_cycle": item.billing_cycle,
        "unit_price": as_string(item.unit_price),
        "total_price": as_number(item.unit_price * item.quantity),
        "created_at": item.created_at.isoformat(),
    }


def lines_of(items: list[CartItem]) -> list[Line]:
    return [Line(item.product_type, item.unit_price, item.quantity) for item in items]


def refuse_too_large(lines: list[Line]) -> None:
    """A 400 (on ``quantity``) when the cart would no longer fit an invoice's money columns,
    so it is refused here, never as a database error at checkout."""
    problem = too_large(lines, current_settings().tax_rate)
    if problem is not None:
        raise invalid("quantity", f"too large: {problem}")


async def cart_json(cart: Cart) -> dict[str, Any]:
    """The whole cart. ``total`` is the sum of the lines before any discount (what the
    storefront has always shown as the cart total); ``final_total`` is ``total`` minus
    ``discount_amount``: what the invoice will charge before tax."""
    items = await CartItem.filter(cart_id=cart.id).order_by("id")
    lines = lines_of(items)
    amount = subtotal(lines)
    promotion = await Promotion.get_or_none(id=cart.coupon_id) if cart.coupon_id else None
    reduction = cents(0)
    description = None
    if promotion is not None:
        problem = promotion_problem(promotion, lines)
        if problem is None:
            reduction = discount(promotion, lines)
            description = discount_description(promotion)
        else:
            description = f"{promotion.code}: {problem}"
    return {
        "id": cart.id,
        "status": str(cart.status),
        "items": [item_json(item) for item in items],
        "item_count": len(items),
        "subtotal": as_number(amount),
        "applied_coupon": promotion.code if promotion else None,
        "discount_description": description,
        # null, not 0, without a reduction: the cart page renders a bare ``0`` otherwise.
        "discount_amount": as_number(reduction) if reduction else None,
        "total": as_number(amount),
        "final_total": as_number(amount - reduction),
        "created_at": cart.created_at.isoformat(),
        "updated_at": cart.updated_at.isoformat(),
    }


def _secure_cookie() -> bool:
    configured = current_settings().cart_cookie_secure
    if configured is not None:
        return configured
    return (request.host.rsplit(":", 1)[0] or "").strip("[]") not in LOOPBACK_HOSTS


async def cart_response(cart: Cart, status: int = 200) -> Response:
    response = jsonify(await cart_json(cart))
    response.status_code = status
    if cart.user_id is None and cart.anonymous_token:
        settings = current_settings()
        token = signed_cart_token(cart.anonymous_token)
        response.headers[CART_TOKEN_HEADER] = token
        response.set_cookie(
            settings.cart_cookie_name,
            token,
            max_age=settings.cart_cookie_max_age,
            httponly=True,
            secure=_secure_cookie(),
            samesite=settings.cart_cookie_samesite,
            path="/api/",
        )
    return response


# --- endpoints ---------------------------------------------------------------------------


@blueprint.get("/current/")
@rate_limit(
    limits=[
        SettingRateLimit(
            "cart_creations_per_minute",
            timedelta(minutes=1),
            client_address,
            skip_function=not_creating_a_cart,
        )
    ]
)
async def current_cart() -> Response:
    """The caller's active cart, created if needed: the user's own when logged in (with any
    anonymous cart of this browser merged into it), else the anonymous cart of the cart
    token (cookie or ``X-Cart-Token``, as issued: a token slyker did not sign is ignored),
    else a new anonymous cart and token (at most ``CART_CREATIONS_PER_MINUTE`` per client
    address: 429 beyond)."""
    identity = cart_identity()
    if identity.user is not None:
        cart = await user_cart(identity.user)
        if identity.anonymous_token:
            await merge_anonymous_cart(identity.anonymous_token, cart)
        return await cart_response(cart)
    token = identity.anonymous_token
    if token is None:
        token = new_cart_token()
        log.info("New anonymous cart token issued")
    cart = await active_cart(f"anon:{token}", anonymous_token=token)
    return await cart_response(cart)


@blueprint.get("/<int:cart_id>/")
async def get_cart(cart_id: int) -> Response:
    """One of the caller's carts."""
    return await cart_response(await caller_cart(cart_id))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class CartItemIn(BaseModel):
    hosting_product: Id | None = None
    domain_product: Id | None = None
    service: Id | None = None
    service_metadata: dict[str, Any] = Field(default_factory=dict)
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    billing_cycle: str | None = Field(default=None, max_length=16)
    # Accepted because the storefront sends it, and ignored: prices come from the catalog.
    unit_price: Any = None

    @field_validator("service_metadata")
    @classmethod
    def storable_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Kept as JSON: bounded, and without NUL (PostgreSQL's jsonb refuses ``\u0000``)."""
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
        if _has_nul(value):
            raise ValueError("must not contain NUL characters")
        return value

    @classmethod
    def of(
        cls, item: CartItem, quantity: int | None = None, billing_cycle: str | None = None
    ) -> CartItemIn:
        """The request that would add ``item`` again (to re-price it), with changes."""
        return cls(
            hosting_product=item.hosting_product_id,
            domain_product=item.domain_product_id,
            service=item.service_id,
            service_metadata=item.service_metadata,
            quantity=quantity or item.quantity,
            billing_cycle=billing_cycle or item.billing_cycle,
        )


async def priced_line(data: CartItemIn) -> tuple[PricedLine, dict[str, Any]]:
    chosen = [
        name for name in ("hosting_product", "domain_product", "service") if getattr(data, name)
    ]
    if len(chosen) != 1:
        raise invalid(
            "hosting_product", "exactly one of hosting_product, domain_product or service."
        )
    [kind] = chosen
    if kind == "hosting_product":
        hosting = await HostingProduct.get_or_none(id=data.hosting_product, is_active=True)
        if hosting is None:
            raise invalid("hosting_product", "unknown or unavailable product.")
        line = price_hosting(hosting, data.billing_cycle)
        line.service_metadata = dict(data.service_metadata)
        return line, {"hosting_product": hosting}
    if kind == "domain_product":
        domain = await DomainProduct.get_or_none(id=data.domain_product, is_active=True)
        if domain is None:
            raise invalid("domain_product", "unknown or unavailable TLD.")
        if data.quantity != 1:
            raise invalid("quantity", "must be 1 for a domain.")
        return price_domain(domain, dict(data.service_metadata), data.billing_cycle), {
            "domain_product": domain
        }
    service = await Service.get_or_none(id=data.service, is_active=True)
    if service is None:
        raise invalid("service", "unknown or unavailable service.")
    line = price_service(service)
    line.service_metadata = dict(data.service_metadata)
    return line, {"service": service}


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
        raise invalid(
            "service_metadata",
            f"unknown key(s) {', '.join(unknown)}; a {kind} line takes {allowed}.",
        )


def cart_full(max_lines: int) -> APIError:
    return APIError(
        409,
        f"This cart is full: at most {max_lines} lines. Remove a line or check out first.",
        code="cart_full",
    )


@blueprint.post("/<int:cart_id>/add_item/")
@rate_limit(limits=[CART_WRITES])
@validate_request(CartItemIn)
async def add_item(cart_id: int, data: CartItemIn) -> Response:
    """Add a line. The price is the catalog's for the chosen billing cycle (domains: years,
    action and WHOIS privacy); a ``unit_price`` in the body is ignored. 201 with the cart.
    ``service_metadata`` keys outside the line's kind are a 400; a cart holds at most
    ``CART_MAX_LINES`` lines (409 ``cart_full``)."""
    await open_cart(cart_id)  # a closed cart is a 409 before any pricing
    line, product = await priced_line(data)
    check_metadata_keys(next(iter(product)), data.service_metadata)
    max_lines = current_settings().cart_max_lines
    async with locked_open_cart(cart_id) as cart:
        # Under the cart's lock: concurrent adds cannot together pass the line or money caps.
        others = await CartItem.filter(cart_id=cart.id)
        if len(others) >= max_lines:
            raise cart_full(max_lines)
        refuse_too_large(
            [*lines_of(others), Line(line.product_type, line.unit_price, data.quantity)]
        )
        await CartItem.create(
            cart=cart,
            **product,
            service_name=line.service_name,
            service_category=line.service_category,
            product_type=line.product_type,
            service_metadata=line.service_metadata,
            quantity=data.quantity,
            billing_cycle=line.billing_cycle,
            unit_price=line.unit_price,
        )
        await Cart.filter(id=cart.id).update(updated_at=datetime.now(UTC))
    return await cart_response(await Cart.get(id=cart.id), 201)


class ItemChange(BaseModel):
    item_id: Id
    quantity: int | None = Field(default=None, ge=1, le=MAX_QUANTITY)
    billing_cycle: str | None = Field(default=None, max_length=16)


async def _cart_item(cart: Cart, item_id: int) -> CartItem:
    item = await CartItem.get_or_none(id=item_id, cart_id=cart.id)
    if item is None:
        raise APIError(
            404, "item_id: no such item in this cart.", errors={"item_id": ["not found"]}
        )
    return item


@blueprint.patch("/<int:cart_id>/update_item/")
@rate_limit(limits=[CART_WRITES])
@validate_request(ItemChange)
async def update_item(cart_id: int, data: ItemChange) -> Response:
    """Change a line's quantity and/or billing cycle; the line is re-priced from the catalog."""
    cart = await open_cart(cart_id)
    item = await _cart_item(cart, data.item_id)
    request_body = CartItemIn.of(item, data.quantity, data.billing_cycle)
    line, _ = await priced_line(request_body)
    async with locked_open_cart(cart_id) as cart:
        # Inside the lock: two concurrent changes cannot together pass the money cap.
        others = lines_of(await CartItem.filter(cart_id=cart.id).exclude(id=item.id))
        refuse_too_large([*others, Line(line.product_type, line.unit_price, request_body.quantity)])
        changed = await CartItem.filter(id=item.id, cart_id=cart.id).update(
            quantity=request_body.quantity,
            billing_cycle=line.billing_cycle,
            unit_price=line.unit_price,
            service_metadata=line.service_metadata,
        )
        if not changed:  # removed meanwhile
            await _cart_item(cart, data.item_id)
    return await cart_response(await Cart.get(id=cart.id))


class ItemRef(BaseModel):
    item_id: Id


@blueprint.delete("/<int:cart_id>/remove_item/")
@rate_limit(limits=[CART_WRITES])
@validate_request(ItemRef)
async def remove_item(cart_id: int, data: ItemRef) -> Response:
    """Remove a line (JSON body ``{item_id}``)."""
    async with locked_open_cart(cart_id) as cart:
        item = await _cart_item(cart, data.item_id)
        await item.delete()
    return await cart_response(cart)


@blueprint.post("/<int:cart_id>/clear/")
@rate_limit(limits=[CART_WRITES])
async def clear_cart(cart_id: int) -> Response:
    """Remove every line (an applied coupon stays)."""
    async with locked_open_cart(cart_id) as cart:
        await CartItem.filter(cart_id=cart.id).delete()
    return await cart_response(cart)


class CouponIn(BaseModel):
    code: str = Field(min_length=1, max_length=50)


async def find_promotion(code: str) -> Promotion:
    promotion = await Promotion.get_or_none(code=code.strip().upper())
    if promotion is None:
        raise invalid("code", "Invalid coupon code.")
    return promotion


async def customer_uses(promotion: Promotion, user_id: int) -> int:
    """How often a customer used a coupon: their invoices with it, cancelled ones aside."""
    return (
        await Invoice.filter(user_id=user_id, promotion_id=promotion.id)
        .exclude(status=InvoiceStatus.CANCELLED)
        .count()
    )


async def customer_problem(promotion: Promotion, user_id: int) -> str | None:
    """Why ``user_id`` may not use the coupon again (``max_uses_per_customer``), or None."""
    limit = promotion.max_uses_per_customer
    if limit is not None and await customer_uses(promotion, user_id) >= limit:
        return (
            "You have already used this coupon."
            if limit == 1
            else (f"You have already used this coupon {limit} times.")
        )
    return None


@blueprint.post("/<int:cart_id>/apply_coupon/")
@rate_limit(limits=[CART_WRITES, COUPON_CHECKS])
@validate_request(CouponIn)
async def apply_coupon(cart_id: int, data: CouponIn) -> Response:
    """Apply a coupon (code case-insensitive) if it is valid for this cart now, and for the
    signed-in customer (``max_uses_per_customer``). At most ``COUPON_CHECKS_PER_MINUTE``
    per client address (429 beyond)."""
    cart = await open_cart(cart_id)
    promotion = await find_promotion(data.code)
    problem = promotion_problem(promotion, lines_of(await CartItem.filter(cart_id=cart.id)))
    user = current_user()
    if problem is None and user is not None:
        problem = await customer_problem(promotion, user.id)
    if problem is not None:
        raise invalid("code", problem)
    await Cart.filter(id=cart.id).update(coupon_id=promotion.id)
    return await cart_response(await Cart.get(id=cart.id))


@blueprint.post("/<int:cart_id>/remove_coupon/")
@rate_limit(limits=[CART_WRITES])
async def remove_coupon(cart_id: int) -> Response:
    """Remove the applied coupon."""
    cart = await open_cart(cart_id)
    await Cart.filter(id=cart.id).update(coupon_id=None)
    return await cart_response(await Cart.get(id=cart.id))


# --- checkout ----------------------------------------------------------------------------


class BillingInfo(BaseModel):
    full_name: Annotated[str, Field(min_length=1, max_length=200), NO_NUL]
    email: EmailStr
    phone: Annotated[str, Field(max_length=40), NO_NUL] = ""
    address: Annotated[str, Field(max_length=300), NO_NUL] = ""
    city: Annotated[str, Field(max_length=100), NO_NUL] = ""
    country: Annotated[str, Field(max_length=100), NO_NUL] = ""


class CheckoutIn(BaseModel):
    billing_info: BillingInfo
    payment_method: Literal["bank", "paynow", "crypto"]


def payment_instructions(payment_method: str) -> str | None:
    settings = current_settings()
    if payment_method == "bank":
        return settings.bank_payment_instructions
    if payment_method == "crypto":
        return settings.crypto_payment_instructions
    return None  # paynow: the customer pays on Paynow's page (redirect_url)


def checkout_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": invoice.id,
        "invoice_number": invoice.invoice_number,
        "total": as_string(invoice.total),
        "status": str(invoice.status),
        "message": f"Invoice {invoice.invoice_number} created.",
        "payment_method": invoice.payment_method,
        "payment_instructions": payment_instructions(invoice.payment_method),
        "redirect_url": None,
        "payment_id": None,
    }


async def checkout_reply(invoice: Invoice, user: User, created: bool) -> Response:
    """The checkout answer (201 new, 200 repeated); for ``paynow`` with the Paynow page to
    send the customer to. If Paynow cannot start the payment the invoice still exists: 502
    naming it, with ``invoice_id``/``invoice_number``; checking out again (or
    ``POST /api/billing/invoices/{id}/paynow_payment/``) retries."""
    body = checkout_json(invoice)
    if invoice.payment_method == "paynow":
        try:
            attempt = await paynow_service.checkout_attempt(
                current_settings().paynow, invoice, user, created=created
            )
        except UpstreamError as error:
            failure = error_body(
                502,
                f"Invoice {invoice.invoice_number} was created, but the Paynow payment could "
                f"not be started: {error.message} Check out again or pay it from your invoices.",
                code=error.code,
            )
            failure.update(
                invoice_id=invoice.id,
                invoice_number=invoice.invoice_number,
                retry_url=f"/api/billing/invoices/{invoice.id}/paynow_payment/",
            )
            response = jsonify(failure)
            response.status_code = 502
            return response
        if attempt is not None:
            body["payment_id"] = attempt.payment_id
            body["redirect_url"] = attempt.browser_url or None
            body["message"] = f"Invoice {invoice.invoice_number} created: pay it on Paynow."
    response = jsonify(body)
    response.status_code = 201 if created else 200
    return response


async def _repriced(items: list[CartItem]) -> list[tuple[CartItem, PricedLine]]:
    """Re-price every line from today's catalog; a withdrawn product stops the checkout."""
    priced = []
    for item in items:
        try:
            line, _ = await priced_line(CartItemIn.of(item))
        except APIError as error:
            raise invalid("items", f"{item.service_name}: {error.description}") from None
        priced.append((item, line))
    # Prices may have risen, or a merged cart added lines, since each line was checked.
    problem = too_large(
        [Line(item.product_type, line.unit_price, item.quantity) for item, line in priced],
        current_settings().tax_rate,
    )
    if problem is not None:
        raise invalid("items", f"too large: {problem}")
    for item, line in priced:
        if line.unit_price != item.unit_price:
            item.unit_price = line.unit_price
            await CartItem.filter(id=item.id).update(unit_price=line.unit_price)
    return priced


async def _create_invoice(cart: Cart, user: User, data: CheckoutIn) -> Invoice:
    settings = current_settings()
    priced = await _repriced(list(await CartItem.filter(cart_id=cart.id).order_by("id")))
    items = [item for item, _ in priced]
    if not items:
        raise invalid("items", "Your cart is empty.")
    lines = lines_of(items)
    amount = subtotal(lines)
    reduction = cents(0)
    promotion = await Promotion.get_or_none(id=cart.coupon_id) if cart.coupon_id else None
    if promotion is not None:
        problem = promotion_problem(promotion, lines)
        if problem is not None:
            raise invalid("code", f"{promotion.code}: {problem} Remove it to check out.")
        # Per customer: the user's row is locked first (PostgreSQL; SQLite's transaction
        # holds the write lock), so two checkouts of one user count each other's invoice.
        await User.filter(id=user.id).select_for_update().first()
        used = await customer_problem(promotion, user.id)
        if used is not None:
            raise invalid("code", f"{promotion.code}: {used} Remove it to check out.")
        # Counted once, here; the conditional update keeps the limit under concurrency.
        query = Promotion.filter(id=promotion.id)
        if promotion.usage_limit is not None:
            query = query.filter(usage_count__lt=promotion.usage_limit)
        if not await query.update(usage_count=F("usage_count") + 1):
            raise invalid("code", f"{promotion.code}: This coupon has reached its usage limit.")
        reduction = discount(promotion, lines)
    taxable = amount - reduction
    tax = cents(taxable * settings.tax_rate / 100)
    today = date.today()
    invoice = await Invoice.create(
        invoice_number=f"PENDING-{secrets.token_hex(8)}",
        user=user,
        cart=cart,
        issue_date=today,
        due_date=today + timedelta(days=settings.invoice_due_days),
        subtotal=amount,
        tax_rate=settings.tax_rate,
        tax_amount=tax,
        discount_amount=reduction,
        total=cents(taxable + tax),
        promotion=promotion,
        billing_info=data.billing_info.model_dump(mode="json"),
        payment_method=data.payment_method,
    )
    invoice.invoice_number = f"INV-{invoice.id:06d}"
    await Invoice.filter(id=invoice.id).update(invoice_number=invoice.invoice_number)
    for item, line in priced:
        await InvoiceItem.create(
            invoice=invoice,
            description=item.service_name,
            service_category=item.service_category,
            billing_cycle=item.billing_cycle,
            quantity=item.quantity,
            unit_price=item.unit_price,
            total=cents(item.unit_price * item.quantity),
            service_metadata=item.service_metadata,
            hosting_product_id=item.hosting_product_id,
            domain_product_id=item.domain_product_id,
            service_id=item.service_id,
            setup_fee=line.setup_fee,
        )
    await Cart.filter(id=cart.id).update(status=CartStatus.COMPLETED, active_key=None)
    return invoice


@blueprint.post("/<int:cart_id>/checkout/")
@login_required
@validate_request(CheckoutIn)
async def checkout(cart_id: int, data: CheckoutIn) -> Response:
    """Turn the cart into an invoice (201). Prices and coupon are re-checked; a repeated
    checkout of the same cart returns the same invoice (200). ``bank`` and ``crypto``:
    how to pay comes back in ``payment_instructions``. ``paynow``: ``redirect_url`` is the
    Paynow page to send the customer to and ``payment_id`` the pending payment (400 naming
    the missing setting when Paynow is not configured; 502 when Paynow fails, see
    :func:`checkout_reply`)."""
    user = authenticated_user()
    cart = await caller_cart(cart_id)
    existing = await Invoice.get_or_none(cart_id=cart.id)
    if existing is not None:
        return await checkout_reply(existing, user, created=False)
    missing = current_settings().paynow.missing if data.payment_method == "paynow" else None
    if missing is not None:
        raise paynow_service.PaynowNotConfigured(missing)
    if cart.user_id != user.id:
        raise APIError(404, "Cart not found.", code="cart_not_found")
    try:
        async with in_transaction():
            locked = await Cart.filter(id=cart.id).select_for_update().get()
            if locked.status != CartStatus.ACTIVE:
                invoice = None
            else:
                invoice = await _create_invoice(locked, user, data)
    except IntegrityError:
        invoice = None  # a concurrent checkout of this cart won; its invoice is returned
    if invoice is None:
        winner = await Invoice.get_or_none(cart_id=cart.id)
        if winner is None:
            raise APIError(409, "This cart is closed.", code="cart_closed")
        return await checkout_reply(winner, user, created=False)
    log.info("Checkout: cart %s -> %s for user %s", cart.id, invoice.invoice_number, user.id)
    return await checkout_reply(invoice, user, created=True)
