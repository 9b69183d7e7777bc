"""Promotions (coupons): the public list of current offers, code validation, staff CRUD."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from quart import Blueprint, request
from quart_rate_limiter import rate_limit
from quart_schema import RequestSchemaValidationError, document_querystring, validate_request
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from slyker.auth import current_user, staff_required
from slyker.blueprints.billing.carts import COUPON_CHECKS, customer_problem
from slyker.errors import APIError, invalid
from slyker.models.billing import DiscountType, Promotion
from slyker.money import as_string
from slyker.pagination import PageQuery, paginate
from slyker.pricing import promotion_problem
from slyker.validation import MAX_INT, NO_NUL, Moment

blueprint = Blueprint("promotions", __name__, url_prefix="/api/billing/promotions")


def promotion_json(promotion: Promotion) -> dict[str, Any]:
    return {
        "id": promotion.id,
        "name": promotion.name,
        "code": promotion.code,
        "description": promotion.description,
        "discount_type": str(promotion.discount_type),
        "discount_value": as_string(promotion.discount_value),
        "start_date": promotion.start_date.isoformat() if promotion.start_date else None,
        "end_date": promotion.end_date.isoformat() if promotion.end_date else None,
        "is_active": promotion.is_active,
        "usage_limit": promotion.usage_limit,
        "usage_count": promotion.usage_count,
        "minimum_order_amount": as_string(promotion.minimum_order_amount),
        "product_types": promotion.product_types,
        "is_public": promotion.is_public,
        "max_uses_per_customer": promotion.max_uses_per_customer,
    }


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day_start(value: Any) -> Any:
    """A bare date (what the staff page's date input sends) starts at 00:00 UTC."""
    if isinstance(value, str) and _DAY.fullmatch(value):
        return datetime.combine(date.fromisoformat(value), time.min, tzinfo=UTC)
    return value


def _day_end(value: Any) -> Any:
    """A bare end date includes that whole day (UTC)."""
    if isinstance(value, str) and _DAY.fullmatch(value):
        return datetime.combine(date.fromisoformat(value), time.max, tzinfo=UTC)
    return value


class PromotionIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200), NO_NUL]
    code: str = Field(pattern=r"^[A-Za-z0-9_-]{3,50}$")
    description: Annotated[str, Field(max_length=10_000), NO_NUL] = ""
    discount_type: DiscountType
    discount_value: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    start_date: Annotated[Moment, BeforeValidator(_day_start)] | None = None
    end_date: Annotated[Moment, BeforeValidator(_day_end)] | None = None
    is_active: bool = True
    usage_limit: int | None = Field(default=None, ge=1, le=MAX_INT)
    minimum_order_amount: Decimal = Field(
        default=Decimal("0"), ge=0, max_digits=12, decimal_places=2
    )
    product_types: list[Annotated[str, Field(max_length=50), NO_NUL]] = Field(
        default_factory=list, max_length=20
    )
    # Listed publicly by /active/. The storefront's staff page does not send it yet and
    # expects what it creates to be listed: created public unless told otherwise.
    is_public: bool = True
    # Uses per customer; null: unlimited.
    max_uses_per_customer: int | None = Field(default=1, ge=1, le=MAX_INT)

    @field_validator("discount_value")
    @classmethod
    def percentage_at_most_100(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        if info.data.get("discount_type") == DiscountType.PERCENTAGE and value > 100:
            raise ValueError("a percentage discount cannot exceed 100")
        return value

    @field_validator("end_date")
    @classmethod
    def ends_after_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start_date")
        if value is not None and start is not None and value <= start:
            raise ValueError("must be after start_date")
        return value


class CodeIn(BaseModel):
    code: str = Field(min_length=1, max_length=50)


def _currently_valid() -> Any:
    now = datetime.now(UTC)
    return Promotion.filter(is_active=True).filter(
        Q(start_date__isnull=True) | Q(start_date__lte=now),
        Q(end_date__isnull=True) | Q(end_date__gte=now),
    )


@blueprint.get("/active/")
async def active_promotions() -> list[dict[str, Any]]:
    """Public promotions (``is_public``) valid now and not used up (a bare array); private
    codes are never listed."""
    promotions = await _currently_valid().filter(is_public=True).order_by("id")
    return [promotion_json(p) for p in promotions if promotion_problem(p, []) is None]


@blueprint.post("/validate_code/")
@rate_limit(limits=[COUPON_CHECKS])
@validate_request(CodeIn)
async def validate_code(data: CodeIn) -> dict[str, Any]:
    """Check a code (case-insensitive) without applying it: 200 with the promotion, or 400
    saying why it cannot be used (for a signed-in client, also when they have used it up).
    Order-dependent rules are checked when applied to a cart. At most
    ``COUPON_CHECKS_PER_MINUTE`` per client address, shared with ``apply_coupon`` (429)."""
    promotion = await Promotion.get_or_none(code=data.code.strip().upper())
    if promotion is None:
        raise invalid("code", "Invalid coupon code.")
    problem = promotion_problem(promotion, [])
    user = current_user()
    if problem is None and user is not None:
        problem = await customer_problem(promotion, user.id)
    if problem is not None:
        raise invalid("code", problem)
    return {"valid": True, **promotion_json(promotion)}


@blueprint.get("/")
@document_querystring(PageQuery)
@staff_required
async def list_promotions() -> dict[str, Any]:
    """Staff: every promotion, paginated."""
    return await paginate(Promotion.all().order_by("id"), promotion_json)


async def _save(values: dict[str, Any], promotion: Promotion | None = None) -> Promotion:
    values["code"] = values["code"].upper()
    try:
        if promotion is None:
            return await Promotion.create(**values)
        # Only the edited fields: a checkout counting a use meanwhile must not be undone.
        await promotion.update_from_dict(values).save(update_fields=list(values))
        return promotion
    except IntegrityError:
        raise APIError(
            409, "code: This code already exists.", code="code_taken", errors={"code": ["exists"]}
        ) from None


async def _promotion(promotion_id: int) -> Promotion:
    promotion = await Promotion.get_or_none(id=promotion_id)
    if promotion is None:
        raise APIError(404, "Promotion not found.")
    return promotion


@blueprint.post("/")
@staff_required
@validate_request(PromotionIn)
async def create_promotion(data: PromotionIn) -> tuple[dict[str, Any], int]:
    """Staff: create a promotion (codes are stored upper-case)."""
    return promotion_json(await _save(data.model_dump())), 201


@blueprint.get("/<int:promotion_id>/")
@staff_required
async def get_promotion(promotion_id: int) -> dict[str, Any]:
    """Staff: one promotion."""
    return promotion_json(await _promotion(promotion_id))


@blueprint.put("/<int:promotion_id>/")
@staff_required
@validate_request(PromotionIn)
async def update_promotion(promotion_id: int, data: PromotionIn) -> dict[str, Any]:
    """Staff: replace a promotion (its usage count is kept)."""
    return promotion_json(await _save(data.model_dump(), await _promotion(promotion_id)))


def _as_input(promotion: Promotion) -> dict[str, Any]:
    """A promotion's current values, as the fields of :class:`PromotionIn`."""
    return {name: getattr(promotion, name) for name in PromotionIn.model_fields}


@blueprint.patch("/<int:promotion_id>/")
@staff_required
async def patch_promotion(promotion_id: int) -> dict[str, Any]:
    """Staff: change only the fields sent (the fields of the create body; e.g.
    ``{"is_active": false}``). The result is validated as a whole: a new ``start_date``
    must still be before the stored ``end_date``."""
    body = await request.get_json()
    if not isinstance(body, dict):
        raise invalid("non_field_errors", "send a JSON object.")
    promotion = await _promotion(promotion_id)
    try:
        data = PromotionIn.model_validate({**_as_input(promotion), **body})
    except ValidationError as error:
        raise RequestSchemaValidationError(error) from None
    return promotion_json(await _save(data.model_dump(), promotion))


@blueprint.delete("/<int:promotion_id>/")
@staff_required
async def deactivate_promotion(promotion_id: int) -> tuple[str, int]:
    """Staff: deactivate a promotion (kept for the invoices that used it)."""
    promotion = await _promotion(promotion_id)
    await Promotion.filter(id=promotion.id).update(is_active=False)
    return "", 204
