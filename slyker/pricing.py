"""Price rules: every cart line is priced from the catalog (never from the browser), and
promotions are checked and applied here, for the cart view and for checkout alike.

Pure functions over catalog rows and promotion terms; a refusal is a domain error
(:class:`~slyker.services.errors.InvalidInput`), which the HTTP layer maps to a 400."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from slyker.models.billing import (
    BillingCycle,
    DiscountType,
    DomainProduct,
    HostingProduct,
    Service,
)
from slyker.money import ZERO, cents
from slyker.services.errors import InvalidInput
from slyker.validation import MAX_MONEY, whole_number

DOMAIN_YEARS = (1, 2, 3, 5, 10)
MAX_DOMAIN_YEARS = 100  # beyond any registry's; only DOMAIN_YEARS are priced
DOMAIN_ACTIONS = ("registration", "transfer", "renewal")
MAX_QUANTITY = 100
# CartItem.service_name and InvoiceItem.description: "Domain registration: " and a domain
# name of 253 characters do not fit; the whole name stays in the line's service_metadata.
SERVICE_NAME_LENGTH = 255
_DOMAIN_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")


def hosting_cycle_price(product: HostingProduct, cycle: BillingCycle) -> Decimal | None:
    return getattr(product, f"{cycle.value}_price")  # type: ignore[no-any-return]


def domain_registration_price(product: DomainProduct, years: int) -> Decimal | None:
    if years not in DOMAIN_YEARS:
        return None
    return getattr(product, f"registration_price_{years}yr")  # type: ignore[no-any-return]


def fit(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters, with an ellipsis when it was cut."""
    return text if len(text) <= length else text[: length - 1] + "\u2026"


@dataclass
class PricedLine:
    """What a cart line will hold: its price and description come from the catalog."""

    unit_price: Decimal
    service_name: str
    service_category: str
    product_type: str
    billing_cycle: str
    service_metadata: dict[str, Any] = field(default_factory=dict)
    setup_fee: Decimal = ZERO  # the one-off part of unit_price


def price_hosting(product: HostingProduct, billing_cycle: str | None) -> PricedLine:
    try:
        cycle = BillingCycle(billing_cycle or "")
    except ValueError:
        choices = ", ".join(c.value for c in BillingCycle)
        raise InvalidInput("billing_cycle", f"must be one of {choices}.") from None
    price = hosting_cycle_price(product, cycle)
    if price is None:
        raise InvalidInput("billing_cycle", f"{product.name} is not offered {cycle.value}.")
    # The setup fee is charged once per hosting account, so it belongs to the unit price.
    return PricedLine(
        unit_price=cents(price + product.setup_fee),
        service_name=product.name,
        service_category="hosting",
        product_type=str(product.hosting_type),
        billing_cycle=cycle.value,
        setup_fee=cents(product.setup_fee),
    )


def _domain_years(metadata: dict[str, Any], billing_cycle: str | None) -> int:
    raw = metadata.get("registration_years")
    if raw is None and billing_cycle:
        match = re.fullmatch(r"([0-9]{1,3})yr", billing_cycle)
        raw = 1 if billing_cycle == "annual" else (match.group(1) if match else None)
    if raw is None:
        raw = 1
    # ASCII digits only, bounded: int() takes "٣" and raises on "²" or 4300+ digits.
    years = whole_number(raw, maximum=MAX_DOMAIN_YEARS)
    if years is None:
        raise InvalidInput("registration_years", "must be a whole number of years.")
    return years


def price_domain(
    product: DomainProduct, metadata: dict[str, Any], billing_cycle: str | None
) -> PricedLine:
    action = metadata.get("action", "registration")
    if action not in DOMAIN_ACTIONS:
        raise InvalidInput("action", f"must be one of {', '.join(DOMAIN_ACTIONS)}.")
    name = str(metadata.get("domain_name", "")).strip().lower().rstrip(".")
    if not _DOMAIN_NAME.fullmatch(name) or not name.endswith(product.tld):
        raise InvalidInput("domain_name", f"must be a valid domain name ending in {product.tld}.")
    years = _domain_years(metadata, billing_cycle)
    if action == "transfer":
        if not str(metadata.get("epp_code", "")).strip():
            raise InvalidInput("epp_code", "is required to transfer a domain.")
        years, base = 1, product.transfer_price
    elif action == "renewal":
        if years not in DOMAIN_YEARS:
            raise InvalidInput("registration_years", f"must be one of {DOMAIN_YEARS}.")
        base = product.renewal_price * years
    else:
        price = domain_registration_price(product, years)
        if price is None:
            raise InvalidInput(
                "registration_years", f"{product.tld} is not offered for {years} year(s)."
            )
        base = price
    privacy = bool(metadata.get("whois_privacy"))
    unit = base + (product.whois_privacy_price * years if privacy else ZERO)
    return PricedLine(
        unit_price=cents(unit),
        service_name=fit(f"Domain {action}: {name}", SERVICE_NAME_LENGTH),
        service_category="domain",
        product_type="domain",
        billing_cycle="annual" if years == 1 else f"{years}yr",
        service_metadata={
            **metadata,
            "action": action,
            "domain_name": name,
            "registration_years": years,
            "whois_privacy": privacy,
        },
    )


def price_service(service: Service) -> PricedLine:
    return PricedLine(
        unit_price=cents(service.price),
        service_name=service.name,
        service_category=service.category,
        product_type=service.category,
        billing_cycle=service.billing_cycle,
    )


class PromotionTerms(Protocol):
    """What the coupon rules read of a promotion: a :class:`~slyker.models.billing.Promotion`,
    or the same columns read along with a cart (``slyker.services.carts.CouponTerms``)."""

    code: str
    discount_type: DiscountType | str
    discount_value: Decimal
    start_date: datetime | None
    end_date: datetime | None
    is_active: bool
    usage_limit: int | None
    usage_count: int
    minimum_order_amount: Decimal
    product_types: list[str]


@dataclass(frozen=True)
class Line:
    """The part of a cart or invoice line that totals and discounts need."""

    product_type: str
    unit_price: Decimal
    quantity: int

    @property
    def total(self) -> Decimal:
        return cents(self.unit_price * self.quantity)


def subtotal(lines: Sequence[Line]) -> Decimal:
    return cents(sum((line.total for line in lines), ZERO))


def too_large(lines: Sequence[Line], tax_rate: Decimal) -> str | None:
    """Why these lines cannot become an invoice (a money column holds at most
    ``MAX_MONEY``: a unit price, a line, the subtotal and the total with tax), or None."""
    for line in lines:
        if line.unit_price > MAX_MONEY or line.total > MAX_MONEY:
            return f"a line may come to at most {MAX_MONEY:,.2f}."
    amount = subtotal(lines)
    if amount > MAX_MONEY or cents(amount + amount * tax_rate / 100) > MAX_MONEY:
        return f"the order may come to at most {MAX_MONEY:,.2f} with tax."
    return None


def promotion_problem(
    promotion: PromotionTerms, lines: Sequence[Line], now: datetime | None = None
) -> str | None:
    """Why ``promotion`` cannot apply to these lines now, or None if it can."""
    now = now or datetime.now(UTC)
    if not promotion.is_active:
        return "This coupon is not active."
    if promotion.start_date and now < promotion.start_date:
        return "This coupon is not valid yet."
    if promotion.end_date and now > promotion.end_date:
        return "This coupon has expired."
    if promotion.usage_limit is not None and promotion.usage_count >= promotion.usage_limit:
        return "This coupon has reached its usage limit."
    if lines and subtotal(lines) < promotion.minimum_order_amount:
        return f"This coupon needs an order of at least {promotion.minimum_order_amount:.2f}."
    if lines and promotion.product_types and not _eligible(promotion, lines):
        return "This coupon does not apply to the items in your cart."
    return None


def _eligible(promotion: PromotionTerms, lines: Sequence[Line]) -> list[Line]:
    if not promotion.product_types:
        return list(lines)
    types = {str(kind).lower() for kind in promotion.product_types}
    return [line for line in lines if line.product_type.lower() in types]


def discount(promotion: PromotionTerms, lines: Sequence[Line]) -> Decimal:
    base = subtotal(_eligible(promotion, lines))
    if promotion.discount_type == DiscountType.PERCENTAGE:
        amount = base * promotion.discount_value / Decimal(100)
    else:
        amount = promotion.discount_value
    return cents(min(amount, base))


def discount_description(promotion: PromotionTerms) -> str:
    if promotion.discount_type == DiscountType.PERCENTAGE:
        return f"{promotion.discount_value.normalize():f}% off ({promotion.code})"
    return f"{promotion.discount_value:.2f} off ({promotion.code})"
