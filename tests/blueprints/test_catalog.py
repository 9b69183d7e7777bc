"""The catalog: hosting and domain products, public read (active ones only unless staff),
staff write. Runs on SQLite, and on PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart

from slyker.blueprints.billing.catalog import CACHE_KEY
from slyker.models.accounts import Role
from slyker.models.billing import DomainProduct, HostingProduct
from slyker.redis_client import EXTENSION_KEY as REDIS_KEY
from tests.api import API, assert_error, db, seed_catalog, token_for

HOSTING = "/api/services/hosting-products"
DOMAINS = "/api/services/domain-products"
HOSTING_FIELDS = (
    "id",
    "name",
    "hosting_type",
    "monthly_price",
    "quarterly_price",
    "semi_annual_price",
    "annual_price",
    "biennial_price",
    "triennial_price",
)
DOMAIN_FIELDS = (
    "id",
    "tld",
    "registration_price_1yr",
    "registration_price_2yr",
    "registration_price_3yr",
    "registration_price_5yr",
    "registration_price_10yr",
    "renewal_price",
    "transfer_price",
    "whois_privacy_price",
)
NEW_HOSTING: dict[str, Any] = {
    "name": "Cloud Max",
    "description": "8 vCPU",
    "hosting_type": "cloud",
    "monthly_price": "49.5",
    "annual_price": 499,
    "setup_fee": "0",
}
NEW_DOMAIN: dict[str, Any] = {
    "tld": "XYZ",
    "registration_price_1yr": "1.99",
    "registration_price_2yr": "13.5",
    "renewal_price": "12.99",
    "transfer_price": 11,
}

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


@pytest.fixture
async def shop(app: Quart) -> Quart:
    await seed_catalog(app)
    return app


async def deactivate(
    app: Quart, model: type[HostingProduct] | type[DomainProduct], pk: int
) -> None:
    with db(app):
        assert await model.filter(id=pk).update(is_active=False) == 1
    # A write that bypasses the API says so, as the catalog's own writes do (the lists are
    # cached per process).
    await app.extensions[CACHE_KEY].invalidate(app.extensions[REDIS_KEY])


# --- public lists ------------------------------------------------------------------------


async def test_hosting_list_shape_and_money_strings(shop: Quart) -> None:
    reply = await API(shop).get(f"{HOSTING}/")
    assert reply.status == 200
    assert set(reply.body) == {"count", "next", "previous", "results"}
    assert reply.body["count"] == 6 and reply.body["next"] is None
    assert reply.body["previous"] is None
    results = reply.body["results"]
    assert [p["id"] for p in results] == [1, 2, 3, 4, 5, 6]
    for product in results:
        for field in HOSTING_FIELDS:
            assert field in product
    starter, _, vps = results[0], results[1], results[2]
    assert starter["name"] == "Starter Shared" and starter["hosting_type"] == "shared"
    assert starter["monthly_price"] == "2.99"
    assert starter["quarterly_price"] == "8.49"
    assert starter["semi_annual_price"] == "16.49"
    assert starter["annual_price"] == "29.99"
    assert starter["biennial_price"] == "55.99"
    assert starter["triennial_price"] == "79.99"
    assert starter["setup_fee"] == "0.00" and starter["is_active"] is True
    assert vps["name"] == "VPS 2 GB" and vps["hosting_type"] == "vps"
    assert vps["monthly_price"] == "12.00" and vps["setup_fee"] == "10.00"
    assert vps["biennial_price"] is None and vps["triennial_price"] is None
    cloud = results[3]
    assert cloud["quarterly_price"] is None and cloud["semi_annual_price"] is None
    assert cloud["annual_price"] == "199.00"


async def test_domain_list_shape_and_money_strings(shop: Quart) -> None:
    reply = await API(shop).get(f"{DOMAINS}/")
    assert reply.status == 200
    assert set(reply.body) == {"count", "next", "previous", "results"}
    assert reply.body["count"] == 4
    results = reply.body["results"]
    assert [p["tld"] for p in results] == [".com", ".co.zw", ".net", ".org"]
    for product in results:
        for field in DOMAIN_FIELDS:
            assert field in product
    com, cozw = results[0], results[1]
    assert com == {
        "id": 1,
        "tld": ".com",
        "registration_price_1yr": "12.99",
        "registration_price_2yr": "25.49",
        "registration_price_3yr": "37.99",
        "registration_price_5yr": "62.99",
        "registration_price_10yr": "124.99",
        "renewal_price": "14.99",
        "transfer_price": "12.99",
        "whois_privacy_price": "4.99",
        "is_active": True,
    }
    assert cozw["registration_price_3yr"] is None
    assert cozw["registration_price_5yr"] is None
    assert cozw["registration_price_10yr"] is None
    assert cozw["whois_privacy_price"] == "0.00"


async def test_empty_catalog_is_an_empty_page(app: Quart) -> None:
    for path in (HOSTING, DOMAINS):
        reply = await API(app).get(f"{path}/")
        assert reply.status == 200
        assert reply.body == {"count": 0, "next": None, "previous": None, "results": []}


async def test_pagination_links_and_page_size(shop: Quart) -> None:
    api = API(shop)
    first = await api.get(f"{HOSTING}/?page_size=4")
    assert first.status == 200
    assert first.body["count"] == 6
    assert [p["id"] for p in first.body["results"]] == [1, 2, 3, 4]
    assert first.body["previous"] is None
    assert first.body["next"].endswith(f"{HOSTING}/?page_size=4&page=2")

    second = await api.get(first.body["next"].split("localhost", 1)[1])
    assert second.status == 200
    assert second.body["count"] == 6
    assert [p["id"] for p in second.body["results"]] == [5, 6]
    assert second.body["next"] is None
    assert second.body["previous"].endswith(f"{HOSTING}/?page_size=4&page=1")

    exact = await api.get(f"{DOMAINS}/?page=2&page_size=2")
    assert [p["tld"] for p in exact.body["results"]] == [".net", ".org"]
    assert exact.body["next"] is None
    assert exact.body["previous"].endswith(f"{DOMAINS}/?page=1&page_size=2")

    capped = await api.get(f"{HOSTING}/?page_size=1000")  # capped at 100, not an error
    assert capped.status == 200 and len(capped.body["results"]) == 6


@pytest.mark.parametrize("query", ["page=0", "page=abc", "page=-1", "page=1.5", "page_size=0"])
async def test_bad_page_parameters_are_400(shop: Quart, query: str) -> None:
    name = query.split("=", 1)[0]
    for path in (HOSTING, DOMAINS):
        reply = await API(shop).get(f"{path}/?{query}")
        assert_error(reply, 400, "bad_request", f"{name}: ")


async def test_page_past_the_end_is_404(shop: Quart) -> None:
    api = API(shop)
    assert_error(await api.get(f"{HOSTING}/?page=2"), 404, "not_found")
    assert_error(await api.get(f"{DOMAINS}/?page=3&page_size=2"), 404, "not_found")


async def test_non_ascii_digit_page_is_400_not_500(shop: Quart) -> None:
    # "²".isdigit() is True but int("²") raises: the page check must not crash.
    reply = await API(shop).get(f"{HOSTING}/?page=%C2%B2")
    assert_error(reply, 400, "bad_request", "page: ")


async def test_huge_page_number_is_404_not_500(shop: Quart) -> None:
    reply = await API(shop).get(f"{HOSTING}/?page={10**30}")
    assert_error(reply, 404, "not_found")


# --- visibility --------------------------------------------------------------------------


async def test_inactive_products_hidden_from_anonymous_and_clients(shop: Quart) -> None:
    await deactivate(shop, HostingProduct, 2)
    await deactivate(shop, DomainProduct, 3)
    api = API(shop)
    client = await token_for(shop, api, "client@example.com")
    for token in (None, client):
        hosting = await api.get(f"{HOSTING}/", token=token)
        assert hosting.body["count"] == 5
        assert [p["id"] for p in hosting.body["results"]] == [1, 3, 4, 5, 6]
        domains = await api.get(f"{DOMAINS}/", token=token)
        assert domains.body["count"] == 3
        assert [p["tld"] for p in domains.body["results"]] == [".com", ".co.zw", ".org"]
        assert_error(await api.get(f"{HOSTING}/2/", token=token), 404, "not_found")
        assert_error(await api.get(f"{DOMAINS}/3/", token=token), 404, "not_found")


async def test_staff_see_inactive_products(shop: Quart) -> None:
    await deactivate(shop, HostingProduct, 2)
    await deactivate(shop, DomainProduct, 3)
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    hosting = await api.get(f"{HOSTING}/", token=staff)
    assert hosting.body["count"] == 6
    assert hosting.body["results"][1]["is_active"] is False
    domains = await api.get(f"{DOMAINS}/", token=staff)
    assert domains.body["count"] == 4
    one = await api.get(f"{HOSTING}/2/", token=staff)
    assert one.status == 200 and one.body["is_active"] is False
    tld = await api.get(f"{DOMAINS}/3/", token=staff)
    assert tld.status == 200 and tld.body["tld"] == ".net" and tld.body["is_active"] is False


async def test_get_one_product(shop: Quart) -> None:
    api = API(shop)
    hosting = await api.get(f"{HOSTING}/3/")
    assert hosting.status == 200
    assert hosting.body["name"] == "VPS 2 GB" and hosting.body["monthly_price"] == "12.00"
    domain = await api.get(f"{DOMAINS}/2/")
    assert domain.status == 200 and domain.body["tld"] == ".co.zw"
    assert_error(await api.get(f"{HOSTING}/999/"), 404, "not_found")
    assert_error(await api.get(f"{DOMAINS}/999/"), 404, "not_found")


# --- staff writes: hosting ---------------------------------------------------------------


async def test_staff_create_update_delete_hosting(shop: Quart) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    created = await api.post(f"{HOSTING}/", NEW_HOSTING, token=staff)
    assert created.status == 201, created.body
    product = created.body
    assert product["id"] == 7
    assert product["name"] == "Cloud Max" and product["hosting_type"] == "cloud"
    assert product["monthly_price"] == "49.50" and product["annual_price"] == "499.00"
    assert product["quarterly_price"] is None and product["triennial_price"] is None
    assert product["setup_fee"] == "0.00" and product["is_active"] is True
    listed = await api.get(f"{HOSTING}/")
    assert listed.body["count"] == 7 and listed.body["results"][-1] == product

    changed = await api.call(
        "PUT",
        f"{HOSTING}/7/",
        {**NEW_HOSTING, "monthly_price": "45", "biennial_price": "899.99"},
        token=staff,
    )
    assert changed.status == 200, changed.body
    assert changed.body["monthly_price"] == "45.00"
    assert changed.body["biennial_price"] == "899.99"
    assert (await api.get(f"{HOSTING}/7/")).body == changed.body

    deleted = await api.call("DELETE", f"{HOSTING}/7/", token=staff)
    assert deleted.status == 204 and deleted.body is None
    with db(shop):
        kept = await HostingProduct.get(id=7)  # deactivated, not deleted
    assert kept.is_active is False
    assert_error(await api.get(f"{HOSTING}/7/"), 404, "not_found")
    assert (await api.get(f"{HOSTING}/")).body["count"] == 6
    staff_view = await api.get(f"{HOSTING}/7/", token=staff)
    assert staff_view.status == 200 and staff_view.body["is_active"] is False


async def test_staff_writes_to_unknown_product_are_404(shop: Quart) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    assert_error(
        await api.call("PUT", f"{HOSTING}/999/", NEW_HOSTING, token=staff), 404, "not_found"
    )
    assert_error(await api.call("DELETE", f"{HOSTING}/999/", token=staff), 404, "not_found")
    assert_error(
        await api.call("PUT", f"{DOMAINS}/999/", NEW_DOMAIN, token=staff), 404, "not_found"
    )
    assert_error(await api.call("DELETE", f"{DOMAINS}/999/", token=staff), 404, "not_found")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"hosting_type": "castle"}, "hosting_type"),
        ({"monthly_price": "-1"}, "monthly_price"),
        ({"monthly_price": "abc"}, "monthly_price"),
        ({"monthly_price": None}, "monthly_price"),
        ({"annual_price": "-0.01"}, "annual_price"),
        ({"quarterly_price": "1.234"}, "quarterly_price"),
        ({"setup_fee": "-5"}, "setup_fee"),
    ],
)
async def test_invalid_hosting_body_is_400_naming_the_field(
    shop: Quart, change: dict[str, Any], field: str
) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    for method, path in (("POST", f"{HOSTING}/"), ("PUT", f"{HOSTING}/1/")):
        reply = await api.call(method, path, {**NEW_HOSTING, **change}, token=staff)
        assert_error(reply, 400, "invalid", f"{field}: ")
        assert field in reply.body["errors"]
    with db(shop):
        assert await HostingProduct.all().count() == 6
        assert (await HostingProduct.get(id=1)).name == "Starter Shared"


async def test_hosting_missing_required_field_is_400(shop: Quart) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    body = {k: v for k, v in NEW_HOSTING.items() if k != "monthly_price"}
    assert_error(await api.post(f"{HOSTING}/", body, token=staff), 400, "invalid", "monthly_price")


# --- staff writes: domains ---------------------------------------------------------------


async def test_staff_create_update_delete_domain(shop: Quart) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    created = await api.post(f"{DOMAINS}/", NEW_DOMAIN, token=staff)
    assert created.status == 201, created.body
    assert created.body == {
        "id": 5,
        "tld": ".xyz",  # normalised: a leading dot, lower-case
        "registration_price_1yr": "1.99",
        "registration_price_2yr": "13.50",
        "registration_price_3yr": None,
        "registration_price_5yr": None,
        "registration_price_10yr": None,
        "renewal_price": "12.99",
        "transfer_price": "11.00",
        "whois_privacy_price": "0.00",
        "is_active": True,
    }
    assert (await api.get(f"{DOMAINS}/5/")).body == created.body

    changed = await api.call(
        "PUT",
        f"{DOMAINS}/5/",
        {**NEW_DOMAIN, "tld": ".Xyz", "registration_price_10yr": "99", "whois_privacy_price": 3},
        token=staff,
    )
    assert changed.status == 200, changed.body
    assert changed.body["tld"] == ".xyz"
    assert changed.body["registration_price_10yr"] == "99.00"
    assert changed.body["whois_privacy_price"] == "3.00"

    deleted = await api.call("DELETE", f"{DOMAINS}/5/", token=staff)
    assert deleted.status == 204 and deleted.body is None
    with db(shop):
        assert (await DomainProduct.get(id=5)).is_active is False
    assert_error(await api.get(f"{DOMAINS}/5/"), 404, "not_found")
    assert (await api.get(f"{DOMAINS}/")).body["count"] == 4


@pytest.mark.parametrize("tld", ["shop", ".SHOP", "Shop", ".shop"])
async def test_tld_is_normalised(shop: Quart, tld: str) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    reply = await api.post(f"{DOMAINS}/", {**NEW_DOMAIN, "tld": tld}, token=staff)
    assert reply.status == 201, reply.body
    assert reply.body["tld"] == ".shop"


@pytest.mark.parametrize("tld", [".COM", "com", ".com"])
async def test_duplicate_tld_is_409(shop: Quart, tld: str) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    reply = await api.post(f"{DOMAINS}/", {**NEW_DOMAIN, "tld": tld}, token=staff)
    assert_error(reply, 409, "tld_taken", "tld: ")
    assert reply.body["errors"] == {"tld": ["exists"]}
    with db(shop):
        assert await DomainProduct.all().count() == 4


async def test_renaming_a_tld_onto_another_is_409(shop: Quart) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    reply = await api.call("PUT", f"{DOMAINS}/3/", {**NEW_DOMAIN, "tld": ".ORG"}, token=staff)
    assert_error(reply, 409, "tld_taken", "tld: ")
    with db(shop):
        assert (await DomainProduct.get(id=3)).tld == ".net"
    # The product can still be saved under its own TLD afterwards.
    same = await api.call("PUT", f"{DOMAINS}/3/", {**NEW_DOMAIN, "tld": "NET"}, token=staff)
    assert same.status == 200 and same.body["tld"] == ".net"


async def test_longest_tld_without_a_dot_is_400_not_500(shop: Quart) -> None:
    # 63 characters pass the body check; normalising adds the dot: 64 > the column's 63.
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    reply = await api.post(f"{DOMAINS}/", {**NEW_DOMAIN, "tld": "a" * 63}, token=staff)
    assert_error(reply, 400, "invalid", "tld: ")
    assert "tld" in reply.body["errors"]
    with db(shop):
        assert await DomainProduct.all().count() == 4


async def test_tld_labels_cannot_start_or_end_with_a_hyphen(shop: Quart) -> None:
    # A DNS label never starts or ends with "-": such a TLD could never be sold.
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    for tld in ("-", ".-", "-com", "com-", ".co.-zw"):
        reply = await api.post(f"{DOMAINS}/", {**NEW_DOMAIN, "tld": tld}, token=staff)
        assert reply.status == 400, (tld, reply.status, reply.body)
        assert_error(reply, 400, "invalid", "tld: ")
    with db(shop):
        assert await DomainProduct.all().count() == 4


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tld": ""}, "tld"),
        ({"tld": ".co..zw"}, "tld"),
        ({"tld": "bad tld"}, "tld"),
        ({"tld": "." + "a" * 63}, "tld"),
        ({"registration_price_1yr": "-1"}, "registration_price_1yr"),
        ({"registration_price_1yr": None}, "registration_price_1yr"),
        ({"registration_price_5yr": "-3"}, "registration_price_5yr"),
        ({"renewal_price": "x"}, "renewal_price"),
        ({"transfer_price": "1.001"}, "transfer_price"),
        ({"whois_privacy_price": "-0.5"}, "whois_privacy_price"),
    ],
)
async def test_invalid_domain_body_is_400_naming_the_field(
    shop: Quart, change: dict[str, Any], field: str
) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    for method, path in (("POST", f"{DOMAINS}/"), ("PUT", f"{DOMAINS}/1/")):
        reply = await api.call(method, path, {**NEW_DOMAIN, **change}, token=staff)
        assert_error(reply, 400, "invalid", f"{field}: ")
        assert field in reply.body["errors"]
    with db(shop):
        assert await DomainProduct.all().count() == 4
        assert (await DomainProduct.get(id=1)).tld == ".com"


# --- permissions -------------------------------------------------------------------------

WRITES = [
    ("POST", f"{HOSTING}/", NEW_HOSTING),
    ("PUT", f"{HOSTING}/1/", NEW_HOSTING),
    ("DELETE", f"{HOSTING}/1/", None),
    ("POST", f"{DOMAINS}/", NEW_DOMAIN),
    ("PUT", f"{DOMAINS}/1/", NEW_DOMAIN),
    ("DELETE", f"{DOMAINS}/1/", None),
]


async def test_clients_cannot_write_the_catalog(shop: Quart) -> None:
    api = API(shop)
    client = await token_for(shop, api, "client@example.com")
    for method, path, body in WRITES:
        reply = await api.call(method, path, body, token=client)
        assert_error(reply, 403, "permission_denied")
    await assert_catalog_untouched(shop)


async def test_anonymous_cannot_write_the_catalog(shop: Quart) -> None:
    api = API(shop)
    for method, path, body in WRITES:
        reply = await api.call(method, path, body)
        assert_error(reply, 401, "not_authenticated")
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    await assert_catalog_untouched(shop)


async def test_invalid_token_on_public_list_is_401(shop: Quart) -> None:
    reply = await API(shop).get(f"{HOSTING}/", token="not-a-jwt")
    assert_error(reply, 401, "token_not_valid")


async def assert_catalog_untouched(app: Quart) -> None:
    with db(app):
        assert await HostingProduct.filter(is_active=True).count() == 6
        assert await DomainProduct.filter(is_active=True).count() == 4
        assert (await HostingProduct.get(id=1)).name == "Starter Shared"
        assert (await DomainProduct.get(id=1)).tld == ".com"


# --- the plan pages' specs ---------------------------------------------------------------

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
    "is_featured",
    "is_active",
)


def plan_card(product: dict[str, Any]) -> list[str]:
    """What services/hosting/shared/page.tsx formatFeatures prints (MB → GB, 0 unlimited)."""
    lines = []
    for field, label in (
        ("disk_space", "Storage"),
        ("bandwidth", "Bandwidth"),
    ):
        value = product[field]
        lines.append(f"Unlimited {label}" if value == 0 else f"{value // 1024} GB {label}")
    for field, label in (("email_accounts", "Email Accounts"), ("databases", "Databases")):
        value = product[field]
        lines.append(f"Unlimited {label}" if value == 0 else f"{value} {label}")
    return lines


async def test_every_product_has_the_plan_page_fields(shop: Quart) -> None:
    products = (await API(shop).get(f"{HOSTING}/")).body["results"]
    for product in products:
        for field in SPEC_COUNTS:
            value = product[field]
            assert isinstance(value, int) and not isinstance(value, bool), (field, product)
            assert value >= 0
        for field in SPEC_FLAGS:
            assert isinstance(product[field], bool), (field, product)
        assert isinstance(product["slug"], str) and product["slug"]
        assert isinstance(product["description"], str) and product["description"]
        assert product["storage_type"] in ("", "SSD", "NVMe", "HDD")
    assert len({p["slug"] for p in products}) == len(products)
    starter, business, vps, cloud, dedicated, _ = products
    assert plan_card(starter) == [
        "10 GB Storage",
        "100 GB Bandwidth",
        "10 Email Accounts",
        "5 Databases",
    ]
    assert plan_card(business)[1:] == [
        "Unlimited Bandwidth",
        "Unlimited Email Accounts",
        "Unlimited Databases",
    ]
    assert business["is_featured"] is True and starter["is_featured"] is False
    assert starter["cpu_cores"] is None and starter["ram_gb"] is None
    assert starter["ssl_certificate"] and starter["cpanel_access"]
    for server in (vps, cloud, dedicated):
        assert isinstance(server["cpu_cores"], int) and server["cpu_cores"] > 0
        assert isinstance(server["ram_gb"], int) and server["ram_gb"] > 0
        assert server["storage_type"] in ("SSD", "NVMe")
        assert server["ssh_access"] is True
    assert (vps["cpu_cores"], vps["ram_gb"], vps["storage_type"]) == (2, 2, "NVMe")
    assert vps["disk_space"] // 1024 == 50
    assert dedicated["cpu_type"] and dedicated["ram_gb"] == 32
    one = await API(shop).get(f"{HOSTING}/3/")
    assert one.body == vps


async def test_filter_by_hosting_type_and_slug(shop: Quart) -> None:
    api = API(shop)
    shared = await api.get(f"{HOSTING}/?hosting_type=shared")
    assert [p["name"] for p in shared.body["results"]] == ["Starter Shared", "Business Shared"]
    assert shared.body["count"] == 2
    dedicated = await api.get(f"{HOSTING}/?hosting_type=dedicated")
    assert [p["id"] for p in dedicated.body["results"]] == [5]
    by_slug = await api.get(f"{HOSTING}/?slug=vps-2-gb")
    assert [p["id"] for p in by_slug.body["results"]] == [3]
    assert (await api.get(f"{HOSTING}/?slug=nope")).body["count"] == 0
    assert_error(await api.get(f"{HOSTING}/?hosting_type=castle"), 400, "invalid", "hosting_type")
    await deactivate(shop, HostingProduct, 2)
    assert (await api.get(f"{HOSTING}/?hosting_type=shared")).body["count"] == 1


async def test_staff_write_specs_and_slugs(shop: Quart) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    specs = {
        "disk_space": 204800,
        "bandwidth": 0,
        "cpu_cores": 8,
        "ram_gb": 16,
        "storage_type": "NVMe",
        "ssh_access": True,
        "is_featured": True,
    }
    created = await api.post(f"{HOSTING}/", {**NEW_HOSTING, **specs}, token=staff)
    assert created.status == 201, created.body
    assert created.body["slug"] == "cloud-max"  # made from the name
    for field, value in specs.items():
        assert created.body[field] == value
    assert created.body["email_accounts"] == 0 and created.body["cron_jobs"] is False
    again = await api.post(f"{HOSTING}/", NEW_HOSTING, token=staff)
    assert again.status == 201 and again.body["slug"] == "cloud-max-2"
    # A replace without a slug keeps the product's own; an explicit one is applied.
    kept = await api.call("PUT", f"{HOSTING}/7/", NEW_HOSTING, token=staff)
    assert kept.status == 200 and kept.body["slug"] == "cloud-max"
    assert kept.body["cpu_cores"] is None  # PUT replaces the specs too
    taken = await api.call("PUT", f"{HOSTING}/7/", {**NEW_HOSTING, "slug": "vps-2-gb"}, token=staff)
    assert_error(taken, 409, "slug_taken", "slug: ")
    named = await api.post(f"{HOSTING}/", {**NEW_HOSTING, "slug": "custom-1"}, token=staff)
    assert named.status == 201 and named.body["slug"] == "custom-1"
    odd = await api.post(f"{HOSTING}/", {**NEW_HOSTING, "name": "Ünïcode ★ Plan"}, token=staff)
    assert odd.status == 201 and odd.body["slug"] == "unicode-plan"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"disk_space": -1}, "disk_space"),
        ({"disk_space": 2**31}, "disk_space"),
        ({"bandwidth": 10**30}, "bandwidth"),
        ({"email_accounts": "lots"}, "email_accounts"),
        ({"databases": 1.5}, "databases"),
        ({"cpu_cores": 0}, "cpu_cores"),
        ({"cpu_cores": 10**20}, "cpu_cores"),
        ({"ram_gb": -4}, "ram_gb"),
        ({"storage_type": "tape"}, "storage_type"),
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "x" * 201}, "slug"),
        ({"name": "Bad\x00name"}, "name"),
        ({"description": "nul\x00"}, "description"),
        ({"cpu_type": "E3\x00"}, "cpu_type"),
        ({"ssl_certificate": "maybe"}, "ssl_certificate"),
    ],
)
async def test_invalid_specs_are_400_not_500(
    shop: Quart, change: dict[str, Any], field: str
) -> None:
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    for method, path in (("POST", f"{HOSTING}/"), ("PUT", f"{HOSTING}/1/")):
        reply = await api.call(method, path, {**NEW_HOSTING, **change}, token=staff)
        assert_error(reply, 400, "invalid", f"{field}: ")
        assert field in reply.body["errors"]
    with db(shop):
        assert await HostingProduct.all().count() == 6
        assert (await HostingProduct.get(id=1)).slug == "starter-shared"
