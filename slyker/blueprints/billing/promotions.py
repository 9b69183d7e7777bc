"""Promotions (coupons): the public list of current offers, code validation, staff CRUD."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from quart import Blueprint
from quart_rate_limiter import rate_limit
from quart_schema import (
    RequestSchemaValidationError,
    validate_querystring,
    validate_request,
    validate_response,
)
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from slyker.auth import current_user, staff_required
from slyker.blueprints.billing.limits import COUPON_CHECKS
from slyker.contracts import NO_CONTENT, IsoDateTime, Money, NoContent, Page
from slyker.errors import APIError, invalid
from slyker.models.billing import DiscountType, Promotion
from slyker.pagination import PageQuery, paginate
from slyker.pricing import promotion_problem
from slyker.services.carts import coupon_refusal, find_promotion
from slyker.validation import MAX_INT, NO_NUL, Moment

blueprint = Blueprint("promotions", __name__, url_prefix="/api/billing/promotions")


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


class PromotionOut(BaseModel):
    id: int
    name: str
    code: str
    description: str
    discount_type: str
    discount_value: Money
    start_date: IsoDateTime | None
    end_date: IsoDateTime | None
    is_active: bool
    usage_limit: int | None
    usage_count: int
    minimum_order_amount: Money
    product_types: list[str]
    is_public: bool
    max_uses_per_customer: int | None

    @classmethod
    def from_row(cls, promotion: Promotion) -> Self:
        return cls(
            id=promotion.id,
            name=promotion.name,
            code=promotion.code,
            description=promotion.description,
            discount_type=str(promotion.discount_type),
            discount_value=promotion.discount_value,
            start_date=promotion.start_date,
            end_date=promotion.end_date,
            is_active=promotion.is_active,
            usage_limit=promotion.usage_limit,
            usage_count=promotion.usage_count,
            minimum_order_amount=promotion.minimum_order_amount,
            product_types=promotion.product_types,
            is_public=promotion.is_public,
            max_uses_per_customer=promotion.max_uses_per_customer,
        )

    @classmethod
    def of_rows(cls, promotions: list[Promotion]) -> list[Self]:
        return [cls.from_row(promotion) for promotion in promotions]


class _Valid(BaseModel):
    valid: bool = True


class ValidCode(PromotionOut, _Valid):
    """A usable code: ``valid`` (true) first, then the promotion."""


def _all_optional(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s fields with their checks, each optional (``None`` when left out)."""
    fields: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        kind: Any = field.annotation
        if field.metadata:
            kind = Annotated[(kind, *field.metadata)]
        fields[name] = (kind | None, None)
    return fields


class _JSONObject(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def must_be_an_object(cls, value: Any) -> Any:
        if not isinstance(value, dict):  # the answer a PATCH has always given
            raise invalid("non_field_errors", "send a JSON object.")
        return value


# PATCH: the fields of the create body, each one optional; what is sent is merged into the
# stored promotion and the result validated as a whole (PromotionIn).
PromotionPatch = create_model(  # type: ignore[call-overload]
    "PromotionPatch", __base__=_JSONObject, **_all_optional(PromotionIn)
)


def _currently_valid() -> Any:
    now = datetime.now(UTC)
    return Promotion.filter(is_active=True).filter(
        Q(start_date__isnull=True) | Q(start_date__lte=now),
        Q(end_date__isnull=True) | Q(end_date__gte=now),
    )


@blueprint.get("/active/")
@validate_response(list[PromotionOut])
async def active_promotions() -> list[PromotionOut]:
    """Public promotions (``is_public``) valid now and not used up (a bare array); private
    codes are never listed."""
    promotions = await _currently_valid().filter(is_public=True).order_by("id")
    return [PromotionOut.from_row(p) for p in promotions if promotion_problem(p, []) is None]


@blueprint.post("/validate_code/")
@rate_limit(limits=[COUPON_CHECKS])
@validate_request(CodeIn)
@validate_response(ValidCode)
async def validate_code(data: CodeIn) -> ValidCode:
    """Check a code (case-insensitive) without applying it: 200 with the promotion, or 400
    saying why it cannot be used (for a signed-in client, also when they have used it up).
    Order-dependent rules are checked when applied to a cart. At most
    ``COUPON_CHECKS_PER_MINUTE`` per client address, shared with ``apply_coupon`` (429)."""
    promotion = await find_promotion(data.code)
    user = current_user()
    problem = await coupon_refusal(promotion, [], user.id if user is not None else None)
    if problem is not None:
        raise invalid("code", problem)
    return ValidCode.from_row(promotion)


@blueprint.get("/")
@staff_required
@validate_querystring(PageQuery)
@validate_response(Page[PromotionOut])
async def list_promotions(query_args: PageQuery) -> dict[str, Any]:
    """Staff: every promotion, paginated."""
    return await paginate(Promotion.all().order_by("id"), PromotionOut.from_row, query_args)


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
@validate_response(PromotionOut, 201)
async def create_promotion(data: PromotionIn) -> tuple[PromotionOut, int]:
    """Staff: create a promotion (codes are stored upper-case)."""
    return PromotionOut.from_row(await _save(data.model_dump())), 201


@blueprint.get("/<int:promotion_id>/")
@staff_required
@validate_response(PromotionOut)
async def get_promotion(promotion_id: int) -> PromotionOut:
    """Staff: one promotion."""
    return PromotionOut.from_row(await _promotion(promotion_id))


@blueprint.put("/<int:promotion_id>/")
@staff_required
@validate_request(PromotionIn)
@validate_response(PromotionOut)
async def update_promotion(promotion_id: int, data: PromotionIn) -> PromotionOut:
    """Staff: replace a promotion (its usage count is kept)."""
    promotion = await _save(data.model_dump(), await _promotion(promotion_id))
    return PromotionOut.from_row(promotion)


def _as_input(promotion: Promotion) -> dict[str, Any]:
    """A promotion's current values, as the fields of :class:`PromotionIn`."""
    return {name: getattr(promotion, name) for name in PromotionIn.model_fields}


@blueprint.patch("/<int:promotion_id>/")
@staff_required
@validate_request(PromotionPatch)
@validate_response(PromotionOut)
async def patch_promotion(promotion_id: int, data: BaseModel) -> PromotionOut:
    """Staff: change only the fields sent (the fields of the create body; e.g.
    ``{"is_active": false}``). The result is validated as a whole: a new ``start_date``
    must still be before the stored ``end_date``."""
    promotion = await _promotion(promotion_id)
    sent = {name: getattr(data, name) for name in data.model_fields_set}
    try:
        merged = PromotionIn.model_validate({**_as_input(promotion), **sent})
    except ValidationError as error:
        raise RequestSchemaValidationError(error) from None
    return PromotionOut.from_row(await _save(merged.model_dump(), promotion))


@blueprint.delete("/<int:promotion_id>/")
@staff_required
@validate_response(NoContent, 204)
async def deactivate_promotion(promotion_id: int) -> tuple[NoContent, int]:
    """Staff: deactivate a promotion (kept for the invoices that used it)."""
    promotion = await _promotion(promotion_id)
    await Promotion.filter(id=promotion.id).update(is_active=False)
    return NO_CONTENT, 204
