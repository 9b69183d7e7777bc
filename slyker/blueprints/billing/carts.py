"""Carts and checkout over HTTP: who is asking (the user, and the cart token in the
``X-Cart-Token`` header or the cart cookie), what they send, what comes back.

The rules (signed cart tokens, lines, limits, merge, prices, coupons, checkout) live in
:mod:`slyker.services.carts` and :mod:`slyker.services.checkout`.

An anonymous cart is identified by a token the API issues: in an HttpOnly cookie, and also in
the ``X-Cart-Token`` response header, which the storefront may send back in the request
header of the same name when the browser blocks third-party cookies. A token slyker did not
sign is treated as absent: the caller gets a new cart and token.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, EmailStr, Field, field_validator
from quart import Blueprint, g, request
from quart_rate_limiter import rate_limit
from quart_schema import validate_request, validate_response
from werkzeug.datastructures import Headers
from werkzeug.http import dump_cookie

from slyker.auth import authenticated_user, current_user, login_required
from slyker.blueprints.billing.limits import CART_WRITES, COUPON_CHECKS
from slyker.money import as_number, as_string
from slyker.outbound import http_client
from slyker.pricing import MAX_QUANTITY
from slyker.ratelimit import SettingRateLimit, client_address
from slyker.services import carts as cart_service
from slyker.services import checkout as checkout_service
from slyker.services import paynow_protocol
from slyker.services.carts import CartIdentity, CartView, ItemChoice
from slyker.settings import current_settings
from slyker.validation import NO_NUL, Id

blueprint = Blueprint("carts", __name__, url_prefix="/api/billing/carts")

CART_TOKEN_HEADER = "X-Cart-Token"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
MAX_METADATA_BYTES = 4096


# --- identity ----------------------------------------------------------------------------


def cart_identity() -> CartIdentity:
    """The caller's cart identity, worked out once per request (the rate limit asks too)."""
    identity: CartIdentity | None = g.get("cart_identity")
    if identity is None:
        user = current_user()
        settings = current_settings()
        identity = cart_service.identity_of(
            user.id if user is not None else None,
            (
                request.headers.get(CART_TOKEN_HEADER),
                request.cookies.get(settings.billing.cart_cookie_name),
            ),
            settings.secret_key,
        )
        g.cart_identity = identity
    return identity


async def not_creating_a_cart() -> bool:
    """Skip the creation limit unless this request would make a new anonymous cart."""
    return not cart_identity().is_anonymous_without_token


# The limits shared with other routes are in limits.py; this one needs the cart identity.
CART_CREATIONS = SettingRateLimit(
    "billing.cart_creations_per_minute",
    timedelta(minutes=1),
    client_address,
    skip_function=not_creating_a_cart,
)


# --- responses ---------------------------------------------------------------------------


class CartItemOut(BaseModel):
    id: int
    hosting_product: int | None
    domain_product: int | None
    service: int | None
    service_name: str
    service_category: str
    service_metadata: dict[str, Any]
    quantity: int
    billing_cycle: str
    unit_price: str = Field(description='Money as a string: "12.50".')
    total_price: float = Field(description="unit_price x quantity, a number (exact to the cent).")
    created_at: str = Field(description="ISO 8601.")


class CartOut(BaseModel):
    """The whole cart. ``total`` is the sum of the lines before any discount (what the
    storefront has always shown as the cart total); ``final_total`` is ``total`` minus
    ``discount_amount``: what the invoice will charge before tax. ``max_lines`` is
    ``CART_MAX_LINES``; ``over_limit`` is true when the cart holds more lines than that, which
    only the merge at login does (see ``current/``)."""

    id: int
    status: str
    items: list[CartItemOut]
    item_count: int
    max_lines: int = Field(description="CART_MAX_LINES: add_item beyond it is a 409 cart_full.")
    over_limit: bool = Field(
        description=(
            "More lines than max_lines: the merge at login kept every line of both carts. "
            "add_item is a 409 cart_full until lines are removed; checkout takes them all."
        )
    )
    subtotal: float
    applied_coupon: str | None
    discount_description: str | None = Field(
        description="What the coupon takes off, or why it does not apply now."
    )
    # null, not 0, without a reduction: the cart page renders a bare ``0`` otherwise.
    discount_amount: float | None
    total: float
    final_total: float
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, cart: CartView, max_lines: int) -> CartOut:
        price = cart.price()
        return cls(
            id=cart.id,
            status=str(cart.status),
            items=[
                CartItemOut(
                    id=line.id,
                    hosting_product=line.hosting_product_id,
                    domain_product=line.domain_product_id,
                    service=line.service_id,
                    service_name=line.service_name,
                    service_category=line.service_category,
                    service_metadata=line.service_metadata,
                    quantity=line.quantity,
                    billing_cycle=line.billing_cycle,
                    unit_price=as_string(line.unit_price),
                    total_price=as_number(line.unit_price * line.quantity),
                    created_at=line.created_at.isoformat(),
                )
                for line in cart.lines
            ],
            item_count=len(cart.lines),
            max_lines=max_lines,
            over_limit=len(cart.lines) > max_lines,
            subtotal=as_number(price.subtotal),
            applied_coupon=price.applied_coupon,
            discount_description=price.description,
            discount_amount=as_number(price.discount) if price.discount else None,
            total=as_number(price.subtotal),
            final_total=as_number(price.final_total),
            created_at=cart.created_at.isoformat(),
            updated_at=cart.updated_at.isoformat(),
        )


def _secure_cookie() -> bool:
    configured = current_settings().billing.cart_cookie_secure
    if configured is not None:
        return configured
    return (request.host.rsplit(":", 1)[0] or "").strip("[]") not in LOOPBACK_HOSTS


CartReply = tuple[CartOut, int, Headers]


def cart_reply(cart: CartView, status: int = 200) -> CartReply:
    """The cart, and for an anonymous cart its signed token (header and cookie)."""
    headers = Headers()  # not a dict: quart-schema would run a dict through pydantic
    settings = current_settings()
    if cart.user_id is None and cart.anonymous_token:
        identity = cart_identity()
        if identity.signed_token and identity.anonymous_token == cart.anonymous_token:
            token = identity.signed_token  # as presented: the same MAC, no need to sign again
        else:
            token = cart_service.signed_cart_token(cart.anonymous_token, settings.secret_key)
        headers[CART_TOKEN_HEADER] = token
        headers["Set-Cookie"] = dump_cookie(
            settings.billing.cart_cookie_name,
            token,
            max_age=settings.billing.cart_cookie_max_age,
            httponly=True,
            secure=_secure_cookie(),
            samesite=settings.billing.cart_cookie_samesite,
            path="/api/",
        )
    return CartOut.of(cart, settings.billing.cart_max_lines), status, headers


# --- requests ----------------------------------------------------------------------------


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

    def choice(self) -> ItemChoice:
        return ItemChoice(
            hosting_product=self.hosting_product,
            domain_product=self.domain_product,
            service=self.service,
            service_metadata=self.service_metadata,
            quantity=self.quantity,
            billing_cycle=self.billing_cycle,
        )


class ItemChange(BaseModel):
    item_id: Id
    quantity: int | None = Field(default=None, ge=1, le=MAX_QUANTITY)
    billing_cycle: str | None = Field(default=None, max_length=16)


class ItemRef(BaseModel):
    item_id: Id


class CouponIn(BaseModel):
    code: str = Field(min_length=1, max_length=50)


# --- endpoints ---------------------------------------------------------------------------


@blueprint.get("/current/")
@rate_limit(limits=[CART_CREATIONS])
@validate_response(CartOut)
async def current_cart() -> CartReply:
    """The caller's active cart, created if needed: the user's own when logged in (with any
    anonymous cart of this browser merged into it), else the anonymous cart of the cart
    token (cookie or ``X-Cart-Token``, as issued: a token slyker did not sign is ignored),
    else a new anonymous cart and token (at most ``CART_CREATIONS_PER_MINUTE`` per client
    address: 429 beyond).

    The merge keeps every line of both carts, even past ``CART_MAX_LINES``: nothing the
    shopper picked disappears at login, and no cart request of theirs is refused because of
    it (every cart route merges first, so a refusing merge would lock the shopper out of
    both carts; the storefront treats a failed ``current/`` as "no cart" and keeps the old
    id). Such a cart says ``over_limit: true``; ``add_item`` is a 409 ``cart_full`` until
    lines are removed, and checkout takes every line."""
    return cart_reply(await cart_service.current_cart(cart_identity()))


@blueprint.get("/<int:cart_id>/")
@validate_response(CartOut)
async def get_cart(cart_id: int) -> CartReply:
    """One of the caller's carts."""
    return cart_reply(await cart_service.caller_cart(cart_identity(), cart_id))


@blueprint.post("/<int:cart_id>/add_item/")
@rate_limit(limits=[CART_WRITES])
@validate_request(CartItemIn)
@validate_response(CartOut, 201)
async def add_item(cart_id: int, data: CartItemIn) -> CartReply:
    """Add a line. The price is the catalog's for the chosen billing cycle (domains: years,
    action and WHOIS privacy); a ``unit_price`` in the body is ignored. 201 with the cart.
    ``service_metadata`` keys outside the line's kind are a 400; a cart holds at most
    ``CART_MAX_LINES`` lines (409 ``cart_full``)."""
    settings = current_settings()
    cart = await cart_service.add_item(
        cart_identity(),
        cart_id,
        data.choice(),
        max_lines=settings.billing.cart_max_lines,
        tax_rate=settings.billing.tax_rate,
    )
    return cart_reply(cart, 201)


@blueprint.patch("/<int:cart_id>/update_item/")
@rate_limit(limits=[CART_WRITES])
@validate_request(ItemChange)
@validate_response(CartOut)
async def update_item(cart_id: int, data: ItemChange) -> CartReply:
    """Change a line's quantity and/or billing cycle; the line is re-priced from the catalog."""
    cart = await cart_service.update_item(
        cart_identity(),
        cart_id,
        data.item_id,
        quantity=data.quantity,
        billing_cycle=data.billing_cycle,
        tax_rate=current_settings().billing.tax_rate,
    )
    return cart_reply(cart)


@blueprint.delete("/<int:cart_id>/remove_item/")
@rate_limit(limits=[CART_WRITES])
@validate_request(ItemRef)
@validate_response(CartOut)
async def remove_item(cart_id: int, data: ItemRef) -> CartReply:
    """Remove a line (JSON body ``{item_id}``)."""
    return cart_reply(await cart_service.remove_item(cart_identity(), cart_id, data.item_id))


@blueprint.post("/<int:cart_id>/clear/")
@rate_limit(limits=[CART_WRITES])
@validate_response(CartOut)
async def clear_cart(cart_id: int) -> CartReply:
    """Remove every line (an applied coupon stays)."""
    return cart_reply(await cart_service.clear_cart(cart_identity(), cart_id))


@blueprint.post("/<int:cart_id>/apply_coupon/")
@rate_limit(limits=[CART_WRITES, COUPON_CHECKS])
@validate_request(CouponIn)
@validate_response(CartOut)
async def apply_coupon(cart_id: int, data: CouponIn) -> CartReply:
    """Apply a coupon (code case-insensitive) if it is valid for this cart now, and for the
    signed-in customer (``max_uses_per_customer``). At most ``COUPON_CHECKS_PER_MINUTE``
    per client address (429 beyond)."""
    return cart_reply(await cart_service.apply_coupon(cart_identity(), cart_id, data.code))


@blueprint.post("/<int:cart_id>/remove_coupon/")
@rate_limit(limits=[CART_WRITES])
@validate_response(CartOut)
async def remove_coupon(cart_id: int) -> CartReply:
    """Remove the applied coupon."""
    return cart_reply(await cart_service.remove_coupon(cart_identity(), cart_id))


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


class CheckoutOut(BaseModel):
    invoice_id: int
    invoice_number: str
    total: str = Field(description='Money as a string: "58.91".')
    status: str
    message: str
    payment_method: str
    payment_instructions: str | None = Field(description="bank and crypto: how to pay.")
    redirect_url: str | None = Field(description="paynow: the page to send the customer to.")
    payment_id: int | None = Field(description="paynow: the pending payment.")

    @classmethod
    def of(cls, result: checkout_service.CheckoutResult) -> CheckoutOut:
        invoice = result.invoice
        message = f"Invoice {invoice.invoice_number} created."
        if result.payment_id is not None:
            message = f"Invoice {invoice.invoice_number} created: pay it on Paynow."
        return cls(
            invoice_id=invoice.id,
            invoice_number=invoice.invoice_number,
            total=as_string(invoice.total),
            status=str(invoice.status),
            message=message,
            payment_method=invoice.payment_method,
            payment_instructions=payment_instructions(invoice.payment_method),
            redirect_url=result.redirect_url,
            payment_id=result.payment_id,
        )


def payment_instructions(payment_method: str) -> str | None:
    settings = current_settings()
    if payment_method == "bank":
        return settings.billing.bank_payment_instructions
    if payment_method == "crypto":
        return settings.billing.crypto_payment_instructions
    return None  # paynow: the customer pays on Paynow's page (redirect_url)


@blueprint.post("/<int:cart_id>/checkout/")
@login_required
@validate_request(CheckoutIn)
@validate_response(CheckoutOut, 201)
@validate_response(CheckoutOut, 200)
async def checkout(cart_id: int, data: CheckoutIn) -> tuple[CheckoutOut, int]:
    """Turn the cart into an invoice (201). Prices and coupon are re-checked; a repeated
    checkout of the same cart returns the same invoice (200). ``bank`` and ``crypto``:
    how to pay comes back in ``payment_instructions``. ``paynow``: ``redirect_url`` is the
    Paynow page to send the customer to and ``payment_id`` the pending payment (400 naming
    the missing setting when Paynow is not configured; 502 when Paynow fails: the invoice
    exists, and the error names it with ``invoice_id``, ``invoice_number`` and
    ``retry_url``; checking out again retries)."""
    settings = current_settings()
    result = await checkout_service.checkout(
        authenticated_user(),
        cart_identity(),
        cart_id,
        billing_info=data.billing_info.model_dump(mode="json"),
        payment_method=data.payment_method,
        terms=checkout_service.CheckoutTerms(
            settings.billing.tax_rate,
            settings.billing.invoice_due_days,
            settings.billing.paynow,
            http_client(paynow_protocol.HTTP_CLIENT_KEY),
        ),
    )
    return CheckoutOut.of(result), 201 if result.created else 200
