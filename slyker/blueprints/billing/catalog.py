"""The catalog: hosting and domain products (public read, staff write), and the price
rules every cart line is priced by: the catalog, never the browser."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, field_validator
from quart import Blueprint
from quart_schema import validate_request
from tortoise.exceptions import IntegrityError
from tortoise.models import Model

from slyker.auth import current_user, staff_required
from slyker.errors import APIError
from slyker.models.billing import BillingCycle, DomainProduct, HostingProduct, HostingType
from slyker.money import as_string
from slyker.pagination import paginate
from slyker.pricing import DOMAIN_YEARS, domain_registration_price, hosting_cycle_price

blueprint = Blueprint("catalog", __name__, url_prefix="/api/services")

Price = Field(default=None, ge=0, max_digits=12, decimal_places=2)


def _money_or_none(value: Decimal | None) -> str | None:
    return None if value is None else as_string(value)


def hosting_json(product: HostingProduct) -> dict[str, Any]:
    return {
        "id": product.id,
        "name": product.name,
        "description": product.description,
        "hosting_type": str(product.hosting_type),
        **{
            f"{c.value}_price": _money_or_none(hosting_cycle_price(product, c))
            for c in BillingCycle
        },
        "setup_fee": as_string(product.setup_fee),
        "is_active": product.is_active,
    }


def domain_json(product: DomainProduct) -> dict[str, Any]:
    return {
        "id": product.id,
        "tld": product.tld,
        **{
            f"registration_price_{years}yr": _money_or_none(
                domain_registration_price(product, years)
            )
            for years in DOMAIN_YEARS
        },
        "renewal_price": as_string(product.renewal_price),
        "transfer_price": as_string(product.transfer_price),
        "whois_privacy_price": as_string(product.whois_privacy_price),
        "is_active": product.is_active,
    }


class HostingProductIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    hosting_type: HostingType
    monthly_price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    quarterly_price: Decimal | None = Price
    semi_annual_price: Decimal | None = Price
    annual_price: Decimal | None = Price
    biennial_price: Decimal | None = Price
    triennial_price: Decimal | None = Price
    setup_fee: Decimal = Field(default=Decimal("0"), ge=0, max_digits=12, decimal_places=2)
    is_active: bool = True


_TLD_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = re.compile(rf"\.{_TLD_LABEL}(?:\.{_TLD_LABEL})*", re.ASCII)


class DomainProductIn(BaseModel):
    tld: str = Field(max_length=63)
    registration_price_1yr: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    registration_price_2yr: Decimal | None = Price
    registration_price_3yr: Decimal | None = Price
    registration_price_5yr: Decimal | None = Price
    registration_price_10yr: Decimal | None = Price
    renewal_price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    transfer_price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    whois_privacy_price: Decimal = Field(
        default=Decimal("0"), ge=0, max_digits=12, decimal_places=2
    )
    is_active: bool = True

    @field_validator("tld")
    @classmethod
    def normalise_tld(cls, value: str) -> str:
        """``COM``, ``.com`` → ``.com``; labels as in DNS names; at most 63 characters."""
        tld = "." + value.strip().lower().lstrip(".")
        if len(tld) > 63 or not _TLD.fullmatch(tld):
            raise ValueError("must be a top-level domain such as .com or .co.zw")
        return tld


def _visible(model: type[Model]) -> Any:
    user = current_user()
    queryset = model.all()
    return queryset if user is not None and user.is_staff else queryset.filter(is_active=True)


async def _get_visible(model: type[Model], product_id: int) -> Any:
    product = await _visible(model).get_or_none(id=product_id)
    if product is None:
        raise APIError(404, "Product not found.")
    return product


async def _save_domain(
    values: dict[str, Any], product: DomainProduct | None = None
) -> DomainProduct:
    try:
        if product is None:
            return await DomainProduct.create(**values)
        await product.update_from_dict(values).save()
        return product
    except IntegrityError:
        raise APIError(
            409, "tld: This TLD already exists.", code="tld_taken", errors={"tld": ["exists"]}
        ) from None


@blueprint.get("/hosting-products/")
async def list_hosting_products() -> dict[str, Any]:
    """Hosting products (active ones only, unless the caller is staff), paginated."""
    return await paginate(_visible(HostingProduct).order_by("id"), hosting_json)


@blueprint.get("/hosting-products/<int:product_id>/")
async def get_hosting_product(product_id: int) -> dict[str, Any]:
    """One hosting product."""
    return hosting_json(await _get_visible(HostingProduct, product_id))


@blueprint.post("/hosting-products/")
@staff_required
@validate_request(HostingProductIn)
async def create_hosting_product(data: HostingProductIn) -> tuple[dict[str, Any], int]:
    """Staff: add a hosting product. A null price means the cycle is not offered."""
    return hosting_json(await HostingProduct.create(**data.model_dump())), 201


@blueprint.put("/hosting-products/<int:product_id>/")
@staff_required
@validate_request(HostingProductIn)
async def update_hosting_product(product_id: int, data: HostingProductIn) -> dict[str, Any]:
    """Staff: replace a hosting product."""
    product = await _get_visible(HostingProduct, product_id)
    await product.update_from_dict(data.model_dump()).save()
    return hosting_json(product)


@blueprint.delete("/hosting-products/<int:product_id>/")
@staff_required
async def deactivate_hosting_product(product_id: int) -> tuple[str, int]:
    """Staff: withdraw a product from sale (it stays on past carts and invoices)."""
    product = await _get_visible(HostingProduct, product_id)
    await HostingProduct.filter(id=product.id).update(is_active=False)
    return "", 204


@blueprint.get("/domain-products/")
async def list_domain_products() -> dict[str, Any]:
    """Domain products (TLDs) with registration, renewal, transfer and privacy prices."""
    return await paginate(_visible(DomainProduct).order_by("id"), domain_json)


@blueprint.get("/domain-products/<int:product_id>/")
async def get_domain_product(product_id: int) -> dict[str, Any]:
    """One domain product."""
    return domain_json(await _get_visible(DomainProduct, product_id))


@blueprint.post("/domain-products/")
@staff_required
@validate_request(DomainProductIn)
async def create_domain_product(data: DomainProductIn) -> tuple[dict[str, Any], int]:
    """Staff: add a TLD (409 if it exists)."""
    return domain_json(await _save_domain(data.model_dump())), 201


@blueprint.put("/domain-products/<int:product_id>/")
@staff_required
@validate_request(DomainProductIn)
async def update_domain_product(product_id: int, data: DomainProductIn) -> dict[str, Any]:
    """Staff: replace a domain product."""
    product = await _get_visible(DomainProduct, product_id)
    return domain_json(await _save_domain(data.model_dump(), product))


@blueprint.delete("/domain-products/<int:product_id>/")
@staff_required
async def deactivate_domain_product(product_id: int) -> tuple[str, int]:
    """Staff: withdraw a TLD from sale."""
    product = await _get_visible(DomainProduct, product_id)
    await DomainProduct.filter(id=product.id).update(is_active=False)
    return "", 204
