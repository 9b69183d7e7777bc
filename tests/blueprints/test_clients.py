"""Staff's client list (``/api/clients/clients/``): what the staff invoice form picks a client
from. Runs on SQLite, and on PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

from quart import Quart

from slyker.models.accounts import Role
from tests.api import API, assert_error, token_for

CLIENTS = "/api/clients/clients/"


async def register(api: API, email: str, **fields: str) -> int:
    reply = await api.post(
        "/api/accounts/register/",
        {"email": email, "password": "Harare-2026!", "first_name": "Tariro", **fields},
    )
    assert reply.status == 201, reply.body
    return int(reply.body["user"]["id"])


async def test_staff_list_clients_with_what_the_pages_print(app: Quart) -> None:
    api = API(app)
    await register(api, "tariro@example.co.zw", company_name="Tariro Designs", city="Harare")
    await register(api, "chipo@example.co.zw", last_name="Moyo")
    staff = await token_for(app, api, "staff@slyker.test", Role.STAFF)

    reply = await api.get(CLIENTS, token=staff)

    assert reply.status == 200, reply.body
    by_email = {client["user"]["email"]: client for client in reply.body["results"]}
    assert by_email["tariro@example.co.zw"]["company_name"] == "Tariro Designs"
    assert by_email["tariro@example.co.zw"]["city"] == "Harare"
    # No company: the pages still print a name.
    assert by_email["chipo@example.co.zw"]["company_name"] == "Tariro Moyo"
    assert reply.body["count"] == len(reply.body["results"]) == 3  # the staff member too

    searched = await api.get(CLIENTS + "?search=designs", token=staff)
    assert [c["user"]["email"] for c in searched.body["results"]] == ["tariro@example.co.zw"]

    one = by_email["chipo@example.co.zw"]
    detail = await api.get(f"{CLIENTS}{one['id']}/", token=staff)
    assert detail.status == 200 and detail.body == one


async def test_clients_are_staff_only(app: Quart) -> None:
    api = API(app)
    client_id = await register(api, "tariro@example.co.zw")
    client = await api.login("tariro@example.co.zw", "Harare-2026!")

    assert_error(await api.get(CLIENTS), 401, "not_authenticated")
    assert_error(await api.get(CLIENTS, token=client), 403, "permission_denied")
    assert_error(await api.get(f"{CLIENTS}{client_id}/", token=client), 403, "permission_denied")


async def test_unknown_client_and_bad_search(app: Quart) -> None:
    api = API(app)
    staff = await token_for(app, api, "staff@slyker.test", Role.STAFF)

    assert_error(await api.get(f"{CLIENTS}999999/", token=staff), 404, "not_found")
    assert_error(await api.get(f"{CLIENTS}{2**31}/", token=staff), 404, "not_found")
    # NUL in any query string is refused before the view (slyker/validation.py).
    assert_error(await api.get(CLIENTS + "?search=a%00b", token=staff), 400, "invalid")
    assert_error(await api.get(CLIENTS + "?search=" + "x" * 101, token=staff), 400, "bad_request")
