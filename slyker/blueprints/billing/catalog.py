"""The catalog: hosting and domain products (public read, staff write), and the price
rules every cart line is priced by: the catalog, never the browser."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator
from quart import Blueprint, current_app
from quart.blueprints import BlueprintSetupState
from quart_schema import validate_querystring, validate_request, validate_response
from tortoise.exceptions import IntegrityError
from tortoise.models import Model

from slyker.auth import current_user, staff_required
from slyker.contracts import NO_CONTENT, Money, NoContent, Page
from slyker.errors import APIError
from slyker.models.billing import BillingCycle, DomainProduct, HostingProduct, HostingType
from slyker.pagination import PageQuery, first_value, page_of
from slyker.pricing import DOMAIN_YEARS, domain_registration_price, hosting_cycle_price
from slyker.redis_client import current_redis
from slyker.services.catalog_cache import CatalogCache
from slyker.validation import MAX_INT, NO_NUL, query_choice

blueprint = Blueprint("catalog", __name__, url_prefix="/api/services")

Price = Field(default=None, ge=0, max_digits=12, decimal_places=2)


# What the plan pages print. Disk space and bandwidth are in MB (the pages show value / 1024
# GB); 0 is "unlimited" for disk, bandwidth, e-mail accounts, databases and subdomains.
SPEC_COUNTS = (
    "disk_space",
    "bandwidth",
    "email_accounts",
    "databases",
    "ftp_accounts",
    "subdomains",
    "addon_domains",
    "parked_domains",
)
SPEC_FLAGS = (
    "ssl_certificate",
    "dedicated_ip",
    "cpanel_access",
    "ssh_access",
    "cron_jobs",
    "backups_included",
)


class HostingProductOut(BaseModel):
    """A hosting plan. A null price: that billing cycle is not offered."""

    id: int
    name: str
    slug: str | None
    description: str
    hosting_type: str
    disk_space: int = Field(description="MB; 0: unlimited")
    bandwidth: int = Field(description="MB per month; 0: unlimited")
    email_accounts: int
    databases: int
    ftp_accounts: int
    subdomains: int
    addon_domains: int
    parked_domains: int
    ssl_certificate: bool
    dedicated_ip: bool
    cpanel_access: bool
    ssh_access: bool
    cron_jobs: bool
    backups_included: bool
    cpu_cores: int | None
    ram_gb: int | None
    cpu_type: str
    storage_type: str
    monthly_price: Money | None
    quarterly_price: Money | None
    semi_annual_price: Money | None
    annual_price: Money | None
    biennial_price: Money | None
    triennial_price: Money | None
    setup_fee: Money
    is_featured: bool
    is_active: bool

    @classmethod
    def from_row(cls, product: HostingProduct) -> HostingProductOut:
        return cls(
            id=product.id,
            name=product.name,
            slug=product.slug,
            description=product.description,
            hosting_type=str(product.hosting_type),
            **{name: getattr(product, name) for name in SPEC_COUNTS},
            **{name: getattr(product, name) for name in SPEC_FLAGS},
            cpu_cores=product.cpu_cores,
            ram_gb=product.ram_gb,
            cpu_type=product.cpu_type,
            storage_type=product.storage_type,
            **{f"{c.value}_price": hosting_cycle_price(product, c) for c in BillingCycle},
            setup_fee=product.setup_fee,
            is_featured=product.is_featured,
            is_active=product.is_active,
        )


class DomainProductOut(BaseModel):
    """A TLD and its prices. A null registration price: not sold for that many years."""

    id: int
    tld: str
    registration_price_1yr: Money | None
    registration_price_2yr: Money | None
    registration_price_3yr: Money | None
    registration_price_5yr: Money | None
    registration_price_10yr: Money | None
    renewal_price: Money
    transfer_price: Money
    whois_privacy_price: Money
    is_active: bool

    @classmethod
    def from_row(cls, product: DomainProduct) -> DomainProductOut:
        return cls(
            id=product.id,
            tld=product.tld,
            **{
                f"registration_price_{years}yr": domain_registration_price(product, years)
                for years in DOMAIN_YEARS
            },
            renewal_price=product.renewal_price,
            transfer_price=product.transfer_price,
            whois_privacy_price=product.whois_privacy_price,
            is_active=product.is_active,
        )


Count = Annotated[int, Field(ge=0, le=MAX_INT)]
_SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


class HostingProductIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200), NO_NUL]
    # Made from the name when left out (on a replace: the product keeps its slug).
    slug: Annotated[str, Field(max_length=200, pattern=_SLUG)] | None = None
    description: Annotated[str, Field(max_length=10_000), NO_NUL] = ""
    hosting_type: HostingType
    is_featured: bool = False
    disk_space: Count = 0  # MB; 0: unlimited
    bandwidth: Count = 0  # MB per month; 0: unlimited
    email_accounts: Count = 0
    databases: Count = 0
    ftp_accounts: Count = 0
    subdomains: Count = 0
    addon_domains: Count = 0
    parked_domains: Count = 0
    ssl_certificate: bool = False
    dedicated_ip: bool = False
    cpanel_access: bool = False
    ssh_access: bool = False
    cron_jobs: bool = False
    backups_included: bool = False
    cpu_cores: Annotated[int, Field(ge=1, le=1024)] | None = None
    ram_gb: Annotated[int, Field(ge=1, le=65_536)] | None = None
    cpu_type: Annotated[str, Field(max_length=100), NO_NUL] = ""
    storage_type: Literal["", "SSD", "NVMe", "HDD"] = ""
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


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:190] or "plan"


async def _free_slug(name: str) -> str:
    """A slug from ``name`` that no product has yet (``plan``, ``plan-2``, ...)."""
    base = slugify(name)
    taken = set(await HostingProduct.filter(slug__startswith=base).values_list("slug", flat=True))
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


async def _save_hosting(
    data: HostingProductIn, product: HostingProduct | None = None
) -> HostingProduct:
    values = data.model_dump()
    if values["slug"] is None:
        if product is not None and product.slug:
            values["slug"] = product.slug
        else:
            values["slug"] = await _free_slug(data.name)
    try:
        if product is None:
            return await HostingProduct.create(**values)
        await product.update_from_dict(values).save()
        return product
    except IntegrityError:
        raise APIError(
            409, "slug: This slug is taken.", code="slug_taken", errors={"slug": ["exists"]}
        ) from None


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


CACHE_KEY = "slyker.catalog_cache"


@blueprint.record_once
def _create_catalog_cache(state: BlueprintSetupState) -> None:
    state.app.extensions[CACHE_KEY] = CatalogCache()


def catalog_cache() -> CatalogCache:
    return current_app.extensions[CACHE_KEY]  # type: ignore[no-any-return]


async def catalog_changed() -> None:
    """After any write of a product: lists are read again (here at once, in other workers
    within a second; see slyker.services.catalog_cache)."""
    await catalog_cache().invalidate(current_redis())


async def _all_hosting_products() -> list[HostingProductOut]:
    return [HostingProductOut.from_row(p) for p in await HostingProduct.all().order_by("id")]


async def _all_domain_products() -> list[DomainProductOut]:
    return [DomainProductOut.from_row(p) for p in await DomainProduct.all().order_by("id")]


def _caller_is_staff() -> bool:
    user = current_user()
    return user is not None and user.is_staff


class HostingQuery(PageQuery):
    hosting_type: Annotated[HostingType | None, query_choice(HostingType)] = None
    slug: Annotated[str | None, BeforeValidator(first_value)] = Field(default=None, max_length=200)


@blueprint.get("/hosting-products/")
@validate_querystring(HostingQuery)
@validate_response(Page[HostingProductOut])
async def list_hosting_products(query_args: HostingQuery) -> dict[str, Any]:
    """Hosting products (active ones only, unless the caller is staff), paginated;
    ``?hosting_type=shared|vps|dedicated|cloud|reseller`` and ``?slug=`` filter. Served
    from a per-process cache that staff writes clear."""
    products = await catalog_cache().get("hosting", _all_hosting_products, current_redis())
    staff = _caller_is_staff()
    kind, slug = query_args.hosting_type, query_args.slug
    selected = [
        product
        for product in products
        if (staff or product.is_active)
        and (kind is None or product.hosting_type == kind)
        and (not slug or product.slug == slug)
    ]
    return page_of(selected, query_args)


@blueprint.get("/hosting-products/<int:product_id>/")
@validate_response(HostingProductOut)
async def get_hosting_product(product_id: int) -> HostingProductOut:
    """One hosting product."""
    return HostingProductOut.from_row(await _get_visible(HostingProduct, product_id))


@blueprint.post("/hosting-products/")
@staff_required
@validate_request(HostingProductIn)
@validate_response(HostingProductOut, 201)
async def create_hosting_product(data: HostingProductIn) -> tuple[HostingProductOut, int]:
    """Staff: add a hosting product. A null price means the cycle is not offered; 409 if the
    slug is taken."""
    product = await _save_hosting(data)
    await catalog_changed()
    return HostingProductOut.from_row(product), 201


@blueprint.put("/hosting-products/<int:product_id>/")
@staff_required
@validate_request(HostingProductIn)
@validate_response(HostingProductOut)
async def update_hosting_product(product_id: int, data: HostingProductIn) -> HostingProductOut:
    """Staff: replace a hosting product (without a ``slug`` it keeps its own)."""
    product = await _get_visible(HostingProduct, product_id)
    product = await _save_hosting(data, product)
    await catalog_changed()
    return HostingProductOut.from_row(product)


@blueprint.delete("/hosting-products/<int:product_id>/")
@staff_required
@validate_response(NoContent, 204)
async def deactivate_hosting_product(product_id: int) -> tuple[NoContent, int]:
    """Staff: withdraw a product from sale (it stays on past carts and invoices)."""
    product = await _get_visible(HostingProduct, product_id)
    await HostingProduct.filter(id=product.id).update(is_active=False)
    await catalog_changed()
    return NO_CONTENT, 204


@blueprint.get("/domain-products/")
@validate_querystring(PageQuery)
@validate_response(Page[DomainProductOut])
async def list_domain_products(query_args: PageQuery) -> dict[str, Any]:
    """Domain products (TLDs) with registration, renewal, transfer and privacy prices.
    Served from a per-process cache that staff writes clear."""
    products = await catalog_cache().get("domains", _all_domain_products, current_redis())
    staff = _caller_is_staff()
    return page_of([p for p in products if staff or p.is_active], query_args)


@blueprint.get("/domain-products/<int:product_id>/")
@validate_response(DomainProductOut)
async def get_domain_product(product_id: int) -> DomainProductOut:
    """One domain product."""
    return DomainProductOut.from_row(await _get_visible(DomainProduct, product_id))


@blueprint.post("/domain-products/")
@staff_required
@validate_request(DomainProductIn)
@validate_response(DomainProductOut, 201)
async def create_domain_product(data: DomainProductIn) -> tuple[DomainProductOut, int]:
    """Staff: add a TLD (409 if it exists)."""
    product = await _save_domain(data.model_dump())
    await catalog_changed()
    return DomainProductOut.from_row(product), 201


@blueprint.put("/domain-products/<int:product_id>/")
@staff_required
@validate_request(DomainProductIn)
@validate_response(DomainProductOut)
async def update_domain_product(product_id: int, data: DomainProductIn) -> DomainProductOut:
    """Staff: replace a domain product."""
    product = await _get_visible(DomainProduct, product_id)
    product = await _save_domain(data.model_dump(), product)
    await catalog_changed()
    return DomainProductOut.from_row(product)


@blueprint.delete("/domain-products/<int:product_id>/")
@staff_required
@validate_response(NoContent, 204)
async def deactivate_domain_product(product_id: int) -> tuple[NoContent, int]:
    """Staff: withdraw a TLD from sale."""
    product = await _get_visible(DomainProduct, product_id)
    await DomainProduct.filter(id=product.id).update(is_active=False)
    await catalog_changed()
    return NO_CONTENT, 204
