"""Promotions: the public list of current offers, code validation, staff CRUD. Runs on
SQLite, and on PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from quart import Quart

from slyker.models.accounts import Role
from slyker.models.billing import DiscountType, Promotion
from tests.api import API, assert_error, db, seed_catalog, token_for
from tests.conftest import prepare_database

PROMOTIONS = "/api/billing/promotions"
FRONTEND_FIELDS = (
    "id",
    "name",
    "code",
    "discount_type",
    "discount_value",
    "start_date",
    "end_date",
    "is_active",
    "usage_limit",
    "usage_count",
    "minimum_order_amount",
)
NEW: dict[str, Any] = {
    "name": "Spring sale",
    "code": "spring-25",
    "description": "25 % off everything",
    "discount_type": "percentage",
    "discount_value": "25",
    "start_date": "2020-03-01T00:00:00Z",
    "end_date": "2099-06-01T00:00:00+00:00",
    "usage_limit": 100,
    "minimum_order_amount": "20",
    "product_types": ["shared", "vps"],
}

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


async def promotion(app: Quart, code: str, **fields: Any) -> Promotion:
    values: dict[str, Any] = {
        "name": f"Promotion {code}",
        "discount_type": DiscountType.FIXED,
        "discount_value": Decimal("5.00"),
        "is_public": True,  # the offers of the public list; private ones say so
        **fields,
    }
    with db(app):
        return await Promotion.create(code=code, **values)


@pytest.fixture
async def offers(app: Quart) -> Quart:
    """One promotion in each state; only the first three are valid now."""
    now = datetime.now(UTC)
    await promotion(app, "OPEN")  # no dates, no limit
    await promotion(
        app,
        "WINDOW",
        discount_type=DiscountType.PERCENTAGE,
        discount_value=Decimal("12.5"),
        start_date=now - timedelta(days=1),
        end_date=now + timedelta(days=1),
        usage_limit=3,
        usage_count=2,
        minimum_order_amount=Decimal("50"),
    )
    await promotion(app, "STARTED", start_date=now - timedelta(minutes=1))
    await promotion(app, "INACTIVE", is_active=False)
    await promotion(app, "EXPIRED", end_date=now - timedelta(minutes=1))
    await promotion(app, "FUTURE", start_date=now + timedelta(days=1))
    await promotion(app, "USEDUP", usage_limit=2, usage_count=2)
    return app


# --- the public list ---------------------------------------------------------------------


async def test_active_is_a_public_bare_array_of_valid_promotions(offers: Quart) -> None:
    reply = await API(offers).get(f"{PROMOTIONS}/active/")
    assert reply.status == 200
    assert isinstance(reply.body, list)
    assert [p["code"] for p in reply.body] == ["OPEN", "WINDOW", "STARTED"]
    for item in reply.body:
        for field in FRONTEND_FIELDS:
            assert field in item
    open_, window = reply.body[0], reply.body[1]
    assert open_["start_date"] is None and open_["end_date"] is None
    assert open_["usage_limit"] is None and open_["usage_count"] == 0
    assert open_["discount_type"] == "fixed" and open_["discount_value"] == "5.00"
    assert open_["minimum_order_amount"] == "0.00" and open_["is_active"] is True
    assert window["discount_type"] == "percentage" and window["discount_value"] == "12.50"
    assert window["usage_limit"] == 3 and window["usage_count"] == 2
    assert window["minimum_order_amount"] == "50.00"
    start = datetime.fromisoformat(window["start_date"])
    end = datetime.fromisoformat(window["end_date"])
    assert start.tzinfo is not None and end.tzinfo is not None
    assert start < datetime.now(UTC) < end


async def test_active_is_empty_without_promotions(app: Quart) -> None:
    reply = await API(app).get(f"{PROMOTIONS}/active/")
    assert reply.status == 200 and reply.body == []


async def test_active_is_the_same_for_clients_and_staff(offers: Quart) -> None:
    api = API(offers)
    client = await token_for(offers, api, "client@example.com")
    staff = await token_for(offers, api, "staff@example.com", Role.STAFF)
    anonymous = (await api.get(f"{PROMOTIONS}/active/")).body
    assert (await api.get(f"{PROMOTIONS}/active/", token=client)).body == anonymous
    assert (await api.get(f"{PROMOTIONS}/active/", token=staff)).body == anonymous


# --- validate_code -----------------------------------------------------------------------


@pytest.mark.parametrize("code", ["OPEN", "open", "Open", "  open  ", "window"])
async def test_validate_code_is_case_insensitive(offers: Quart, code: str) -> None:
    reply = await API(offers).post(f"{PROMOTIONS}/validate_code/", {"code": code})
    assert reply.status == 200, reply.body
    assert reply.body["valid"] is True
    assert reply.body["code"] == code.strip().upper()
    for field in FRONTEND_FIELDS:
        assert field in reply.body
    listed = {p["code"]: p for p in (await API(offers).get(f"{PROMOTIONS}/active/")).body}
    assert {k: v for k, v in reply.body.items() if k != "valid"} == listed[code.strip().upper()]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("NOPE", "code: Invalid coupon code."),
        ("expired", "code: This coupon has expired."),
        ("Inactive", "code: This coupon is not active."),
        ("usedup", "code: This coupon has reached its usage limit."),
        ("FUTURE", "code: This coupon is not valid yet."),
    ],
)
async def test_validate_code_rejects_unusable_codes(offers: Quart, code: str, message: str) -> None:
    reply = await API(offers).post(f"{PROMOTIONS}/validate_code/", {"code": code})
    assert_error(reply, 400, "invalid", "code: ")
    assert reply.body["error"] == message
    assert reply.body["errors"] == {"code": [message.removeprefix("code: ")]}
    assert "valid" not in reply.body


@pytest.mark.parametrize("body", [{}, {"code": ""}, {"code": 12}, {"code": "X" * 51}])
async def test_validate_code_bad_body_is_400(offers: Quart, body: dict[str, Any]) -> None:
    reply = await API(offers).post(f"{PROMOTIONS}/validate_code/", body)
    assert_error(reply, 400, "invalid", "code: ")


async def test_validate_code_works_for_logged_in_clients(offers: Quart) -> None:
    api = API(offers)
    client = await token_for(offers, api, "client@example.com")
    reply = await api.post(f"{PROMOTIONS}/validate_code/", {"code": "open"}, token=client)
    assert reply.status == 200 and reply.body["valid"] is True


async def test_validate_code_does_not_count_a_use(offers: Quart) -> None:
    api = API(offers)
    for _ in range(3):
        reply = await api.post(f"{PROMOTIONS}/validate_code/", {"code": "window"})
        assert reply.status == 200 and reply.body["usage_count"] == 2
    with db(offers):
        assert (await Promotion.get(code="WINDOW")).usage_count == 2


# --- staff CRUD --------------------------------------------------------------------------


async def test_staff_create_get_update_delete(app: Quart) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@example.com", Role.STAFF)
    created = await api.post(f"{PROMOTIONS}/", NEW, token=staff)
    assert created.status == 201, created.body
    body = created.body
    assert body["code"] == "SPRING-25"  # stored upper-case
    assert body["name"] == "Spring sale" and body["description"] == "25 % off everything"
    assert body["discount_type"] == "percentage" and body["discount_value"] == "25.00"
    assert datetime.fromisoformat(body["start_date"]) == datetime(2020, 3, 1, tzinfo=UTC)
    assert datetime.fromisoformat(body["end_date"]) == datetime(2099, 6, 1, tzinfo=UTC)
    assert body["is_active"] is True
    assert body["usage_limit"] == 100 and body["usage_count"] == 0
    assert body["minimum_order_amount"] == "20.00"
    assert body["product_types"] == ["shared", "vps"]

    fetched = await api.get(f"{PROMOTIONS}/{body['id']}/", token=staff)
    assert fetched.status == 200 and fetched.body == body
    active = await api.get(f"{PROMOTIONS}/active/")
    assert [p["code"] for p in active.body] == ["SPRING-25"]
    valid = await api.post(f"{PROMOTIONS}/validate_code/", {"code": "Spring-25"})
    assert valid.status == 200

    with db(app):  # a use was counted meanwhile: PUT must keep it
        await Promotion.filter(id=body["id"]).update(usage_count=7)
    changed = await api.call(
        "PUT",
        f"{PROMOTIONS}/{body['id']}/",
        {**NEW, "code": "summer", "discount_type": "fixed", "discount_value": "10.5"},
        token=staff,
    )
    assert changed.status == 200, changed.body
    assert changed.body["id"] == body["id"] and changed.body["code"] == "SUMMER"
    assert changed.body["discount_type"] == "fixed" and changed.body["discount_value"] == "10.50"
    assert changed.body["usage_count"] == 7
    assert (await api.get(f"{PROMOTIONS}/{body['id']}/", token=staff)).body == changed.body
    old = await api.post(f"{PROMOTIONS}/validate_code/", {"code": "SPRING-25"})
    assert_error(old, 400, "invalid", "code: Invalid coupon code.")

    deleted = await api.call("DELETE", f"{PROMOTIONS}/{body['id']}/", token=staff)
    assert deleted.status == 204 and deleted.body is None
    with db(app):
        kept = await Promotion.get(id=body["id"])  # deactivated, not deleted
    assert kept.is_active is False
    gone = await api.post(f"{PROMOTIONS}/validate_code/", {"code": "summer"})
    assert_error(gone, 400, "invalid", "code: This coupon is not active.")
    assert (await api.get(f"{PROMOTIONS}/active/")).body == []
    still = await api.get(f"{PROMOTIONS}/{body['id']}/", token=staff)
    assert still.status == 200 and still.body["is_active"] is False


async def test_create_with_only_required_fields(app: Quart) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@example.com", Role.STAFF)
    reply = await api.post(
        f"{PROMOTIONS}/",
        {"name": "Five off", "code": "five", "discount_type": "fixed", "discount_value": 5},
        token=staff,
    )
    assert reply.status == 201, reply.body
    assert reply.body["code"] == "FIVE" and reply.body["discount_value"] == "5.00"
    assert reply.body["start_date"] is None and reply.body["end_date"] is None
    assert reply.body["usage_limit"] is None and reply.body["minimum_order_amount"] == "0.00"
    assert reply.body["product_types"] == [] and reply.body["is_active"] is True


async def test_staff_list_is_paginated_and_includes_every_state(offers: Quart) -> None:
    api = API(offers)
    staff = await token_for(offers, api, "staff@example.com", Role.STAFF)
    reply = await api.get(f"{PROMOTIONS}/", token=staff)
    assert reply.status == 200
    assert set(reply.body) == {"count", "next", "previous", "results"}
    assert reply.body["count"] == 7 and reply.body["next"] is None
    assert [p["code"] for p in reply.body["results"]] == [
        "OPEN",
        "WINDOW",
        "STARTED",
        "INACTIVE",
        "EXPIRED",
        "FUTURE",
        "USEDUP",
    ]
    page = await api.get(f"{PROMOTIONS}/?page=2&page_size=3", token=staff)
    assert page.status == 200
    assert [p["code"] for p in page.body["results"]] == ["INACTIVE", "EXPIRED", "FUTURE"]
    assert page.body["next"].endswith(f"{PROMOTIONS}/?page=3&page_size=3")
    assert page.body["previous"].endswith(f"{PROMOTIONS}/?page=1&page_size=3")
    assert_error(await api.get(f"{PROMOTIONS}/?page=4&page_size=3", token=staff), 404, "not_found")
    assert_error(await api.get(f"{PROMOTIONS}/?page=0", token=staff), 400, "bad_request", "page: ")


@pytest.mark.parametrize("code", ["OPEN", "open", "Open"])
async def test_duplicate_code_is_409(offers: Quart, code: str) -> None:
    api = API(offers)
    staff = await token_for(offers, api, "staff@example.com", Role.STAFF)
    reply = await api.post(f"{PROMOTIONS}/", {**NEW, "code": code}, token=staff)
    assert_error(reply, 409, "code_taken", "code: ")
    assert reply.body["errors"] == {"code": ["exists"]}
    with db(offers):
        assert await Promotion.all().count() == 7


async def test_renaming_onto_an_existing_code_is_409(offers: Quart) -> None:
    api = API(offers)
    staff = await token_for(offers, api, "staff@example.com", Role.STAFF)
    with db(offers):
        window = await Promotion.get(code="WINDOW")
    reply = await api.call(
        "PUT", f"{PROMOTIONS}/{window.id}/", {**NEW, "code": "open"}, token=staff
    )
    assert_error(reply, 409, "code_taken", "code: ")
    with db(offers):
        assert (await Promotion.get(id=window.id)).code == "WINDOW"
    # Saving it under its own code still works.
    same = await api.call(
        "PUT", f"{PROMOTIONS}/{window.id}/", {**NEW, "code": "window"}, token=staff
    )
    assert same.status == 200 and same.body["code"] == "WINDOW"


async def test_percentage_over_100_is_400(app: Quart) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@example.com", Role.STAFF)
    over = await api.post(f"{PROMOTIONS}/", {**NEW, "discount_value": "100.01"}, token=staff)
    assert_error(over, 400, "invalid")
    assert "100" in over.body["error"]
    whole = await api.post(f"{PROMOTIONS}/", {**NEW, "discount_value": "100"}, token=staff)
    assert whole.status == 201, whole.body
    # A fixed discount is an amount, not a percentage: above 100 is fine.
    fixed = await api.post(
        f"{PROMOTIONS}/",
        {**NEW, "code": "BIG", "discount_type": "fixed", "discount_value": "150"},
        token=staff,
    )
    assert fixed.status == 201, fixed.body
    with db(app):
        assert await Promotion.all().count() == 2


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2030-01-02T00:00:00Z", "2030-01-01T00:00:00Z"),
        ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
        ("2030-01-01T02:00:00+02:00", "2030-01-01T00:00:00Z"),  # the same instant
    ],
)
async def test_end_not_after_start_is_400(app: Quart, start: str, end: str) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@example.com", Role.STAFF)
    body = {**NEW, "start_date": start, "end_date": end}
    reply = await api.post(f"{PROMOTIONS}/", body, token=staff)
    assert_error(reply, 400, "invalid")
    assert "end_date" in reply.body["error"]
    with db(app):
        assert await Promotion.all().count() == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"code": "ab"}, "code"),
        ({"code": "has space"}, "code"),
        ({"discount_type": "bogo"}, "discount_type"),
        ({"discount_value": "0"}, "discount_value"),
        ({"discount_value": "-5"}, "discount_value"),
        ({"usage_limit": 0}, "usage_limit"),
        ({"minimum_order_amount": "-1"}, "minimum_order_amount"),
        ({"start_date": "yesterday"}, "start_date"),
    ],
)
async def test_invalid_body_is_400_naming_the_field(
    offers: Quart, change: dict[str, Any], field: str
) -> None:
    api = API(offers)
    staff = await token_for(offers, api, "staff@example.com", Role.STAFF)
    with db(offers):
        target = await Promotion.get(code="OPEN")
    for method, path in (("POST", f"{PROMOTIONS}/"), ("PUT", f"{PROMOTIONS}/{target.id}/")):
        reply = await api.call(method, path, {**NEW, **change}, token=staff)
        assert_error(reply, 400, "invalid", f"{field}: ")
        assert field in reply.body["errors"]
    with db(offers):
        assert await Promotion.all().count() == 7
        assert (await Promotion.get(id=target.id)).name == "Promotion OPEN"


async def test_unknown_promotion_is_404_for_staff(app: Quart) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@example.com", Role.STAFF)
    assert_error(await api.get(f"{PROMOTIONS}/999/", token=staff), 404, "not_found")
    assert_error(await api.call("PUT", f"{PROMOTIONS}/999/", NEW, token=staff), 404, "not_found")
    assert_error(await api.call("DELETE", f"{PROMOTIONS}/999/", token=staff), 404, "not_found")


# --- permissions -------------------------------------------------------------------------

STAFF_CALLS = [
    ("GET", f"{PROMOTIONS}/", None),
    ("POST", f"{PROMOTIONS}/", NEW),
    ("GET", f"{PROMOTIONS}/1/", None),
    ("PUT", f"{PROMOTIONS}/1/", NEW),
    ("DELETE", f"{PROMOTIONS}/1/", None),
]


async def test_clients_cannot_manage_promotions(offers: Quart) -> None:
    api = API(offers)
    client = await token_for(offers, api, "client@example.com")
    for method, path, body in STAFF_CALLS:
        assert_error(await api.call(method, path, body, token=client), 403, "permission_denied")
    await assert_promotions_untouched(offers)


async def test_anonymous_cannot_manage_promotions(offers: Quart) -> None:
    api = API(offers)
    for method, path, body in STAFF_CALLS:
        reply = await api.call(method, path, body)
        assert_error(reply, 401, "not_authenticated")
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    await assert_promotions_untouched(offers)


async def assert_promotions_untouched(app: Quart) -> None:
    with db(app):
        assert await Promotion.all().count() == 7
        first = await Promotion.get(id=1)
    assert first.code == "OPEN" and first.is_active is True


# --- PATCH (the staff page's toggle and edit) ----------------------------------------------


async def test_patch_changes_only_the_fields_sent(offers: Quart) -> None:
    api = API(offers)
    staff = await token_for(offers, api, "staff@example.com", Role.STAFF)
    with db(offers):
        window = await Promotion.get(code="WINDOW")
    path = f"{PROMOTIONS}/{window.id}/"
    before = (await api.get(path, token=staff)).body
    # admin/promotions/page.tsx handleToggleActive
    off = await api.call("PATCH", path, {"is_active": False}, token=staff)
    assert off.status == 200, off.body
    assert off.body == {**before, "is_active": False}
    assert "WINDOW" not in [p["code"] for p in (await api.get(f"{PROMOTIONS}/active/")).body]
    renamed = await api.call(
        "PATCH", path, {"name": "Window sale", "code": "window2", "usage_limit": 10}, token=staff
    )
    assert renamed.status == 200, renamed.body
    assert renamed.body["code"] == "WINDOW2" and renamed.body["name"] == "Window sale"
    assert renamed.body["usage_limit"] == 10 and renamed.body["usage_count"] == 2
    assert renamed.body["discount_value"] == "12.50" and renamed.body["is_active"] is False
    # The page's date inputs send bare dates: the start of the day, the end of the day (UTC).
    dated = await api.call(
        "PATCH", path, {"start_date": "2030-01-01", "end_date": "2030-01-31"}, token=staff
    )
    assert dated.status == 200, dated.body
    assert datetime.fromisoformat(dated.body["start_date"]) == datetime(2030, 1, 1, tzinfo=UTC)
    end = datetime.fromisoformat(dated.body["end_date"])
    assert end.date().isoformat() == "2030-01-31" and end.hour == 23
    assert (await api.get(path, token=staff)).body == dated.body


async def test_patch_is_validated_as_a_whole(offers: Quart) -> None:
    api = API(offers)
    staff = await token_for(offers, api, "staff@example.com", Role.STAFF)
    with db(offers):
        window = await Promotion.get(code="WINDOW")
    path = f"{PROMOTIONS}/{window.id}/"
    before = (await api.get(path, token=staff)).body
    far = {"start_date": "2099-01-01T00:00:00Z"}  # after the stored end_date
    assert_error(await api.call("PATCH", path, far, token=staff), 400, "invalid", "end_date: ")
    over = {"discount_value": "150"}  # a percentage promotion
    assert_error(await api.call("PATCH", path, over, token=staff), 400, "invalid")
    for bad, field in (
        ({"usage_limit": 0}, "usage_limit"),
        ({"usage_limit": 10**20}, "usage_limit"),
        ({"discount_value": 10**20}, "discount_value"),
        ({"name": "x\x00"}, "name"),
        ({"description": "x\x00"}, "description"),
        ({"product_types": ["a\x00"]}, "product_types.0"),
        ({"code": "a b"}, "code"),
        ({"name": None}, "name"),
    ):
        reply = await api.call("PATCH", path, bad, token=staff)
        assert_error(reply, 400, "invalid", f"{field}: ")
    not_object = await api.call("PATCH", path, ["is_active"], token=staff)
    assert_error(not_object, 400, "invalid")
    taken = await api.call("PATCH", path, {"code": "open"}, token=staff)
    assert_error(taken, 409, "code_taken", "code: ")
    assert (await api.get(path, token=staff)).body == before
    assert_error(
        await api.call("PATCH", f"{PROMOTIONS}/999/", {"is_active": False}, token=staff),
        404,
        "not_found",
    )


async def test_patch_needs_staff(offers: Quart) -> None:
    api = API(offers)
    client = await token_for(offers, api, "client@example.com")
    body = {"is_active": False}
    assert_error(
        await api.call("PATCH", f"{PROMOTIONS}/1/", body, token=client), 403, "permission_denied"
    )
    assert_error(await api.call("PATCH", f"{PROMOTIONS}/1/", body), 401, "not_authenticated")
    await assert_promotions_untouched(offers)


async def test_create_from_the_staff_page_with_bare_dates(app: Quart) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@example.com", Role.STAFF)
    body = {
        "name": "Launch",
        "code": "LAUNCH",
        "promotion_type": "discount",
        "discount_type": "percentage",
        "discount_value": 20,
        "start_date": "2026-01-01",
        "end_date": "2026-01-01",  # a one-day promotion: valid all that day
        "is_active": True,
    }
    created = await api.post(f"{PROMOTIONS}/", body, token=staff)
    assert created.status == 201, created.body
    start = datetime.fromisoformat(created.body["start_date"])
    end = datetime.fromisoformat(created.body["end_date"])
    assert start == datetime(2026, 1, 1, tzinfo=UTC) and end > start
    assert end.date() == start.date()


# --- abuse: private codes, guessing, reuse ------------------------------------------------


async def test_private_promotions_are_not_listed_but_still_work(offers: Quart) -> None:
    await promotion(
        offers,
        "STAFF90",
        is_public=False,
        discount_type=DiscountType.PERCENTAGE,
        discount_value=Decimal("90"),
    )
    listed = (await API(offers).get(f"{PROMOTIONS}/active/")).body
    assert [p["code"] for p in listed] == ["OPEN", "WINDOW", "STARTED"]
    assert all(p["is_public"] is True for p in listed)
    handed_out = await API(offers).post(f"{PROMOTIONS}/validate_code/", {"code": "staff90"})
    assert handed_out.status == 200 and handed_out.body["is_public"] is False


async def test_staff_set_is_public_and_max_uses_per_customer(app: Quart) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@example.com", Role.STAFF)
    created = await api.post(f"{PROMOTIONS}/", NEW, token=staff)
    assert created.status == 201, created.body
    # What the storefront's staff page sends (neither field): listed, once per customer.
    assert created.body["is_public"] is True and created.body["max_uses_per_customer"] == 1
    private = await api.post(
        f"{PROMOTIONS}/",
        {**NEW, "code": "VIP-90", "is_public": False, "max_uses_per_customer": None},
        token=staff,
    )
    assert private.status == 201, private.body
    assert private.body["is_public"] is False and private.body["max_uses_per_customer"] is None
    listed = (await api.get(f"{PROMOTIONS}/active/")).body
    assert [p["code"] for p in listed] == ["SPRING-25"]
    published = await api.call(
        "PATCH", f"{PROMOTIONS}/{private.body['id']}/", {"is_public": True}, token=staff
    )
    assert published.status == 200 and published.body["max_uses_per_customer"] is None
    assert [p["code"] for p in (await api.get(f"{PROMOTIONS}/active/")).body] == [
        "SPRING-25",
        "VIP-90",
    ]
    for bad in (0, -1, "x"):
        refused = await api.post(
            f"{PROMOTIONS}/", {**NEW, "code": "BAD-1", "max_uses_per_customer": bad}, token=staff
        )
        assert refused.status == 400 and "max_uses_per_customer" in refused.body["errors"]


async def test_the_demo_coupon_is_public(app: Quart) -> None:
    await seed_catalog(app)
    listed = (await API(app).get(f"{PROMOTIONS}/active/")).body
    assert [p["code"] for p in listed] == ["WELCOME10"]


async def test_validate_code_is_rate_limited_per_address(app_factory: Any) -> None:
    application = app_factory(COUPON_CHECKS_PER_MINUTE="3")
    async with application.test_app():
        await prepare_database(application)
        await seed_catalog(application)
        guesser = API(application)
        statuses = [
            (await guesser.post(f"{PROMOTIONS}/validate_code/", {"code": f"GUESS{i}"})).status
            for i in range(3)
        ]
        limited = await guesser.post(f"{PROMOTIONS}/validate_code/", {"code": "WELCOME10"})
    assert statuses == [400, 400, 400]
    assert_error(limited, 429, "rate_limited")
