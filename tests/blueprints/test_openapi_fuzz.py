"""Property-based fuzzing of every operation in slyker's own ``/openapi.json`` (schemathesis):
valid and invalid path ids, query strings and JSON bodies, anonymous, as a client and as
staff, with and without the caller's own cart/invoice ids and the anonymous cart token. No
answer may be a 5xx, and every error is the one JSON error shape.

In-process through the ASGI app (schemathesis runs it on its own event-loop thread, lifespan
included), on the database the suite runs on (``SLYKER_TEST_DATABASE=postgres`` too), with
the demo catalog, a client with a checked-out invoice and a staff user. A bounded number of
examples per operation and mode (``FUZZ_EXAMPLES``, default 25) keeps it to a minute or two.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi

from slyker import create_app
from slyker.models.accounts import Role
from slyker.services.whois import DEFAULT_RDAP_SERVERS, DEFAULT_WHOIS_SERVERS
from tests.api import API, make_user, seed_catalog
from tests.conftest import TEST_SECRET_KEY, database_settings, prepare_database
from tests.fake_registries import closed_port

pytestmark = [
    pytest.mark.fuzz,
    # schemathesis' own strategies use `random`; nothing this test can change.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CART_TOKEN = "X-Cart-Token"


@dataclass(frozen=True)
class Caller:
    """Who a fuzzed request comes from, and the ids that are theirs."""

    name: str
    headers: dict[str, str]
    own_ids: dict[str, int]


def fuzz_settings(tmp_path: Path) -> dict[str, Any]:
    # Domain checks must not reach the internet: every registry is a refused loopback port.
    refused = f"http://127.0.0.1:{closed_port()}/rdap/"
    return {
        "SECRET_KEY": TEST_SECRET_KEY,
        **database_settings(tmp_path),
        "WHOIS_RDAP_SERVERS": ",".join(f"{s}={refused}" for s in DEFAULT_RDAP_SERVERS),
        "WHOIS_SERVERS": ",".join(f"{s}=" for s in DEFAULT_WHOIS_SERVERS),
        "WHOIS_TIMEOUT": "1",
        "API_DOCS": "true",  # the schema under test is served at /openapi.json
        "ALLOWED_HOSTS": "localhost,testserver",  # schemathesis' ASGI client's Host
    }


async def _seed(settings_env: dict[str, Any]) -> list[Caller]:
    """The catalog, a client whose cart became invoice 1 (bank), a staff user, and an
    anonymous cart: callers with their tokens and own ids."""
    app = create_app(settings_env)
    async with app.test_app():
        await prepare_database(app)
        await seed_catalog(app)
        await make_user(app, "client@example.com")
        await make_user(app, "staff@example.com", Role.STAFF)
        api = API(app, origin=None, cookies=False)
        client = await api.login("client@example.com")
        staff = await api.login("staff@example.com")
        cart = (await api.get("/api/billing/carts/current/", token=client)).body["id"]
        added = await api.post(
            f"/api/billing/carts/{cart}/add_item/",
            {"hosting_product": 1, "billing_cycle": "monthly"},
            token=client,
        )
        assert added.status == 201, added.body
        checkout = await api.post(
            f"/api/billing/carts/{cart}/checkout/",
            {
                "billing_info": {"full_name": "Client", "email": "client@example.com"},
                "payment_method": "bank",
            },
            token=client,
        )
        assert checkout.status == 201, checkout.body
        invoice = checkout.body["invoice_id"]
        client_cart = (await api.get("/api/billing/carts/current/", token=client)).body["id"]
        anonymous = await api.get("/api/billing/carts/current/")
    return [
        Caller("anonymous", {}, {}),
        Caller(
            "anonymous cart",
            {CART_TOKEN: anonymous.headers[CART_TOKEN]},
            {"cart_id": anonymous.body["id"]},
        ),
        Caller(
            "client",
            {"Authorization": f"Bearer {client}"},
            {"cart_id": client_cart, "invoice_id": invoice},
        ),
        Caller(
            "staff",
            {"Authorization": f"Bearer {staff}"},
            {"invoice_id": invoice, "product_id": 1, "promotion_id": 1},
        ),
    ]


def _run_in_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` to completion on a loop of its own (the test's loop is not running,
    and schemathesis keeps the app on a third)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as error:  # re-raised in the test's thread
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture
def callers(tmp_path: Path, cheap_password_hashing: None) -> Iterator[list[Caller]]:
    yield _run_in_thread(_seed(fuzz_settings(tmp_path)))


@pytest.fixture
def fuzz_schema(tmp_path: Path, callers: list[Caller]) -> Iterator[Any]:
    app = create_app(fuzz_settings(tmp_path))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    asgi.shutdown_lifespans()  # closes the app's database connections


def check_no_server_error(response: Any, case: Any) -> None:
    """The custom check: never a 5xx, and every error is slyker's JSON error body."""
    status = response.status_code
    where = f"{case.method} {case.formatted_path}"
    assert status < 500, f"{where} answered {status}. Reproduce: {case.as_curl_command()}"
    if status >= 400:
        body = json.loads(response.text)
        assert isinstance(body.get("error"), str) and body["error"], (where, body)
        assert body["status"] == status, (where, body)


def fuzz_operation(operation: Any, mode: Any, callers: list[Caller]) -> None:
    """``EXAMPLES`` cases of one operation in one mode (valid or invalid input); raises the
    (shrunk) failing example."""

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=False,
    )
    def run(case: Any, data: Any) -> None:
        caller = data.draw(st.sampled_from(callers), label="caller")
        for name in case.path_parameters or {}:
            own = caller.own_ids.get(name)
            if own is not None and data.draw(st.booleans(), label=f"own {name}"):
                case.path_parameters[name] = own
        response = case.call(headers={**(case.headers or {}), **caller.headers})
        check_no_server_error(response, case)

    run()


def test_no_input_reaches_a_server_error(fuzz_schema: Any, callers: list[Caller]) -> None:
    failures: list[str] = []
    operations = 0
    for result in fuzz_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(operation, mode, callers)
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # nothing to make invalid (no input)
            except Exception as error:  # every operation is fuzzed; all failures reported
                name = f"{operation.method.upper()} {operation.path}"
                failures.append(f"{name} ({mode.value}): {type(error).__name__}: {error}")
    assert operations > 50  # the whole API was described and fuzzed
    assert not failures, "\n\n".join(failures)
