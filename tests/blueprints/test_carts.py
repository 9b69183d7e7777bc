"""Carts and checkout: the storefront's own flows, prices from the catalog, identity,
concurrency. Runs on SQLite, and on PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal
from typing import Any

import pytest
from quart import Quart

from slyker.models.accounts import Role
from slyker.models.billing import (
    Cart,
    CartItem,
    CartStatus,
    HostingProduct,
    Invoice,
    InvoiceItem,
    Promotion,
)
from slyker.services.carts import signed_cart_token
from tests.api import API, db, make_user, seed_catalog, token_for
from tests.conftest import TEST_SECRET_KEY

CARTS = "/api/billing/carts"
HOSTING = {
    "hosting_product": 1,  # Starter Shared: annual 29.99
    "service_metadata": {"type": "shared", "region": "za", "os": "linux", "domain": "a.com"},
    "quantity": 1,
    "unit_price": 0.01,  # what a tampered browser sends: ignored
    "billing_cycle": "annual",
}
DOMAIN = {
    "domain_product": 1,  # .com: 2 years 25.49, WHOIS privacy 4.99 a year
    "service_metadata": {
        "action": "registration",
        "domain_name": "Example.com",
        "registration_years": 2,
        "whois_privacy": True,
        "auto_renew": True,
        "nameservers": ["ns1.slykertech.co.zw"],
        "with_hosting": True,
    },
    "quantity": 1,
    "unit_price": 1,
    "billing_cycle": "2yr",
}
CHECKOUT = {
    "billing_info": {
        "full_name": "Tariro Moyo",
        "email": "tariro@example.com",
        "phone": "+263 77 000 0000",
        "address": "1 Samora Machel Ave",
        "city": "Harare",
        "country": "ZW",
    },
    "payment_method": "bank",
}


@pytest.fixture
async def shop(app: Quart) -> Quart:
    await seed_catalog(app)
    return app


async def current(api: API, **kwargs: Any) -> dict[str, Any]:
    reply = await api.get(f"{CARTS}/current/", **kwargs)
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


# --- the anonymous storefront flow -------------------------------------------------------


async def test_anonymous_cart_survives_a_reload_with_the_cookie(shop: Quart) -> None:
    browser = API(shop)
    cart = await current(browser)
    assert cart["items"] == [] and cart["item_count"] == 0 and cart["status"] == "active"

    hosting = await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING)
    assert hosting.status == 201
    [line] = hosting.body["items"]
    assert line["unit_price"] == "29.99"  # the catalog's annual price, not the 0.01 sent
    assert line["total_price"] == 29.99 and isinstance(line["total_price"], float)
    assert line["service_name"] == "Starter Shared"
    assert line["service_category"] == "hosting"
    assert line["billing_cycle"] == "annual"
    assert line["service_metadata"] == HOSTING["service_metadata"]

    domain = await browser.post(f"{CARTS}/{cart['id']}/add_item/", DOMAIN)
    assert domain.status == 201
    line = domain.body["items"][1]
    assert line["unit_price"] == "35.47"  # 25.49 for two years + 2 x 4.99 privacy
    assert line["billing_cycle"] == "2yr"
    assert line["service_metadata"]["domain_name"] == "example.com"
    assert line["service_category"] == "domain"

    reloaded = await current(browser)  # the page reloads: only the cookie identifies it
    assert reloaded["id"] == cart["id"]
    assert [item["id"] for item in reloaded["items"]] == [i["id"] for i in domain.body["items"]]
    assert reloaded["item_count"] == 2
    assert reloaded["subtotal"] == reloaded["total"] == reloaded["final_total"] == 65.46
    for field in ("id", "items", "total", "item_count", "subtotal", "discount_amount",
                  "applied_coupon", "discount_description", "final_total", "status",
                  "created_at", "updated_at"):  # fmt: skip
        assert field in reloaded


async def test_cart_cookie_attributes(shop: Quart, app_factory: Any) -> None:
    reply = await API(shop).get(f"{CARTS}/current/")
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"slyker_cart={reply.headers['X-Cart-Token']};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/api/" in cookie
    assert "Secure" not in cookie  # http://localhost development
    from tests.conftest import prepare_database

    production_app = app_factory(ALLOWED_HOSTS="api.slykertech.co.zw")
    async with production_app.test_app():
        await prepare_database(production_app)
        production = await API(production_app).get(
            f"{CARTS}/current/", headers={"Host": "api.slykertech.co.zw"}
        )
    assert "Secure" in production.headers["Set-Cookie"]
    assert "X-Cart-Token" in production.headers["Access-Control-Expose-Headers"]


async def test_samesite_none_forces_secure(app_factory: Any) -> None:
    from tests.conftest import prepare_database

    app = app_factory(CART_COOKIE_SAMESITE="None")
    async with app.test_app():
        await prepare_database(app)
        reply = await API(app).get(f"{CARTS}/current/")
    assert "SameSite=None" in reply.headers["Set-Cookie"]
    assert "Secure" in reply.headers["Set-Cookie"]


async def test_x_cart_token_works_when_cookies_are_blocked(shop: Quart) -> None:
    browser = API(shop, cookies=False)
    first = await browser.get(f"{CARTS}/current/")
    token = first.headers["X-Cart-Token"]
    header = {"X-Cart-Token": token}
    added = await browser.post(f"{CARTS}/{first.body['id']}/add_item/", HOSTING, headers=header)
    assert added.status == 201
    again = await current(browser, headers=header)
    assert again["id"] == first.body["id"] and again["item_count"] == 1
    # Without the header the cart is out of reach, and the 404 says why.
    lost = await browser.post(f"{CARTS}/{first.body['id']}/add_item/", HOSTING)
    assert lost.status == 404
    assert "X-Cart-Token" in lost.error and lost.body["code"] == "cart_not_found"


async def test_someone_elses_cart_is_404(shop: Quart) -> None:
    alice, mallory = API(shop), API(shop)
    cart = await current(alice)
    await current(mallory)  # mallory has a cart token of her own
    for method, path, body in (
        ("GET", f"{CARTS}/{cart['id']}/", None),
        ("POST", f"{CARTS}/{cart['id']}/add_item/", HOSTING),
        ("POST", f"{CARTS}/{cart['id']}/clear/", None),
        ("DELETE", f"{CARTS}/{cart['id']}/remove_item/", {"item_id": 1}),
    ):
        reply = await mallory.call(method, path, body)
        assert reply.status == 404, (method, path, reply.body)
        assert reply.body["error"] == "Cart not found."
    user_token = await token_for(shop, alice, "client@example.com")
    user_cart = await current(alice, token=user_token)
    assert (await mallory.get(f"{CARTS}/{user_cart['id']}/")).status == 404
    other = await token_for(shop, mallory, "other@example.com")
    assert (await mallory.get(f"{CARTS}/{user_cart['id']}/", token=other)).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**HOSTING, "hosting_product": 999}, "hosting_product"),
        ({**HOSTING, "billing_cycle": "weekly"}, "billing_cycle"),
        ({**HOSTING, "hosting_product": 3, "billing_cycle": "biennial"}, "billing_cycle"),
        ({**HOSTING, "quantity": 0}, "quantity"),
        ({**HOSTING, "quantity": 101}, "quantity"),
        ({**HOSTING, "domain_product": 1}, "hosting_product"),
        ({"service_metadata": {}, "quantity": 1}, "hosting_product"),
        ({**DOMAIN, "domain_product": 999}, "domain_product"),
        (
            {**DOMAIN, "service_metadata": {"action": "transfer", "domain_name": "x.com"}},
            "epp_code",
        ),
        ({**DOMAIN, "service_metadata": {"domain_name": "x.net"}}, "domain_name"),
        (
            {**DOMAIN, "service_metadata": {"domain_name": "x.com", "registration_years": 4}},
            "registration_years",
        ),
        ({**DOMAIN, "quantity": 2}, "quantity"),
        ({**DOMAIN, "service_metadata": {"action": "steal", "domain_name": "x.com"}}, "action"),
    ],
    ids=[
        "unknown-hosting",
        "unknown-cycle",
        "cycle-not-offered",
        "quantity-zero",
        "quantity-absurd",
        "two-products",
        "no-product",
        "unknown-tld",
        "transfer-without-epp",
        "wrong-tld",
        "years-not-offered",
        "domain-quantity",
        "unknown-action",
    ],
)
async def test_invalid_items_are_400_naming_the_field(
    shop: Quart, body: dict[str, Any], field: str
) -> None:
    browser = API(shop)
    cart = await current(browser)
    reply = await browser.post(f"{CARTS}/{cart['id']}/add_item/", body)
    assert reply.status == 400, reply.body
    assert reply.error.startswith(f"{field}: ")
    assert field in reply.body["errors"]
    assert (await current(browser))["item_count"] == 0


async def test_domain_transfer_and_service_prices(shop: Quart) -> None:
    browser = API(shop)
    cart = await current(browser)
    transfer = {
        **DOMAIN,
        "service_metadata": {"action": "transfer", "domain_name": "moved.com", "epp_code": "X1"},
    }
    reply = await browser.post(f"{CARTS}/{cart['id']}/add_item/", transfer)
    assert reply.status == 201
    assert reply.body["items"][0]["unit_price"] == "12.99"
    assert reply.body["items"][0]["service_metadata"]["epp_code"] == "X1"
    ssl = await browser.post(f"{CARTS}/{cart['id']}/add_item/", {"service": 1, "quantity": 2})
    assert ssl.status == 201
    assert ssl.body["items"][1]["unit_price"] == "39.00"
    assert ssl.body["items"][1]["total_price"] == 78.0
    assert ssl.body["total"] == 90.99


async def test_update_remove_clear(shop: Quart) -> None:
    browser = API(shop)
    cart = await current(browser)
    added = await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING)
    item_id = added.body["items"][0]["id"]
    changed = await browser.call(
        "PATCH",
        f"{CARTS}/{cart['id']}/update_item/",
        {"item_id": item_id, "quantity": 3, "billing_cycle": "monthly"},
    )
    assert changed.status == 200
    assert changed.body["items"][0]["unit_price"] == "2.99"
    assert changed.body["items"][0]["quantity"] == 3
    assert changed.body["total"] == 8.97
    not_offered = await browser.call(
        "PATCH", f"{CARTS}/{cart['id']}/update_item/", {"item_id": item_id, "quantity": 0}
    )
    assert not_offered.status == 400
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", DOMAIN)
    removed = await browser.call(
        "DELETE", f"{CARTS}/{cart['id']}/remove_item/", {"item_id": item_id}
    )
    assert removed.status == 200 and removed.body["item_count"] == 1
    missing = await browser.call(
        "DELETE", f"{CARTS}/{cart['id']}/remove_item/", {"item_id": item_id}
    )
    assert missing.status == 404 and missing.error.startswith("item_id: ")
    cleared = await browser.post(f"{CARTS}/{cart['id']}/clear/")
    assert cleared.status == 200 and cleared.body["items"] == [] and cleared.body["total"] == 0


async def test_coupons(shop: Quart) -> None:
    browser = API(shop)
    cart = await current(browser)
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", {**HOSTING, "billing_cycle": "monthly"})
    too_small = await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "welcome10"})
    assert too_small.status == 400  # 2.99 is under the 10.00 minimum
    assert too_small.error.startswith("code: ")
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", DOMAIN)
    applied = await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "welcome10"})
    assert applied.status == 200
    assert applied.body["applied_coupon"] == "WELCOME10"
    assert applied.body["discount_description"] == "10% off (WELCOME10)"
    assert applied.body["total"] == 38.46  # before the discount, as the storefront shows it
    assert applied.body["discount_amount"] == 3.85  # 3.846 rounded half-up
    assert applied.body["final_total"] == 34.61
    unknown = await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "NOPE"})
    assert unknown.status == 400 and unknown.error == "code: Invalid coupon code."
    removed = await browser.post(f"{CARTS}/{cart['id']}/remove_coupon/")
    assert removed.body["applied_coupon"] is None and removed.body["final_total"] == 38.46


# --- login, merge, checkout --------------------------------------------------------------


async def test_login_merges_the_anonymous_cart_once_then_checkout(shop: Quart) -> None:
    browser = API(shop)
    anonymous = await current(browser)
    await browser.post(f"{CARTS}/{anonymous['id']}/add_item/", HOSTING)
    await browser.post(f"{CARTS}/{anonymous['id']}/add_item/", DOMAIN)
    await browser.post(f"{CARTS}/{anonymous['id']}/apply_coupon/", {"code": "WELCOME10"})

    token = await token_for(shop, browser, "client@example.com")
    merged = await current(browser, token=token)
    assert merged["id"] != anonymous["id"]
    assert merged["item_count"] == 2 and merged["applied_coupon"] == "WELCOME10"
    again = await current(browser, token=token)
    assert again["item_count"] == 2  # merged once, not twice
    with db(shop):
        closed = await Cart.get(id=anonymous["id"])
        assert closed.status == CartStatus.MERGED and closed.active_key is None
    # The storefront still holds the anonymous cart id: it now means the user's cart.
    via_old_id = await browser.get(f"{CARTS}/{anonymous['id']}/", token=token)
    assert via_old_id.status == 200 and via_old_id.body["id"] == merged["id"]

    anonymous_checkout = await API(shop).post(f"{CARTS}/{merged['id']}/checkout/", CHECKOUT)
    assert anonymous_checkout.status == 401
    done = await browser.post(f"{CARTS}/{anonymous['id']}/checkout/", CHECKOUT, token=token)
    assert done.status == 201, done.body
    assert done.body["invoice_number"] == f"INV-{done.body['invoice_id']:06d}"
    assert done.body["total"] == "58.91"  # 65.46 - 6.55
    assert done.body["status"] == "sent" and done.body["payment_instructions"]
    assert done.body["redirect_url"] is None
    repeated = await browser.post(f"{CARTS}/{merged['id']}/checkout/", CHECKOUT, token=token)
    assert repeated.status == 200 and repeated.body["invoice_id"] == done.body["invoice_id"]

    invoices = await browser.get("/api/billing/invoices/", token=token)
    assert [i["invoice_number"] for i in invoices.body["results"]] == [done.body["invoice_number"]]
    invoice = invoices.body["results"][0]
    assert invoice["subtotal"] == "65.46" and invoice["discount_amount"] == "6.55"
    assert [line["description"] for line in invoice["items"]] == [
        "Starter Shared",
        "Domain registration: example.com",
    ]
    with db(shop):
        assert (await Promotion.get(code="WELCOME10")).usage_count == 1
        assert (await Cart.get(id=merged["id"])).status == CartStatus.COMPLETED
    fresh = await current(browser, token=token)
    assert fresh["id"] != merged["id"] and fresh["items"] == []
    closed_cart = await browser.post(f"{CARTS}/{merged['id']}/add_item/", HOSTING, token=token)
    assert closed_cart.status == 409


async def test_checkout_refusals(shop: Quart) -> None:
    browser = API(shop)
    token = await token_for(shop, browser, "client@example.com")
    cart = await current(browser, token=token)
    empty = await browser.post(f"{CARTS}/{cart['id']}/checkout/", CHECKOUT, token=token)
    assert empty.status == 400 and empty.error == "items: Your cart is empty."
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING, token=token)
    online = await browser.post(
        f"{CARTS}/{cart['id']}/checkout/", {**CHECKOUT, "payment_method": "paynow"}, token=token
    )
    # Paynow is not configured in this app: a 400 naming the missing setting, no invoice.
    assert online.status == 400 and online.body["code"] == "paynow_not_configured"
    assert online.error == (
        "payment_method: Paynow payments are not available: the server setting "
        "PAYNOW_INTEGRATION_ID is not set."
    )
    bad = await browser.post(
        f"{CARTS}/{cart['id']}/checkout/", {"payment_method": "bank"}, token=token
    )
    assert bad.status == 400 and "billing_info" in bad.body["errors"]
    with db(shop):
        assert not await Invoice.exists()
    # crypto needs no configuration: an invoice with manual payment instructions.
    crypto = await browser.post(
        f"{CARTS}/{cart['id']}/checkout/", {**CHECKOUT, "payment_method": "crypto"}, token=token
    )
    assert crypto.status == 201, crypto.body
    assert crypto.body["payment_method"] == "crypto" and crypto.body["redirect_url"] is None
    assert crypto.body["payment_instructions"].startswith("Pay in cryptocurrency")


async def test_checkout_uses_todays_catalog_price(shop: Quart) -> None:
    browser = API(shop)
    token = await token_for(shop, browser, "client@example.com")
    cart = await current(browser, token=token)
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING, token=token)
    with db(shop):
        await HostingProduct.filter(id=1).update(annual_price=Decimal("31.00"))
    done = await browser.post(f"{CARTS}/{cart['id']}/checkout/", CHECKOUT, token=token)
    assert done.status == 201 and done.body["total"] == "31.00"
    with db(shop):
        [line] = await InvoiceItem.filter(invoice_id=done.body["invoice_id"])
        assert line.unit_price == Decimal("31.00")


# --- concurrency -------------------------------------------------------------------------


async def test_twenty_concurrent_first_calls_make_one_cart(shop: Quart) -> None:
    token = secrets.token_urlsafe(32)
    signed = signed_cart_token(token, TEST_SECRET_KEY)  # as issued, before its cart exists
    browser = API(shop, cookies=False)
    replies = await asyncio.gather(
        *(browser.get(f"{CARTS}/current/", headers={"X-Cart-Token": signed}) for _ in range(20))
    )
    assert {reply.status for reply in replies} == {200}
    assert len({reply.body["id"] for reply in replies}) == 1
    with db(shop):
        assert await Cart.filter(anonymous_token=token).count() == 1


async def test_fifty_concurrent_add_items_lose_nothing(shop: Quart) -> None:
    browser = API(shop)
    cart = await current(browser)
    replies = await asyncio.gather(
        *(browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING) for _ in range(50))
    )
    assert [reply.status for reply in replies] == [201] * 50
    final = await current(browser)
    assert final["item_count"] == 50 and final["total"] == 1499.5


async def test_two_concurrent_checkouts_make_one_invoice(shop: Quart) -> None:
    browser = API(shop)
    token = await token_for(shop, browser, "client@example.com")
    cart = await current(browser, token=token)
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING, token=token)
    replies = await asyncio.gather(
        *(browser.post(f"{CARTS}/{cart['id']}/checkout/", CHECKOUT, token=token) for _ in range(2))
    )
    assert sorted(reply.status for reply in replies) == [200, 201]
    assert len({reply.body["invoice_number"] for reply in replies}) == 1
    with db(shop):
        assert await Invoice.all().count() == 1


async def test_items_added_during_a_checkout_land_on_the_invoice_or_get_409(
    shop: Quart,
) -> None:
    """Adds, updates and removals racing a checkout: each acknowledged change is on the
    invoice; one that came too late is a 409, never an item in a closed cart (57 of 66
    acknowledged items once went onto no invoice)."""
    for _round in range(3):
        browser = API(shop)
        token = await token_for(shop, browser, f"racer{secrets.token_hex(4)}@example.com")
        cart = await current(browser, token=token)
        path = f"{CARTS}/{cart['id']}"
        first = await browser.post(f"{path}/add_item/", HOSTING, token=token)
        second = await browser.post(f"{path}/add_item/", HOSTING, token=token)
        to_update, to_remove = (reply.body["items"][-1]["id"] for reply in (first, second))
        change = {"item_id": to_update, "quantity": 3}
        calls = [browser.post(f"{path}/add_item/", HOSTING, token=token) for _ in range(10)]
        calls.insert(3, browser.post(f"{path}/checkout/", CHECKOUT, token=token))
        calls.insert(5, browser.call("PATCH", f"{path}/update_item/", change, token=token))
        calls.insert(7, browser.call("DELETE", f"{path}/remove_item/", {"item_id": to_remove},
                                     token=token))  # fmt: skip
        replies = await asyncio.gather(*calls)
        checkout, update, removal = replies[3], replies[5], replies[7]
        adds = [reply for n, reply in enumerate(replies) if n not in (3, 5, 7)]
        assert checkout.status == 201, checkout.body
        for reply in [*adds, update, removal]:
            assert reply.status in (200, 201, 409), reply.body
            if reply.status == 409:
                assert reply.body["code"] == "cart_closed", reply.body
        with db(shop):
            invoice = await Invoice.get(id=checkout.body["invoice_id"])
            lines = await InvoiceItem.filter(invoice_id=invoice.id).order_by("id")
            left_in_cart = await CartItem.filter(cart_id=cart["id"]).order_by("id")
        acknowledged = 2 + sum(reply.status == 201 for reply in adds)
        removed = removal.status == 200
        assert len(lines) == acknowledged - removed, (len(lines), acknowledged, removed)
        assert [item.quantity for item in left_in_cart] == [line.quantity for line in lines]
        updated = lines[0].quantity == 3
        assert updated == (update.status == 200)


async def test_coupon_usage_limit_holds_under_concurrent_checkouts(shop: Quart) -> None:
    with db(shop):
        await Promotion.create(
            name="Only one", code="ONCE", discount_type="fixed", discount_value=Decimal("5"),
            usage_limit=1,
        )  # fmt: skip
    buyers = []
    for n in range(3):
        browser = API(shop)
        token = await token_for(shop, browser, f"buyer{n}@example.com")
        cart = await current(browser, token=token)
        await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING, token=token)
        applied = await browser.post(
            f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "once"}, token=token
        )
        assert applied.status == 200
        buyers.append((browser, token, cart["id"]))
    replies = await asyncio.gather(
        *(b.post(f"{CARTS}/{cart_id}/checkout/", CHECKOUT, token=t) for b, t, cart_id in buyers)
    )
    assert sorted(reply.status for reply in replies) == [201, 400, 400]
    refused = [reply for reply in replies if reply.status == 400]
    assert all("usage limit" in reply.error for reply in refused)
    with db(shop):
        assert (await Promotion.get(code="ONCE")).usage_count == 1
        assert await Invoice.all().count() == 1
        # The refused buyers keep their carts, to remove the coupon and try again.
        assert await Cart.filter(status=CartStatus.ACTIVE).count() == 2


async def test_staff_and_admin_have_carts_too(shop: Quart) -> None:
    await make_user(shop, "staff@example.com", Role.STAFF)
    browser = API(shop)
    token = await browser.login("staff@example.com")
    assert (await browser.get(f"{CARTS}/current/", token=token)).status == 200


# --- discount_amount, NUL and huge values --------------------------------------------------


async def test_discount_amount_is_null_without_a_reduction(shop: Quart) -> None:
    """cart/page.tsx renders ``{hasDiscount && ...}`` with hasDiscount = discount_amount &&
    ...: a 0 there prints a stray "0"; null prints nothing."""
    browser = API(shop)
    cart = await current(browser)
    assert cart["discount_amount"] is None and cart["final_total"] == 0
    monthly = {**HOSTING, "billing_cycle": "monthly"}
    added = await browser.post(f"{CARTS}/{cart['id']}/add_item/", monthly)
    assert added.body["discount_amount"] is None and added.body["final_total"] == 2.99
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", DOMAIN)
    applied = await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "WELCOME10"})
    assert applied.body["discount_amount"] == 3.85
    # The coupon stays applied but stops applying (under its minimum): null again.
    item_id = applied.body["items"][1]["id"]
    removed = await browser.call(
        "DELETE", f"{CARTS}/{cart['id']}/remove_item/", {"item_id": item_id}
    )
    assert removed.body["applied_coupon"] == "WELCOME10"
    assert removed.body["discount_amount"] is None
    assert removed.body["discount_description"].startswith("WELCOME10: ")
    assert removed.body["final_total"] == 2.99


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # NUL anywhere in a JSON body is refused before the view, naming where it is.
        ({**HOSTING, "service_metadata": {"region": "a\x00b"}}, "service_metadata.region"),
        ({**HOSTING, "service_metadata": {"a\x00": "key"}}, "service_metadata.a\ufffd"),
        ({**HOSTING, "service_metadata": {"list": [["x\x00"]]}}, "service_metadata.list.0.0"),
        ({**HOSTING, "service_metadata": {"big": "x" * 5000}}, "service_metadata"),
        ({**HOSTING, "hosting_product": 10**20}, "hosting_product"),
        ({**DOMAIN, "domain_product": 2**31}, "domain_product"),
        ({"service": -1}, "service"),
    ],
)
async def test_nul_and_huge_values_are_400_not_500(
    shop: Quart, body: dict[str, Any], field: str
) -> None:
    browser = API(shop)
    cart = await current(browser)
    reply = await browser.post(f"{CARTS}/{cart['id']}/add_item/", body)
    assert reply.status == 400, reply.body
    assert reply.error.startswith(f"{field}: ") and field in reply.body["errors"]
    assert (await current(browser))["item_count"] == 0


async def test_nul_in_billing_info_and_huge_ids_are_400_not_500(shop: Quart) -> None:
    browser = API(shop)
    token = await token_for(shop, browser, "client@example.com")
    cart = await current(browser, token=token)
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING, token=token)
    body = {**CHECKOUT, "billing_info": {**CHECKOUT["billing_info"], "city": "Ha\x00rare"}}
    reply = await browser.post(f"{CARTS}/{cart['id']}/checkout/", body, token=token)
    assert reply.status == 400 and reply.error.startswith("billing_info.city: ")
    huge = await browser.call(
        "PATCH", f"{CARTS}/{cart['id']}/update_item/", {"item_id": 10**12}, token=token
    )
    assert huge.status == 400 and huge.error.startswith("item_id: ")
    assert (await browser.get(f"{CARTS}/{10**12}/", token=token)).status == 404
    with db(shop):
        assert await Invoice.all().count() == 0


# --- abuse: cart token fixation, limits, coupons -----------------------------------------


@pytest.fixture
async def shop_with(app_factory: Any) -> Any:
    """A shop (demo catalog) built with settings of the test's choosing."""
    from tests.conftest import prepare_database

    started: list[Any] = []

    async def build(**settings: Any) -> Quart:
        application = app_factory(**settings)
        context = application.test_app()
        await context.__aenter__()
        started.append(context)
        await prepare_database(application)
        await seed_catalog(application)
        return application

    yield build
    for context in reversed(started):
        await context.__aexit__(None, None, None)


async def test_a_client_chosen_cart_token_is_never_adopted(shop: Quart) -> None:
    """Fixation: Mallory plants a token of her choosing in Alice's browser (header or cookie)
    and would read and fill Alice's cart with it. A token slyker did not issue is ignored."""
    chosen = "M" * 43
    victim = API(shop, cookies=False)
    for headers in ({"X-Cart-Token": chosen}, {"Cookie": f"slyker_cart={chosen}"}):
        reply = await victim.get(f"{CARTS}/current/", headers=headers)
        assert reply.status == 200
        issued = reply.headers["X-Cart-Token"]
        assert issued != chosen and chosen not in issued
        added = await victim.post(
            f"{CARTS}/{reply.body['id']}/add_item/", HOSTING, headers={"X-Cart-Token": issued}
        )
        assert added.status == 201
        # Mallory, with her token, reaches only a new empty cart of her own.
        mallory = await current(API(shop, cookies=False), headers=headers)
        assert mallory["id"] != reply.body["id"] and mallory["item_count"] == 0
    with db(shop):
        assert not await Cart.filter(anonymous_token=chosen).exists()


async def test_forged_and_unsigned_tokens_are_treated_as_absent(shop: Quart) -> None:
    browser = API(shop, cookies=False)
    first = await browser.get(f"{CARTS}/current/")
    issued = first.headers["X-Cart-Token"]
    random_part, mac = issued.split(".")
    other_key = signed_cart_token(random_part, "another-secret-key-0123456789abcdef0123")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    await browser.post(
        f"{CARTS}/{first.body['id']}/add_item/", HOSTING, headers={"X-Cart-Token": issued}
    )
    for forged in (random_part, f"{random_part}.{flipped}", other_key, f"{random_part}."):
        for headers in ({"X-Cart-Token": forged}, {"Cookie": f"slyker_cart={forged}"}):
            reply = await browser.get(f"{CARTS}/current/", headers=headers)
            assert reply.status == 200
            assert reply.body["id"] != first.body["id"] and reply.body["item_count"] == 0
            assert reply.headers["X-Cart-Token"] not in (issued, forged)
            lost = await browser.get(f"{CARTS}/{first.body['id']}/", headers=headers)
            assert lost.status == 404
    # The issued token, as a cookie too, still names the cart.
    for headers in ({"X-Cart-Token": issued}, {"Cookie": f"slyker_cart={issued}"}):
        assert (await current(browser, headers=headers))["id"] == first.body["id"]


async def test_an_unsigned_token_of_an_old_cart_starts_over(shop: Quart) -> None:
    """Carts made before tokens were signed: their unsigned token no longer names them."""
    old = secrets.token_urlsafe(32)
    with db(shop):
        cart = await Cart.create(active_key=f"anon:{old}", anonymous_token=old)
    reply = await current(API(shop, cookies=False), headers={"X-Cart-Token": old})
    assert reply["id"] != cart.id and reply["item_count"] == 0


async def test_cart_lines_are_capped(shop_with: Any) -> None:
    shop = await shop_with(CART_MAX_LINES="3")
    browser = API(shop)
    cart = await current(browser)
    replies = await asyncio.gather(
        *(browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING) for _ in range(8))
    )
    assert sorted(reply.status for reply in replies) == [201] * 3 + [409] * 5
    full = next(reply for reply in replies if reply.status == 409)
    assert full.body["code"] == "cart_full" and "at most 3 lines" in full.error
    assert (await current(browser))["item_count"] == 3
    # Changing and removing lines still works; a freed line can be used again.
    item_id = (await current(browser))["items"][0]["id"]
    changed = await browser.call(
        "PATCH", f"{CARTS}/{cart['id']}/update_item/", {"item_id": item_id, "quantity": 2}
    )
    assert changed.status == 200
    removed = await browser.call(
        "DELETE", f"{CARTS}/{cart['id']}/remove_item/", {"item_id": item_id}
    )
    assert removed.status == 200
    assert (await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING)).status == 201


async def test_a_merge_past_the_cap_keeps_every_line_and_says_so(shop_with: Any) -> None:
    """Two carts of 2 lines with CART_MAX_LINES=3: the login keeps all 4 lines (nothing
    dropped, no route refused), the reply says over_limit, add_item is a 409 cart_full until
    lines are removed, and checkout takes every line."""
    shop = await shop_with(CART_MAX_LINES="3")
    browser = API(shop)
    token = await token_for(shop, API(shop), "client@example.com")
    own = await current(browser, token=token)
    for item in (HOSTING, DOMAIN):
        assert (
            await browser.post(f"{CARTS}/{own['id']}/add_item/", item, token=token)
        ).status == 201
    anonymous = await current(browser)  # the same browser, signed out
    assert anonymous["max_lines"] == 3 and anonymous["over_limit"] is False
    for item in (HOSTING, DOMAIN):
        assert (await browser.post(f"{CARTS}/{anonymous['id']}/add_item/", item)).status == 201

    merged = await current(browser, token=token)
    assert merged["id"] == own["id"] and merged["item_count"] == 4
    assert merged["max_lines"] == 3 and merged["over_limit"] is True
    # The storefront keeps the anonymous cart's id: it answers too, with the same cart.
    via_old_id = await browser.get(f"{CARTS}/{anonymous['id']}/", token=token)
    assert via_old_id.status == 200 and via_old_id.body["over_limit"] is True
    full = await browser.post(f"{CARTS}/{anonymous['id']}/add_item/", HOSTING, token=token)
    assert full.status == 409 and full.body["code"] == "cart_full"
    first, second = (line["id"] for line in merged["items"][:2])
    for item_id in (first, second):
        removed = await browser.call(
            "DELETE", f"{CARTS}/{own['id']}/remove_item/", {"item_id": item_id}, token=token
        )
        assert removed.status == 200
    assert removed.body["item_count"] == 2 and removed.body["over_limit"] is False
    refilled = await browser.post(f"{CARTS}/{own['id']}/add_item/", HOSTING, token=token)
    assert refilled.status == 201 and refilled.body["item_count"] == 3
    assert (await browser.post(f"{CARTS}/{own['id']}/add_item/", DOMAIN, token=token)).status == 409

    # An over-limit cart checks out whole.
    other = await current(browser)
    for item in (HOSTING, DOMAIN):
        assert (await browser.post(f"{CARTS}/{other['id']}/add_item/", item)).status == 201
    assert (await current(browser, token=token))["item_count"] == 5
    done = await browser.post(f"{CARTS}/{own['id']}/checkout/", CHECKOUT, token=token)
    assert done.status == 201, done.body
    with db(shop):
        assert await InvoiceItem.filter(invoice_id=done.body["invoice_id"]).count() == 5


async def test_cart_lines_default_cap_is_50(shop: Quart) -> None:
    browser = API(shop)
    cart = await current(browser)
    with db(shop):
        hosting = await HostingProduct.get(id=1)
        for _ in range(50):
            await CartItem.create(
                cart_id=cart["id"],
                hosting_product=hosting,
                service_name="Starter Shared",
                service_category="hosting",
                product_type="shared",
                unit_price=Decimal("29.99"),
                billing_cycle="annual",
            )
    full = await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING)
    assert full.status == 409 and full.body["code"] == "cart_full"


async def test_new_anonymous_carts_are_rate_limited_per_address(shop_with: Any) -> None:
    shop = await shop_with(CART_CREATIONS_PER_MINUTE="3")
    bot = API(shop, cookies=False)  # a script that never keeps its token
    replies = [await bot.get(f"{CARTS}/current/") for _ in range(5)]
    assert [reply.status for reply in replies] == [200, 200, 200, 429, 429]
    assert replies[3].body["code"] == "rate_limited"
    with db(shop):
        assert await Cart.all().count() == 3
    # A visitor with an issued token, and a signed-in user, still get their carts.
    token = replies[0].headers["X-Cart-Token"]
    assert (await current(bot, headers={"X-Cart-Token": token}))["id"] == replies[0].body["id"]
    user = await token_for(shop, bot, "client@example.com")
    assert (await current(bot, token=user))["status"] == "active"


async def test_rate_limit_headers_only_when_the_creation_limit_counted_the_request(
    shop_with: Any,
) -> None:
    """current/ is limited only when it would create a cart: that request says where the
    limit stands; a request for an existing cart, which no limit counts, says nothing."""
    shop = await shop_with(CART_CREATIONS_PER_MINUTE="3")
    bot = API(shop, cookies=False)
    created = await bot.get(f"{CARTS}/current/")
    assert created.status == 200
    assert created.headers["RateLimit-Limit"] == "3"
    assert created.headers["RateLimit-Remaining"] == "2"
    token = created.headers["X-Cart-Token"]
    for _ in range(4):  # more than the limit: none of them counted
        again = await bot.get(f"{CARTS}/current/", headers={"X-Cart-Token": token})
        assert again.status == 200 and again.body["id"] == created.body["id"]
        assert "RateLimit-Limit" not in again.headers
        assert "RateLimit-Remaining" not in again.headers
    second = await bot.get(f"{CARTS}/current/")
    assert second.status == 200 and second.headers["RateLimit-Remaining"] == "1"


async def test_cart_writes_are_rate_limited_per_address_and_per_user(shop_with: Any) -> None:
    shop = await shop_with(CART_WRITES_PER_MINUTE="3")
    anonymous = API(shop)
    cart = await current(anonymous)
    statuses = [
        (await anonymous.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING)).status for _ in range(4)
    ]
    assert statuses == [201, 201, 201, 429]
    cleared = await anonymous.post(f"{CARTS}/{cart['id']}/clear/")
    assert cleared.status == 429 and cleared.body["code"] == "rate_limited"
    # A signed-in user on the same address is counted on their own.
    member = API(shop)
    user = await token_for(shop, member, "client@example.com")
    own = await current(member, token=user)
    added = await member.post(f"{CARTS}/{own['id']}/add_item/", HOSTING, token=user)
    assert added.status == 201


async def test_unknown_service_metadata_keys_are_refused(shop: Quart) -> None:
    browser = API(shop)
    cart = await current(browser)
    storefront_hosting = {
        **HOSTING,
        "service_metadata": {
            "type": "vps",
            "region": "Africa",
            "os": "ubuntu",
            "domain": "a.com",
            "domain_option": "register",
        },
    }
    storefront_transfer = {
        **DOMAIN,
        "service_metadata": {
            **DOMAIN["service_metadata"],
            "action": "transfer",
            "epp_code": "X1",
        },
        "billing_cycle": "1yr",
    }
    for body in (storefront_hosting, storefront_transfer):
        added = await browser.post(f"{CARTS}/{cart['id']}/add_item/", body)
        assert added.status == 201, added.body
    for body, key in (
        ({**HOSTING, "service_metadata": {"type": "shared", "price_override": 0}}, "price"),
        ({**DOMAIN, "service_metadata": {**DOMAIN["service_metadata"], "os": "x"}}, "os"),
    ):
        refused = await browser.post(f"{CARTS}/{cart['id']}/add_item/", body)
        assert refused.status == 400, refused.body
        assert refused.body["errors"]["service_metadata"] and key in refused.error
    assert (await current(browser))["item_count"] == 2


async def _checked_out_with(shop: Quart, api: API, token: str, code: str) -> Any:
    cart = await current(api, token=token)
    await api.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING, token=token)
    applied = await api.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": code}, token=token)
    assert applied.status == 200, applied.body
    return await api.post(f"{CARTS}/{cart['id']}/checkout/", CHECKOUT, token=token)


async def test_a_customer_uses_a_coupon_once_by_default(shop: Quart) -> None:
    api = API(shop)
    token = await token_for(shop, api, "client@example.com")
    first = await _checked_out_with(shop, api, token, "WELCOME10")
    assert first.status == 201 and first.body["total"] == "26.99"
    cart = await current(api, token=token)
    await api.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING, token=token)
    again = await api.post(
        f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "welcome10"}, token=token
    )
    assert again.status == 400 and "already used" in again.error
    checked = await api.post("/api/billing/promotions/validate_code/", {"code": "WELCOME10"},
                             token=token)  # fmt: skip
    assert checked.status == 400 and "already used" in checked.error
    # A coupon applied before the first checkout (e.g. in a merged cart) fails at checkout.
    with db(shop):
        await Cart.filter(id=cart["id"]).update(
            coupon_id=(await Promotion.get(code="WELCOME10")).id
        )
    refused = await api.post(f"{CARTS}/{cart['id']}/checkout/", CHECKOUT, token=token)
    assert refused.status == 400 and "already used" in refused.error
    # Another customer still may.
    other = await token_for(shop, api, "other@example.com")
    assert (await _checked_out_with(shop, api, other, "WELCOME10")).status == 201


async def test_max_uses_per_customer_null_is_unlimited(shop: Quart) -> None:
    with db(shop):
        await Promotion.filter(code="WELCOME10").update(max_uses_per_customer=None)
    api = API(shop)
    token = await token_for(shop, api, "client@example.com")
    for _ in range(3):
        assert (await _checked_out_with(shop, api, token, "WELCOME10")).status == 201


async def test_concurrent_checkouts_of_one_customer_use_the_coupon_once(shop: Quart) -> None:
    """Four open carts of one customer (the API keeps one; leftovers may exist), each with
    WELCOME10, checked out at once, in three rounds: one invoice per customer uses it."""
    api = API(shop)
    for _round in range(3):
        token = await token_for(shop, api, f"racer{secrets.token_hex(4)}@example.com")
        own = await current(api, token=token)
        with db(shop):
            user_id = (await Cart.get(id=own["id"])).user_id  # type: ignore[attr-defined]
            extra = [await Cart.create(user_id=user_id) for _ in range(3)]
        carts = [own["id"], *(cart.id for cart in extra)]
        for cart_id in carts:
            await api.post(f"{CARTS}/{cart_id}/add_item/", HOSTING, token=token)
        applied = await api.post(
            f"{CARTS}/{own['id']}/apply_coupon/", {"code": "WELCOME10"}, token=token
        )
        assert applied.status == 200, applied.body
        with db(shop):  # the same coupon in the leftovers (apply_coupon is rate-limited)
            await Cart.filter(id__in=carts).update(
                coupon_id=(await Cart.get(id=own["id"])).coupon_id
            )
        replies = await asyncio.gather(
            *(api.post(f"{CARTS}/{cart_id}/checkout/", CHECKOUT, token=token) for cart_id in carts)
        )
        assert sorted(reply.status for reply in replies) == [201, 400, 400, 400], [
            reply.body for reply in replies
        ]
        with db(shop):
            assert await Invoice.filter(user_id=user_id).count() == 1
    with db(shop):
        assert (await Promotion.get(code="WELCOME10")).usage_count == 3


async def test_apply_coupon_is_rate_limited_per_address(shop_with: Any) -> None:
    shop = await shop_with(COUPON_CHECKS_PER_MINUTE="3")
    browser = API(shop)
    cart = await current(browser)
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING)
    statuses = [
        (await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": f"GUESS{i}"})).status
        for i in range(4)
    ]
    assert statuses == [400, 400, 400, 429]
    # The right code is refused too until the minute passes: guessing is what is limited.
    last = await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "WELCOME10"})
    assert last.status == 429 and last.body["code"] == "rate_limited"


async def test_coupon_checks_are_one_count_for_validate_code_and_apply_coupon(
    shop_with: Any,
) -> None:
    shop = await shop_with(COUPON_CHECKS_PER_MINUTE="3")
    browser = API(shop)
    cart = await current(browser)
    await browser.post(f"{CARTS}/{cart['id']}/add_item/", HOSTING)
    checked = [
        (await browser.post("/api/billing/promotions/validate_code/", {"code": f"GUESS{i}"})).status
        for i in range(2)
    ]
    applied = await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "GUESS2"})
    refused = await browser.post(f"{CARTS}/{cart['id']}/apply_coupon/", {"code": "GUESS3"})
    assert checked == [400, 400] and applied.status == 400
    assert refused.status == 429 and refused.body["code"] == "rate_limited"
