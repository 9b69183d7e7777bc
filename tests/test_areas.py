"""Areas stand alone: ``create_app(areas=(name,))`` installs the core and that area only, and
the app keeps every guarantee of the full app.

- each area's app has exactly its own blueprints, routes and CLI commands plus the core's;
- the CORS contract (tests/test_cors_contract.py, whose checks are reused as they are) holds
  on each area's app: every route of the area x method x one origin per class (allowed,
  disallowed, none) x two modes (defaults; DEBUG+TESTING+PROPAGATE_EXCEPTIONS), the strict-
  slash redirects, and every forced outcome (2xx to 503, errors from views and hooks,
  preflights); the full matrix (every origin class and mode) runs on the full app only;
- another area's route is a JSON 404 that carries the CORS headers;
- the chat area alone accepts and refuses WebSocket handshakes exactly as the full app does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.testing.connections import WebsocketResponseError
from werkzeug.routing import Rule

from slyker import create_app
from slyker.areas import ALL_AREAS
from tests import test_cors_contract as matrix
from tests.api import API, FRONTEND_ORIGIN
from tests.chat_client import chat_socket
from tests.conftest import TEST_SECRET_KEY, database_settings, prepare_database
from tests.contract_app import create_contract_app
from tests.cors_contract import ORIGIN_CLASSES, assert_cors_contract

CORE_BLUEPRINTS = frozenset({"health"})
AREA_BLUEPRINTS: dict[str, frozenset[str]] = {
    "accounts": frozenset({"accounts", "clients"}),
    "billing": frozenset(
        {
            "catalog",
            "domains",
            "carts",
            "promotions",
            "invoices",
            "payments",
            "paynow",
            "subscriptions",
            "domain_registrations",
        }
    ),
    "chat": frozenset({"chat"}),
}
AREA_COMMANDS: dict[str, frozenset[str]] = {
    "accounts": frozenset({"create-user"}),
    "billing": frozenset({"load-demo-catalog"}),
    "chat": frozenset(),
}
# One origin of each kind: the full matrix covers the other allowed and refused shapes.
AREA_ORIGIN_CLASSES = ("allowed-exact", "disallowed", "missing")
AREA_MODES = ("defaults", "debug+testing+propagate")


def blueprint_of(rule: Rule) -> str:
    """The rule's blueprint; "" for the app's own routes (QuartSchema's, which are core)."""
    return rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else ""


def http_rules(app: Quart) -> list[Rule]:
    return [rule for rule in app.url_map.iter_rules() if not rule.websocket]


def area_rules(area: str) -> list[Rule]:
    """The HTTP routes of ``area``'s app: its own and the core's (the probe routes are the
    forced outcomes' business)."""
    app = create_contract_app({"SECRET_KEY": TEST_SECRET_KEY}, areas=(area,))
    return [rule for rule in http_rules(app) if blueprint_of(rule) != "probe"]


ROUTES = [(area, rule) for area in ALL_AREAS for rule in area_rules(area)]
ROUTE_IDS = [f"{area}:{rule.endpoint}:{rule.rule}" for area, rule in ROUTES]
SLASH_ROUTES = [
    (area, rule) for area, rule in ROUTES if rule.rule.endswith("/") and rule.rule != "/"
]
SLASH_IDS = [f"{area}:{rule.endpoint}:{rule.rule}" for area, rule in SLASH_ROUTES]


@pytest.fixture(scope="module")
async def area_apps(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[Any, Quart]]:
    """One started contract app per area and mode, with its own database."""
    apps: dict[tuple[str, str], Quart] = {}
    async with AsyncExitStack() as stack:
        for area in ALL_AREAS:
            for mode in AREA_MODES:
                data_dir: Path = tmp_path_factory.mktemp(f"area-{area}-{mode}")
                app = create_contract_app(
                    {"DATA_DIR": str(data_dir), **matrix.MODES[mode]}, areas=(area,)
                )
                await stack.enter_async_context(app.test_app())
                await prepare_database(app)
                apps[area, mode] = app
        yield apps


# --- what each area's app holds ---------------------------------------------------------------


def test_unknown_areas_are_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"unknown area.*'bill'.*accounts, billing, chat"):
        create_app({"DEBUG": True}, areas=("billing", "bill"))
    with pytest.raises(ValueError, match="not the string 'billing'"):
        create_app({"DEBUG": True}, areas="billing")


@pytest.mark.parametrize("area", ALL_AREAS)
def test_an_area_app_has_its_routes_and_the_cores_only(area: str) -> None:
    full = create_app({"DEBUG": True})
    alone = create_app({"DEBUG": True}, areas=(area,))
    wanted = CORE_BLUEPRINTS | AREA_BLUEPRINTS[area]
    assert set(alone.blueprints) == wanted
    wanted |= {""}  # the OpenAPI document and its pages
    # Every route of the area, as the full app has it, and nothing else.
    routes = {
        (r.rule, r.endpoint, frozenset(r.methods or ()), r.websocket)
        for r in alone.url_map.iter_rules()
    }
    expected = {
        (r.rule, r.endpoint, frozenset(r.methods or ()), r.websocket)
        for r in full.url_map.iter_rules()
        if blueprint_of(r) in wanted
    }
    assert routes == expected
    assert set(alone.cli.commands) - {"schema"} == AREA_COMMANDS[area]


def test_all_areas_is_the_default_and_the_order_given_does_not_matter() -> None:
    full = create_app({"DEBUG": True})
    assert set(full.blueprints) == CORE_BLUEPRINTS.union(*AREA_BLUEPRINTS.values())
    reordered = create_app({"DEBUG": True}, areas=reversed(ALL_AREAS))
    assert [r.rule for r in reordered.url_map.iter_rules()] == [
        r.rule for r in full.url_map.iter_rules()
    ]


async def test_billing_alone_answers_the_catalog(area_apps: dict[Any, Quart]) -> None:
    """No 500 ("default_connection cannot be None"): the core opens the database."""
    app = area_apps["billing", "defaults"]
    reply = await API(app).get("/api/services/hosting-products/")
    assert reply.status == 200, reply.body
    assert reply.body["results"] == []


# --- the CORS contract on each area's app -----------------------------------------------------


@pytest.mark.contract  # the matrix: out of the fast loop, in ./dev test
@pytest.mark.parametrize("mode", AREA_MODES)
@pytest.mark.parametrize("origin_class", AREA_ORIGIN_CLASSES)
@pytest.mark.parametrize("method", matrix.METHODS)
@pytest.mark.parametrize(("area", "rule"), ROUTES, ids=ROUTE_IDS)
async def test_every_route_of_the_area(
    area_apps: dict[Any, Quart],
    area: str,
    rule: Rule,
    method: str,
    origin_class: str,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await matrix.test_every_route_every_method(
        area_apps[area, mode], rule, method, origin_class, caplog
    )


@pytest.mark.contract  # the matrix: out of the fast loop, in ./dev test
@pytest.mark.parametrize("origin_class", AREA_ORIGIN_CLASSES)
@pytest.mark.parametrize(("area", "rule"), SLASH_ROUTES, ids=SLASH_IDS)
async def test_strict_slash_redirects_of_the_area(
    area_apps: dict[Any, Quart], area: str, rule: Rule, origin_class: str
) -> None:
    await matrix.test_strict_slash_redirects_carry_the_headers(
        area_apps[area, "defaults"], rule, origin_class
    )


@pytest.mark.contract  # the matrix: out of the fast loop, in ./dev test
@pytest.mark.parametrize("mode", AREA_MODES)
@pytest.mark.parametrize("origin_class", AREA_ORIGIN_CLASSES)
@pytest.mark.parametrize("outcome", list(matrix.OUTCOMES))
@pytest.mark.parametrize("area", ALL_AREAS)
async def test_every_outcome_on_the_area(
    area_apps: dict[Any, Quart],
    area: str,
    outcome: str,
    origin_class: str,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await matrix.test_every_outcome(area_apps[area, mode], outcome, origin_class, caplog)


def other_areas_paths(area: str) -> list[str]:
    full = create_contract_app({"SECRET_KEY": TEST_SECRET_KEY})
    others = set().union(*(AREA_BLUEPRINTS[name] for name in ALL_AREAS if name != area))
    paths = {matrix.sample_path(rule) for rule in http_rules(full) if blueprint_of(rule) in others}
    return sorted(paths)


@pytest.mark.parametrize("area", ALL_AREAS)
async def test_another_areas_routes_are_json_404s_with_cors(
    area_apps: dict[Any, Quart], area: str
) -> None:
    app = area_apps[area, "defaults"]
    paths = other_areas_paths(area)
    assert paths
    for path in paths:
        for method in ("GET", "POST"):
            call = matrix.Call(method, path)
            status, headers, body = await matrix.send(app, "allowed-exact", call)
            assert status == 404, (method, path, status, body[:300])
            assert json.loads(body)["code"] == "not_found"
            assert_cors_contract("allowed-exact", status, headers, body, method=method)
        # A preflight is answered before routing, as on the full app.
        status, headers, body = await matrix.send(
            app, "allowed-exact", matrix.Call("PREFLIGHT", path)
        )
        assert status == 204
        assert_cors_contract("allowed-exact", status, headers, body, preflight=True)


# --- WebSockets -------------------------------------------------------------------------------


VISITOR_PATHS = ("/ws/chat/sales/", "/livechat/ws/sales/")
AGENTS_PATH = "/ws/chat/agents/"
REFUSED_ORIGINS = {"disallowed": ORIGIN_CLASSES["disallowed"], "missing": None}


async def handshake(app: Quart, path: str, origin: str | None) -> tuple[str, Any]:
    """("accepted", the first frame's type) or ("refused", (status, JSON body))."""
    try:
        async with chat_socket(app, path, origin=origin) as socket:
            frame = await socket.receive()
    except WebsocketResponseError as refused:
        body = json.loads(await refused.response.get_data())
        return "refused", (refused.response.status_code, body)
    return "accepted", frame["type"]


@pytest.fixture(scope="module")
async def socket_apps(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Quart]]:
    """The chat area alone, billing alone and the full app, started side by side (the
    settings of conftest's ``settings_env``)."""
    async with AsyncExitStack() as stack:
        apps = {}
        for name, areas in (("chat", ("chat",)), ("billing", ("billing",)), ("full", ALL_AREAS)):
            settings = {
                "SECRET_KEY": TEST_SECRET_KEY,
                "ALLOWED_HOSTS": "localhost",
                **database_settings(tmp_path_factory.mktemp(f"sockets-{name}")),
            }
            app = create_app(settings, areas=areas)
            await stack.enter_async_context(app.test_app())
            await prepare_database(app)
            apps[name] = app
        yield apps


@pytest.mark.parametrize("path", VISITOR_PATHS)
async def test_chat_alone_accepts_an_allowed_origin(
    socket_apps: dict[str, Quart], path: str
) -> None:
    alone = await handshake(socket_apps["chat"], path, FRONTEND_ORIGIN)
    assert alone == await handshake(socket_apps["full"], path, FRONTEND_ORIGIN)
    assert alone == ("accepted", "connection_established")


@pytest.mark.parametrize("origin", REFUSED_ORIGINS.values(), ids=REFUSED_ORIGINS.keys())
@pytest.mark.parametrize("path", [*VISITOR_PATHS, AGENTS_PATH])
async def test_chat_alone_refuses_a_bad_origin_before_accept(
    socket_apps: dict[str, Quart], path: str, origin: str | None
) -> None:
    alone = await handshake(socket_apps["chat"], path, origin)
    assert alone == await handshake(socket_apps["full"], path, origin)
    assert alone[0] == "refused" and alone[1][0] == 403, alone


async def test_without_chat_a_chat_socket_is_an_unknown_socket(
    socket_apps: dict[str, Quart],
) -> None:
    """billing alone refuses the chat path as the full app refuses any unknown socket path
    (with a JSON error body)."""
    refused = await handshake(socket_apps["billing"], VISITOR_PATHS[0], FRONTEND_ORIGIN)
    unknown = await handshake(socket_apps["full"], "/ws/no-such-socket/", FRONTEND_ORIGIN)
    assert refused == unknown
    assert refused[0] == "refused" and refused[1][0] == 404  # as HTTP's missing route
    assert refused[1][1]["status"] == refused[1][0] and refused[1][1]["code"] == "not_found"
