"""No bad input reaches a 500, whatever the endpoint: each class of input that used to crash
a view or the database is refused once, in a shared place, with a 400 naming the field.
Runs on SQLite, and on PostgreSQL with SLYKER_TEST_DATABASE=postgres (where NUL, lone
surrogates and numbers past int4/numeric(12,2) are database errors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from quart import Quart

from slyker.models.accounts import Role
from slyker.models.billing import Cart, CartStatus, HostingProduct, Invoice
from slyker.validation import MAX_INT, MAX_JSON_DEPTH
from tests.api import API, Reply, assert_error, db, make_user, seed_catalog, token_for

CARTS = "/api/billing/carts"
HOSTING = {"hosting_product": 1, "billing_cycle": "monthly"}  # Starter Shared: 2.99
DOMAIN = {
    "domain_product": 1,  # .com
    "service_metadata": {"action": "registration", "domain_name": "example.com"},
}
CHECKOUT = {
    "billing_info": {"full_name": "Tariro Moyo", "email": "tariro@example.com"},
    "payment_method": "bank",
}


@pytest.fixture
async def shop(app: Quart, cheap_password_hashing: None) -> Quart:
    await seed_catalog(app)
    return app


async def send_raw(
    api: API, method: str, path: str, body: bytes, token: str | None = None
) -> Reply:
    """A body exactly as given, declared JSON."""
    headers = {"Content-Type": "application/json", "Origin": str(api.origin)}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = await api.client.open(path, method=method, data=body, headers=headers)
    return Reply(response.status_code, await response.get_json(), response.headers)


def assert_field_error(reply: Reply, field: str, message: str) -> None:
    assert_error(reply, 400, "invalid", f"{field}: {message}")
    assert reply.body["errors"][field] == [message], reply.body


async def cart_of(api: API, token: str | None = None) -> int:
    reply = await api.get(f"{CARTS}/current/", token=token)
    assert reply.status == 200, reply.body
    return int(reply.body["id"])


# --- JSON bodies: one parser for every endpoint ---------------------------------------------

CREDENTIALS = {"email": "a@b.io", "password": "correct horse battery"}


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(CREDENTIALS).encode("utf-16"),  # with a BOM
        json.dumps(CREDENTIALS).encode("utf-16-le"),
        json.dumps(CREDENTIALS).encode("utf-32"),
        '{"email": "café@b.io", "password": "x"}'.encode("latin-1"),
        b"\xff\xfe\x00",
        b'{"email": "\xed\xa0\x80@b.io", "password": "x"}',  # a surrogate encoded as UTF-8
    ],
)
async def test_a_body_that_is_not_utf8_is_a_400(shop: Quart, body: bytes) -> None:
    reply = await send_raw(API(shop), "POST", "/api/token/", body)
    assert_error(reply, 400, "invalid_json", "Request body is not UTF-8 encoded JSON.")


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,  # RecursionError in json.loads
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"email": "a@b.io", "password": "x", "x": '
        + "[" * MAX_JSON_DEPTH
        + "]" * MAX_JSON_DEPTH
        + "}",  # one level more than allowed
    ],
)
async def test_deeply_nested_json_is_a_400(shop: Quart, body: str) -> None:
    reply = await send_raw(API(shop), "POST", "/api/token/", body.encode())
    assert_error(
        reply, 400, "invalid_json", f"Request body is nested more than {MAX_JSON_DEPTH} levels"
    )


async def test_brackets_inside_strings_do_not_count_as_nesting(shop: Quart) -> None:
    body = {"email": "[{" * 60 + "@b.io", "password": '\\"[' * 40}
    reply = await send_raw(API(shop), "POST", "/api/token/", json.dumps(body).encode())
    assert reply.status == 401, reply.body  # parsed, and simply not a user's credentials


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"hosting_product": NaN}', "Request body has NaN, which is not a JSON number."),
        ('{"quantity": Infinity}', "Request body has Infinity, which is not a JSON number."),
        ('{"quantity": -Infinity}', "Request body has -Infinity, which is not a JSON number."),
        ('{"quantity": 1' + "0" * 5000 + "}", "Request body has a number too long to read."),
        ('{"quantity": 1', "Request body is not valid JSON."),
    ],
)
async def test_numbers_json_does_not_have_are_a_400(shop: Quart, body: str, message: str) -> None:
    browser = API(shop)
    cart = await cart_of(browser)
    reply = await send_raw(browser, "POST", f"{CARTS}/{cart}/add_item/", body.encode())
    assert_error(reply, 400, "invalid_json", message)
    assert reply.error == message


NUL = "must not contain NUL characters"
SURROGATE = "must not contain unpaired surrogate characters"


@pytest.mark.parametrize(
    ("text", "message"),
    [("a\x00@b.io", NUL), ("a\ud800@b.io", SURROGATE), ("\udfffa@b.io", SURROGATE)],
)
async def test_nul_and_lone_surrogates_in_any_json_string_are_a_400(
    shop: Quart, text: str, message: str
) -> None:
    """The measured 500s on PostgreSQL: a login, a registration, a profile change."""
    api = API(shop)
    login = await api.post("/api/token/", {"email": text, "password": "x"})
    assert_field_error(login, "email", message)
    register = await api.post(
        "/api/accounts/register/",
        {"email": "new@example.com", "password": "long enough", "first_name": text},
    )
    assert_field_error(register, "first_name", message)
    token = await token_for(shop, api, "client@example.com")
    patched = await api.call("PATCH", "/api/accounts/users/me/", {"city": text}, token=token)
    assert_field_error(patched, "city", message)
    assert (await api.get("/api/accounts/users/me/", token=token)).body["city"] == ""


async def test_text_that_only_looks_like_it_is_accepted(shop: Quart) -> None:
    """An escaped backslash before ``u0000`` is text, and an escaped surrogate pair is one
    character (an emoji): neither is refused."""
    api = API(shop)
    for email in ("a\\u0000@b.io", "\U0001f600@b.io"):
        reply = await api.post("/api/token/", {"email": email, "password": "x"})
        assert reply.status == 401, reply.body  # parsed and checked: simply no such user


async def test_the_first_bad_field_in_document_order_is_named(shop: Quart) -> None:
    api = API(shop)
    body = {"email": "a\x00@b.io", "password": "\ud800"}
    assert_field_error(await api.post("/api/token/", body), "email", NUL)
    body = {"password": "\ud800", "email": "a\x00@b.io"}
    assert_field_error(await api.post("/api/token/", body), "password", SURROGATE)


async def test_bad_text_is_named_where_it_is_nested_and_in_keys(shop: Quart) -> None:
    browser = API(shop)
    cart = await cart_of(browser)
    deep = {**DOMAIN, "service_metadata": {"nameservers": ["ns1.a.com", "ns2\ud800"]}}
    reply = await browser.post(f"{CARTS}/{cart}/add_item/", deep)
    assert_field_error(reply, "service_metadata.nameservers.1", SURROGATE)
    keyed = await browser.post(f"{CARTS}/{cart}/add_item/", {**HOSTING, "\x00": 1})
    assert_field_error(keyed, "\ufffd", NUL)  # the field named, without the NUL itself
    assert (await browser.get(f"{CARTS}/{cart}/")).body["item_count"] == 0


async def test_endpoints_that_read_json_themselves_are_covered_too(shop: Quart) -> None:
    """A staff PATCH of a promotion reads the body without quart-schema."""
    api = API(shop)
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    reply = await api.call(
        "PATCH", "/api/billing/promotions/1/", {"description": "x\x00"}, token=staff
    )
    assert_field_error(reply, "description", NUL)
    reset = await api.post("/api/accounts/password-reset/", {"email": "a\ud800@b.io"})
    assert_field_error(reset, "email", SURROGATE)


# --- query strings, paths, headers ----------------------------------------------------------

PUBLIC_LISTS = ["/api/services/hosting-products/", "/api/services/domain-products/"]
CLIENT_LISTS = [
    "/api/billing/invoices/",
    "/api/billing/payments/",
    "/api/services/subscriptions/",
    "/api/services/domain-registrations/",
]
STAFF_LISTS = ["/api/billing/promotions/", "/api/livechat/sessions/"]
NOT_NUMBERS = ["²", "٣", "-1", "0", "000", "1e3", " 1", "1.0", "0x10"]
HUGE_NUMBERS = ["1" * 5000, str(2**63), str(MAX_INT + 1), "0" * 5000 + "1" * 20]


async def test_page_and_page_size_are_ascii_whole_numbers_of_any_length(shop: Quart) -> None:
    api = API(shop)
    client = await token_for(shop, api, "client@example.com")
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    lists = [(p, None) for p in PUBLIC_LISTS] + [(p, client) for p in CLIENT_LISTS]
    lists += [(p, staff) for p in STAFF_LISTS]
    for path, token in lists:
        for name in ("page", "page_size"):
            for value in NOT_NUMBERS:
                reply = await api.get(f"{path}?{name}={quote(value)}", token=token)
                assert_error(reply, 400, "bad_request", f"{name}: must be a positive whole")
        for value in HUGE_NUMBERS:  # past the end; the largest page size
            assert_error(await api.get(f"{path}?page={value}", token=token), 404, "not_found")
            sized = await api.get(f"{path}?page_size={value}", token=token)
            assert sized.status == 200 and sized.body["next"] is None, sized.body
        assert (await api.get(f"{path}?page=0001", token=token)).status == 200


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("slug=a%00b", "slug", NUL),
        ("hosting_type=%00", "hosting_type", NUL),
        ("page=1%00", "page", NUL),
        ("%00=1", "\ufffd", NUL),
    ],
)
async def test_nul_in_a_query_string_is_a_400(
    shop: Quart, query: str, field: str, message: str
) -> None:
    reply = await API(shop).get(f"/api/services/hosting-products/?{query}")
    assert_field_error(reply, field, message)


async def test_nul_in_a_query_string_is_refused_for_signed_in_callers_too(shop: Quart) -> None:
    api = API(shop)
    client = await token_for(shop, api, "client@example.com")
    reply = await api.get("/api/billing/invoices/?status=paid%00", token=client)
    assert_field_error(reply, "status", NUL)


async def test_nul_in_a_path_segment_is_a_400(shop: Quart) -> None:
    for path in ("/api/services/hosting-products/%00/", "/api/billing/carts/current%00/"):
        reply = await API(shop).get(path)
        assert_field_error(reply, "path", NUL)


@pytest.mark.parametrize("token", ["a\x00" * 20, "x" * 40 + "\x00", "\u00e9" * 40, "1" * 5000])
async def test_a_cart_token_that_is_not_one_is_ignored(shop: Quart, token: str) -> None:
    browser = API(shop, cookies=False)
    reply = await browser.get(f"{CARTS}/current/", headers={"X-Cart-Token": token})
    assert reply.status == 200, reply.body
    assert reply.headers["X-Cart-Token"] != token  # a new anonymous cart, not that one


# --- whole numbers in bodies ----------------------------------------------------------------


async def test_every_integer_a_request_takes_is_bounded_in_its_schema(
    app_factory: Callable[..., Quart],
) -> None:
    """Every integer in a request body, query string or path of /openapi.json has bounds a
    PostgreSQL INTEGER holds: pydantic refuses anything else with a 400 naming the field.
    Except the domain search's ``max_workers``, which is only ever capped by a setting
    (``min``): a huge one means "as many as allowed" (test_domains)."""
    app = app_factory(API_DOCS=True)  # /openapi.json is served only with the docs on
    schema = await (await app.test_client().get("/openapi.json")).get_json()
    components = schema.get("components", {}).get("schemas", {})
    found: list[str] = []
    followed: set[str] = set()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer" and not where.startswith(UNBOUNDED_ON_PURPOSE):
                found.append(where)
                assert node.get("maximum", float("inf")) <= MAX_INT, (where, node)
                assert node.get("minimum", float("-inf")) >= -MAX_INT - 1, (where, node)
            reference = node.get("$ref")
            if isinstance(reference, str) and reference not in followed:
                followed.add(reference)
                name = reference.rsplit("/", 1)[1]
                walk(components.get(name, schema.get("$defs", {}).get(name)), name)
            for key, child in node.items():
                walk(child, f"{where}.{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{where}.{index}")

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            walk(operation.get("parameters"), f"{method} {path} parameters")
            walk(operation.get("requestBody"), f"{method} {path} body")
    assert len(found) > 30, found


UNBOUNDED_ON_PURPOSE = (
    "post /api/services/whois/check/ body.content.application/json.schema.properties.max_workers."
)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("cart add_item", {**HOSTING, "quantity": 2**63}, "quantity"),
        ("cart add_item", {**HOSTING, "hosting_product": 2**64}, "hosting_product"),
        ("cart add_item", {"service": MAX_INT + 1}, "service"),
    ],
)
async def test_integers_past_int4_in_bodies_are_a_400(
    shop: Quart, path: str, body: dict[str, Any], field: str
) -> None:
    browser = API(shop)
    if path == "cart add_item":
        path = f"{CARTS}/{await cart_of(browser)}/add_item/"
    reply = await browser.post(path, body)
    assert_error(reply, 400, "invalid", f"{field}: ")


@pytest.mark.parametrize(
    "years", ["²", "٣", "9" * 4000, "0x10", "1.5", -1, 1.5, True, [2], {"n": 2}]
)
async def test_registration_years_are_ascii_whole_numbers(shop: Quart, years: Any) -> None:
    browser = API(shop)
    cart = await cart_of(browser)
    metadata = {**DOMAIN["service_metadata"], "registration_years": years}
    reply = await browser.post(
        f"{CARTS}/{cart}/add_item/", {**DOMAIN, "service_metadata": metadata}
    )
    assert_error(reply, 400, "invalid", "registration_years: ")
    assert (await browser.get(f"{CARTS}/{cart}/")).body["item_count"] == 0


async def test_registration_years_as_a_string_of_digits_still_work(shop: Quart) -> None:
    browser = API(shop)
    cart = await cart_of(browser)
    metadata = {**DOMAIN["service_metadata"], "registration_years": "2"}
    reply = await browser.post(
        f"{CARTS}/{cart}/add_item/", {**DOMAIN, "service_metadata": metadata}
    )
    assert reply.status == 201, reply.body
    assert reply.body["items"][0]["unit_price"] == "25.49"
    assert reply.body["items"][0]["billing_cycle"] == "2yr"


# --- money past numeric(12, 2) --------------------------------------------------------------

TOO_LARGE_LINE = "quantity: too large: a line may come to at most 9,999,999,999.99."
TOO_LARGE_ORDER = "quantity: too large: the order may come to at most 9,999,999,999.99 with tax."


async def set_price(app: Quart, product_id: int, monthly: str, setup: str = "0") -> None:
    with db(app):
        await HostingProduct.filter(id=product_id).update(
            monthly_price=Decimal(monthly), setup_fee=Decimal(setup)
        )


async def test_a_line_past_numeric_12_2_is_refused_at_add_item(shop: Quart) -> None:
    browser = API(shop)
    cart = await cart_of(browser)
    await set_price(shop, 1, "5000000000.00")
    twice = await browser.post(f"{CARTS}/{cart}/add_item/", {**HOSTING, "quantity": 2})
    assert_error(twice, 400, "invalid", TOO_LARGE_LINE)
    await set_price(shop, 1, "9999999999.99", setup="0.01")  # the unit price itself overflows
    unit = await browser.post(f"{CARTS}/{cart}/add_item/", HOSTING)
    assert_error(unit, 400, "invalid", TOO_LARGE_LINE)
    assert (await browser.get(f"{CARTS}/{cart}/")).body["item_count"] == 0


async def test_the_cart_total_past_numeric_12_2_is_refused_at_add_and_update(
    shop: Quart,
) -> None:
    browser = API(shop)
    cart = await cart_of(browser)
    await set_price(shop, 1, "4000000000.00")
    first = await browser.post(f"{CARTS}/{cart}/add_item/", HOSTING)
    second = await browser.post(f"{CARTS}/{cart}/add_item/", HOSTING)
    assert first.status == 201 and second.status == 201, second.body
    third = await browser.post(f"{CARTS}/{cart}/add_item/", HOSTING)
    assert_error(third, 400, "invalid", TOO_LARGE_ORDER)
    item = second.body["items"][1]["id"]
    more = await browser.call(
        "PATCH", f"{CARTS}/{cart}/update_item/", {"item_id": item, "quantity": 2}
    )
    assert_error(more, 400, "invalid", TOO_LARGE_ORDER)
    body = (await browser.get(f"{CARTS}/{cart}/")).body
    assert [line["quantity"] for line in body["items"]] == [1, 1]
    assert body["total"] == 8_000_000_000.00


async def test_tax_counts_towards_the_total(app_factory: Any, cheap_password_hashing: None) -> None:
    from tests.conftest import prepare_database

    app = app_factory(TAX_RATE="15")
    async with app.test_app():
        await prepare_database(app)
        await seed_catalog(app)
        browser = API(app)
        cart = await cart_of(browser)
        await set_price(app, 1, "9000000000.00")  # 10,350,000,000.00 with 15 % tax
        reply = await browser.post(f"{CARTS}/{cart}/add_item/", HOSTING)
        assert_error(reply, 400, "invalid", TOO_LARGE_ORDER)


async def test_a_price_rise_past_numeric_12_2_is_a_400_at_checkout(shop: Quart) -> None:
    """Prices may rise between add_item and checkout: the invoice is refused with a 400,
    never written as a database error, and the cart stays open."""
    browser = API(shop)
    await make_user(shop, "client@example.com")
    token = await browser.login("client@example.com")
    cart = await cart_of(browser, token)
    await set_price(shop, 1, "6000000000.00")
    added = await browser.post(f"{CARTS}/{cart}/add_item/", HOSTING, token=token)
    assert added.status == 201, added.body
    await set_price(shop, 1, "9999999999.99", setup="5000000000.00")
    reply = await browser.post(f"{CARTS}/{cart}/checkout/", CHECKOUT, token=token)
    assert_error(reply, 400, "invalid", "items: too large: a line may come to at most")
    with db(shop):
        assert await Invoice.all().count() == 0
        assert (await Cart.get(id=cart)).status == CartStatus.ACTIVE
    await set_price(shop, 1, "2.99")
    assert (await browser.post(f"{CARTS}/{cart}/checkout/", CHECKOUT, token=token)).status == 201


# --- text a column cannot hold, made from valid input ---------------------------------------


async def test_the_longest_domain_name_fits_a_cart_line_and_an_invoice(shop: Quart) -> None:
    """ "Domain registration: " and a 253-character name made a 274-character line name
    (tortoise refuses it on both databases: a 500)."""
    browser = API(shop)
    await make_user(shop, "client@example.com")
    token = await browser.login("client@example.com")
    cart = await cart_of(browser, token)
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57]) + ".com"
    metadata = {"action": "registration", "domain_name": name}
    reply = await browser.post(
        f"{CARTS}/{cart}/add_item/",
        {"domain_product": 1, "service_metadata": metadata},
        token=token,
    )
    assert reply.status == 201, reply.body
    line = reply.body["items"][0]
    assert len(line["service_name"]) == 255
    assert line["service_name"].startswith("Domain registration: aaa")
    assert line["service_name"].endswith("\u2026")
    assert line["service_metadata"]["domain_name"] == name  # the whole name is kept
    checkout = await browser.post(f"{CARTS}/{cart}/checkout/", CHECKOUT, token=token)
    assert checkout.status == 201, checkout.body


# --- dates at the ends of the calendar --------------------------------------------------------

DATE_RANGE = "must be between 1900-01-01 and 2999-12-31"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            "/api/billing/promotions/",
            {"start_date": "0001-01-01T00:00:00+14:00"},
            "start_date",
        ),
        ("POST", "/api/billing/promotions/", {"end_date": "9999-12-31T23:59:59-14:00"}, "end_date"),
        ("PATCH", "/api/billing/promotions/1/", {"end_date": "9999-12-31"}, "end_date"),
        ("PATCH", "/api/billing/promotions/1/", {"start_date": "1899-12-31"}, "start_date"),
        (
            "POST",
            "/api/billing/invoices/",
            {"issue_date": "9999-12-31"},  # + INVOICE_DUE_DAYS overflowed
            "issue_date",
        ),
        ("POST", "/api/billing/invoices/", {"due_date": "0001-01-01"}, "due_date"),
    ],
)
async def test_dates_outside_the_billing_range_are_a_400(
    shop: Quart, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    api = API(shop)
    await make_user(shop, "client@example.com")
    staff = await token_for(shop, api, "staff@example.com", Role.STAFF)
    if path == "/api/billing/promotions/":
        body = {"name": "Far", "code": "FAR", "discount_type": "fixed", "discount_value": 1, **body}
    elif path == "/api/billing/invoices/":
        body = {"user": 1, "items": [{"description": "x", "unit_price": "1.00"}], **body}
    reply = await api.call(method, path, body, token=staff)
    assert_field_error(reply, field, DATE_RANGE)
    with db(shop):
        assert await Invoice.all().count() == 0
