"""The real storefront's journeys, end to end, in Debian's Chromium (issue: storefront journeys).

The built storefront (``tests/storefront.py``) runs against a live slyker whose third parties are
servers this module starts on loopback: an RDAP and a WHOIS server (domain search) and a Paynow
simulator (checkout). A shopper searches a domain, adds a plan and the domain, applies a coupon,
signs up with a phone number, pays with Paynow, and finds the subscription, the domain and the
invoice amount on the dashboard; two tabs refreshing the same session at once both stay signed in.

Each step records what the page showed in a transcript (printed with ``-s``, and on failure).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.chromium import launched_chromium, require_chromium
from tests.conftest import POSTGRES_URL, REDIS_URL, TEST_DATABASE, postgres_admin
from tests.fake_registries import REGISTERED, FakeHTTPRegistry
from tests.live_servers import (
    REPO_ROOT,
    LiveServer,
    create_user,
    free_port,
    migrate,
    run_command,
    slyker_env,
    spawn,
    venv_tool,
    wait_for_health,
)
from tests.live_servers import Hypercorn as HypercornSpec
from tests.mail_server import SMTPServer, smtp_server
from tests.paynow_simulator import PaynowSimulator
from tests.storefront import (
    StorefrontServers,
    build_storefront,
    preferred_api_port,
    serve_storefront,
)

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = [pytest.mark.browser, pytest.mark.live]

STEP_TIMEOUT_MS = 30_000
STAFF_EMAIL = "staff@slykertech.test"
STAFF_PASSWORD = "Staff-passw0rd!"
SHOPPER = {
    "first_name": "Tariro",
    "last_name": "Moyo",
    "email": "tariro@example.co.zw",
    "phone_number": "787211325",
    "password": "Harare-2026!",
    "company_name": "Tariro Designs",
}
DOMAIN = "tariro-designs.co.zw"
# Extra settings for the journey's slyker (a way to try the journeys with other settings).
JOURNEY_SETTINGS = dict(
    item.split("=", 1) for item in os.environ.get("SLYKER_JOURNEY_SETTINGS", "").split() if item
)
TAKEN_DOMAIN = "slykertech.co.zw"


@dataclass
class Transcript:
    """What each step of a journey showed; printed at the end and on failure."""

    lines: list[str] = field(default_factory=list)

    def step(self, name: str, shown: str) -> None:
        line = f"{len(self.lines) + 1:2}. {name}: {shown}"
        self.lines.append(line)
        print(line, flush=True)

    def __str__(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Stack:
    api: LiveServer
    storefront: StorefrontServers
    env: dict[str, str]
    secret_key: str

    def logs(self) -> str:
        return f"--- slyker\n{self.api.log()}\n{self.storefront.logs()}"


def start_api(port: int, env: dict[str, str], log_dir: Path, workers: int) -> LiveServer:
    """slyker as deployed (``python -m slyker serve --config hypercorn.toml``) on ``port``,
    the port the storefront build has baked in."""
    spec = HypercornSpec(
        "journey-api",
        env,
        args=("--config", str(REPO_ROOT / "hypercorn.toml")),
        supervised=True,
        workers=workers,
    )
    server = LiveServer("journey-api", port, log_dir / "journey-api.log")
    server.process = spawn(spec.command(port, None), server.log_path, env)
    problem = wait_for_health(port, server.process, timeout=30)
    if problem is not None:
        server.stop()
        raise RuntimeError(f"slyker did not start on {port}: {problem}\n{server.log()}")
    return server


@pytest.fixture(scope="module")
async def registry() -> AsyncIterator[FakeHTTPRegistry]:
    """.co.zw's registry lookup page (ZISPA's kind) on loopback: one name taken, others free."""
    async with FakeHTTPRegistry(behaviours={TAKEN_DOMAIN: REGISTERED}) as server:
        yield server


@pytest.fixture(scope="module")
def paynow() -> Iterator[PaynowSimulator]:
    simulator = PaynowSimulator().start()
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SMTPServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    registry: FakeHTTPRegistry,
    paynow: PaynowSimulator,
    smtp: SMTPServer,
) -> Iterator[Stack]:
    require_chromium()
    directory = tmp_path_factory.mktemp("storefront")
    api_port = preferred_api_port()
    build = build_storefront(api_port)
    # On SQLite the embedded default (one worker); on PostgreSQL the production shape: two
    # workers sharing Redis, on a database of the journey's own (migrated, not generated).
    database: dict[str, str] = {}
    workers = 1
    if TEST_DATABASE == "postgres":
        name = f"slyker_journey_{os.getpid()}"
        asyncio.run(
            postgres_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        )
        database = {
            "DATABASE_URL": POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}",
            "REDIS_URL": REDIS_URL.rsplit("/", 1)[0] + "/14",
        }
        workers = 2
    env = slyker_env(
        **database,
        DATA_DIR=str(directory / "data"),
        ALLOWED_HOSTS="localhost,127.0.0.1",
        LOG_LEVEL="INFO",
        WHOIS_SERVERS=f"co.zw={registry.lookup_url}",
        PAYNOW_INTEGRATION_ID=paynow.integration_id,
        PAYNOW_INTEGRATION_KEY=paynow.integration_key,
        PAYNOW_API_URL=paynow.url,
        PAYNOW_RESULT_URL=f"http://127.0.0.1:{api_port}/api/billing/paynow/result/",
    )
    env.update({name: str(value) for name, value in smtp.settings().items()})
    env.update(JOURNEY_SETTINGS)
    # slyker must allow the page's origin from the start: its port is chosen first.
    page_port = free_port()
    env["CORS_ALLOWED_ORIGINS"] = f"http://localhost:{page_port}"
    env["PAYNOW_RETURN_URL"] = f"http://localhost:{page_port}/dashboard/invoices"
    env["PASSWORD_RESET_URL"] = (
        f"http://localhost:{page_port}/reset-password?uid={{uid}}&token={{token}}"
    )
    migrate(env)
    run_command(
        [*venv_tool("quart", "quart"), "--app", "slyker:create_app()", "load-demo-catalog"], env
    )
    create_user(env, REPO_ROOT, STAFF_EMAIL, STAFF_PASSWORD, "admin", first_name="Rudo")
    api = start_api(api_port, env, directory, workers)
    try:
        storefront = serve_storefront(build, api_port, directory / "web", page_port=page_port)
    except BaseException:
        api.stop()
        raise
    yield Stack(api, storefront, env, env["SECRET_KEY"])
    storefront.stop()
    api.stop()
    if database:
        name = database["DATABASE_URL"].rsplit("/", 1)[1]
        asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
async def browser(stack: Stack) -> AsyncIterator[Any]:
    async with (
        playwright_api.async_playwright() as playwright,
        launched_chromium(playwright) as chromium,
    ):
        yield chromium


class Shopper:
    """One browser profile on the storefront: pages share cookies and localStorage (tabs)."""

    def __init__(self, context: Any, stack: Stack, transcript: Transcript) -> None:
        self.context = context
        self.stack = stack
        self.transcript = transcript
        self.dialogs: list[str] = []
        self.failures: list[str] = []

    async def new_tab(self) -> Any:
        page = await self.context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.on("dialog", self._accept_dialog)
        page.on("requestfailed", self._request_failed)
        page.on(
            "console",
            lambda m: self.failures.append(m.text) if "CORS" in m.text else None,
        )
        return page

    def _request_failed(self, request: Any) -> None:
        # A call to the API that the browser refused or lost (CORS shows as ERR_FAILED);
        # ERR_ABORTED is the page itself cancelling a fetch when it navigates away.
        api = f"http://localhost:{self.stack.api.port}/"
        if request.url.startswith(api) and "ERR_ABORTED" not in (request.failure or ""):
            self.failures.append(f"{request.method} {request.url} {request.failure}")

    async def _accept_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.accept()

    async def open(self, page: Any, path: str, settled: str = "networkidle") -> None:
        """Go to ``path``; the dashboard keeps polling, so there ``settled="load"``."""
        await page.goto(self.stack.storefront.url(path), wait_until=settled)


async def text_of(page: Any) -> str:
    return re.sub(r"\s+", " ", await page.inner_text("body"))


@pytest.fixture
async def shopper(browser: Any, stack: Stack) -> AsyncIterator[Shopper]:
    context = await browser.new_context(viewport={"width": 1280, "height": 1600})
    transcript = Transcript()
    try:
        yield Shopper(context, stack, transcript)
    finally:
        await context.close()


def expired_access_token(secret_key: str, user_id: int) -> str:
    """An access token for ``user_id`` that expired a minute ago, signed like slyker's."""
    from slyker.auth import ACCESS, ALGORITHM  # the claims slyker itself writes

    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "type": ACCESS,
        "jti": uuid.uuid4().hex,
        "iat": now - 7200,
        "exp": now - 60,
    }
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


async def test_shopper_journey(stack: Stack, shopper: Shopper, paynow: PaynowSimulator) -> None:
    """Search a domain → add a plan and the domain → coupon → sign up (phone kept) → Paynow →
    paid through the result URL → the dashboard shows the subscription, domain and amount."""
    say = shopper.transcript.step
    try:
        page = await shopper.new_tab()

        # 1. The plan cards print real specs.
        await shopper.open(page, "/services/hosting/shared")
        plans = await text_of(page)
        card = plans[plans.index("Starter Shared") :][:160]
        say("shared hosting plans", card)
        assert "NaN" not in plans and "undefined" not in plans, card
        assert re.search(r"\d+ GB Storage", card), card

        # 2. Domain search (one name a search on this page): a taken name, then a free one.
        search = page.get_by_placeholder(re.compile("Search for your domain name"))
        await shopper.open(page, "/services/domains")
        await search.fill(TAKEN_DOMAIN)
        await page.get_by_role("button", name=re.compile("^Search")).first.click()
        await page.get_by_text("Already Registered").wait_for()
        shown = await text_of(page)
        say("domain search (taken)", shown[shown.index(TAKEN_DOMAIN, shown.index("Search")) :][:80])
        await search.fill(DOMAIN)
        await page.get_by_role("button", name=re.compile("^Search")).first.click()
        await page.get_by_text("Available", exact=True).wait_for()
        shown = await text_of(page)
        say("domain search (free)", shown[shown.index(DOMAIN) :][:80])

        # 3. Register it: the register page checks availability again before adding it.
        await page.get_by_role("button", name="Register", exact=True).first.click()
        await page.wait_for_url(re.compile(r"/services/domains/register\?domain="))
        add = page.get_by_role("button", name=re.compile("Add to Cart"))
        await add.wait_for()
        await page.wait_for_function(
            "() => !document.body.innerText.includes('Checking')", timeout=STEP_TIMEOUT_MS
        )
        await add.click()
        await page.get_by_text(
            re.compile("Added to Cart|added to your cart", re.I)
        ).first.wait_for()
        say("domain registration page", "added to cart")

        # 4. The plan, for the new domain.
        await shopper.open(page, "/services/hosting/shared")
        await page.get_by_role("button", name="Select Plan").first.click()
        await page.get_by_placeholder("e.g. yourdomain.com").fill(DOMAIN)
        await page.locator("select").first.select_option("Africa")
        await page.get_by_role("button", name="Add to Cart").click()
        await page.wait_for_function("() => true")
        for _ in range(50):
            if shopper.dialogs:
                break
            await asyncio.sleep(0.1)
        say("add plan", f"dialog {shopper.dialogs[-1:]}")
        assert shopper.dialogs[-1:] == ["Added to cart successfully!"]

        # 5. The cart, with the coupon.
        await shopper.open(page, "/cart")
        await page.get_by_text("Have a coupon code?").click()
        await page.get_by_placeholder("Enter coupon code").fill("WELCOME10")
        await page.get_by_role("button", name="Apply").click()
        await page.get_by_text("WELCOME10").first.wait_for()
        cart = await text_of(page)
        summary = cart[cart.index("Shopping Cart") :][:700]
        say("cart with coupon", summary)
        assert "(2 items)" in cart and "Starter Shared" in cart and DOMAIN in cart, summary
        assert re.search(r"Discount.*-\$\d", cart), summary

        # 6. Checkout asks to sign in; sign up with a phone number, back to checkout.
        await page.get_by_text("Proceed to Checkout").click()
        await page.get_by_text("Sign In Required").wait_for()
        await shopper.open(page, "/signup?redirect=/checkout")
        steps = (  # the form's four steps: personal, contact, security, additional
            {"first_name": SHOPPER["first_name"], "last_name": SHOPPER["last_name"]},
            {"email": SHOPPER["email"], "phone_number": SHOPPER["phone_number"]},
            {"password": SHOPPER["password"], "confirmPassword": SHOPPER["password"]},
            {"company_name": SHOPPER["company_name"], "city": "Harare"},
        )
        for number, fields in enumerate(steps, 1):
            for name, value in fields.items():
                await page.locator(f"[name={name}]").fill(value)
            if number < len(steps):
                await page.get_by_role("button", name="Next").click()
        await page.locator("input[type=checkbox]").last.check()
        await page.get_by_role("button", name="Create Account").click()
        await page.wait_for_url(re.compile(r"/checkout"))
        phone = page.locator("[name=phone]")
        await phone.wait_for()
        await page.wait_for_function(
            "() => document.querySelector('[name=phone]').value !== ''", timeout=STEP_TIMEOUT_MS
        )
        say("checkout after sign-up", f"phone pre-filled {await phone.input_value()!r}")
        assert await phone.input_value() == "+263" + SHOPPER["phone_number"]

        # 7. Pay with Paynow (the form's default) on the simulator's page.
        for name, value in (("address", "1 Samora Machel Ave"), ("city", "Harare")):
            await page.locator(f"[name={name}]").fill(value)
        await page.locator("[name=country]").fill("Zimbabwe")
        assert await page.locator("[name=paymentMethod][value=paynow]").is_checked()
        await page.get_by_role("button", name=re.compile("Complete Order")).click()
        await page.wait_for_url(re.compile(re.escape(paynow.url)), timeout=STEP_TIMEOUT_MS)
        say("redirected to Paynow", f"{page.url}: {await text_of(page)}")
        await page.get_by_role("button", name=re.compile("^Pay USD")).click()
        await page.wait_for_url(re.compile(re.escape(stack.storefront.origin)))
        say("back from Paynow", page.url)

        # 8. The dashboard: subscription, domain, invoice amount.
        await shopper.open(page, "/dashboard/invoices", settled="load")
        await page.get_by_text("INV-").first.wait_for()
        invoices = await text_of(page)
        say("dashboard invoices", invoices[invoices.index("INV-") :][:200])
        assert "NaN" not in invoices and re.search(r"\$\d+\.\d\d", invoices)
        assert re.search(r"paid", invoices, re.I)
        await shopper.open(page, "/dashboard/services", settled="load")
        await page.get_by_text("Starter Shared").first.wait_for()
        services = await text_of(page)
        say("dashboard services", services[services.index("Starter Shared") :][:200])
        assert "Invalid Date" not in services and "NaN" not in services
        await shopper.open(page, "/dashboard/domains", settled="load")
        await page.get_by_text(DOMAIN).first.wait_for()
        domains = await text_of(page)
        say("dashboard domains", domains[domains.index(DOMAIN) :][:200])
        assert "Invalid Date" not in domains
        assert not shopper.failures, shopper.failures
    except BaseException:
        print(f"transcript:\n{shopper.transcript}\n{stack.logs()}")
        raise


async def test_two_tabs_refreshing_at_once_stay_signed_in(stack: Stack, shopper: Shopper) -> None:
    """Both tabs find the access token expired and refresh with the same refresh token at the
    same moment; both must stay signed in (the grace window), and the session must go on."""
    say = shopper.transcript.step
    email = "two-tabs@example.co.zw"
    status, body = stack.api.request(
        "POST",
        "/api/accounts/register/",
        {"email": email, "password": SHOPPER["password"], "first_name": "Chipo"},
    )
    assert status == 201, body
    try:
        first = await shopper.new_tab()
        await shopper.open(first, "/login")
        await first.locator("input[type=email]").fill(email)  # two steps: e-mail, password
        await first.get_by_role("button", name="Continue").click()
        await first.locator("input[type=password]").fill(SHOPPER["password"])
        await first.locator("button[type=submit]").click()
        await first.wait_for_url(re.compile(r"/dashboard"))
        stored = await first.evaluate("() => JSON.parse(localStorage.getItem('auth-storage'))")
        user_id = stored["state"]["user"]["id"]
        # Every tab's access token is now an expired one: the next API call is a 401 and the
        # tab refreshes with the refresh token they all share.
        stored["state"]["token"] = expired_access_token(stack.secret_key, user_id)
        await first.evaluate(
            "(s) => localStorage.setItem('auth-storage', JSON.stringify(s))", stored
        )
        second = await shopper.new_tab()
        refreshes: list[int] = []
        for tab in (first, second):
            tab.on(
                "response",
                lambda r: refreshes.append(r.status) if r.url.endswith("/token/refresh/") else None,
            )
        dashboard = stack.storefront.url("/dashboard/invoices")
        await asyncio.gather(
            first.goto(dashboard, wait_until="load"),
            second.goto(dashboard, wait_until="load"),
        )
        for _ in range(200):  # the tabs refresh after their first 401: wait for both
            if len(refreshes) >= 2:
                break
            await asyncio.sleep(0.1)
        for tab in (first, second):  # and for the page each then shows
            await tab.get_by_text(re.compile("Invoices", re.I)).first.wait_for()
        say("two tabs refreshed", f"refresh statuses {sorted(refreshes)}")
        assert len(refreshes) >= 2 and set(refreshes) == {200}, refreshes
        for name, tab in (("first", first), ("second", second)):
            assert "/login" not in tab.url, (name, tab.url)
            state = await tab.evaluate("() => JSON.parse(localStorage.getItem('auth-storage'))")
            assert state["state"]["isAuthenticated"], (name, state)
        # And the session goes on: the newest refresh token still works.
        latest = (await first.evaluate("() => JSON.parse(localStorage.getItem('auth-storage'))"))[
            "state"
        ]["refreshToken"]
        status, body = stack.api.request("POST", "/api/token/refresh/", {"refresh": latest})
        say("refresh after both tabs", f"{status}")
        assert status == 200, body
    except BaseException:
        print(f"transcript:\n{shopper.transcript}\n{stack.logs()}")
        raise


async def test_forgotten_password_is_reset_from_the_mailed_link(
    stack: Stack, shopper: Shopper, smtp: SMTPServer
) -> None:
    """Forgot password → the mail arrives over SMTP → its link opens the reset page → the new
    password signs in; the link works once."""
    say = shopper.transcript.step
    email, new_password = "forgetful@example.co.zw", "Bulawayo-2027!"
    status, body = stack.api.request(
        "POST",
        "/api/accounts/register/",
        {"email": email, "password": SHOPPER["password"], "first_name": "Nyasha"},
    )
    assert status == 201, body
    before = len(smtp.mailbox.snapshot())
    try:
        page = await shopper.new_tab()
        await shopper.open(page, "/forgot-password")
        await page.locator("input[type=email]").fill(email)
        await page.locator("button[type=submit]").click()
        mail = (await smtp.mailbox.wait_for(before + 1, seconds=20))[-1]
        say("forgot password", f"mail to {mail.rcpt_tos} with {mail.link()}")
        assert mail.rcpt_tos == [email]
        assert mail.link().startswith(stack.storefront.url("/reset-password?"))

        await page.goto(mail.link(), wait_until="networkidle")
        passwords = page.locator("input[placeholder='••••••••']")
        await passwords.nth(0).fill(new_password)
        await passwords.nth(1).fill(new_password)
        await page.locator("button[type=submit]").click()
        await page.get_by_text(re.compile("success|has been reset", re.I)).first.wait_for()
        shown = await text_of(page)
        say("reset page", shown[shown.lower().index("password") :][:120])

        await shopper.open(page, "/login")
        await page.locator("input[type=email]").fill(email)
        await page.get_by_role("button", name="Continue").click()
        await page.locator("input[type=password]").fill(new_password)
        await page.locator("button[type=submit]").click()
        await page.wait_for_url(re.compile(r"/dashboard"))
        say("sign in with the new password", page.url)

        params = mail.reset_params()
        status, body = stack.api.request(
            "POST",
            "/api/accounts/password-reset/confirm/",
            {**params, "new_password": "Another-pass-99!", "new_password2": "Another-pass-99!"},
        )
        say("the link again", f"{status} {body.get('code') if isinstance(body, dict) else body}")
        assert status == 400, body
        assert not shopper.failures, shopper.failures
    except BaseException:
        print(f"transcript:\n{shopper.transcript}\n{stack.logs()}")
        raise


async def test_staff_mark_a_bank_transfer_paid_and_the_client_gets_the_service(
    stack: Stack, shopper: Shopper
) -> None:
    """A client checks out by bank transfer (through the API, as the storefront does); staff
    sign in to the admin pages, see the invoice with its client, mark it paid, and the client's
    subscription exists."""
    say = shopper.transcript.step
    email = "bank-client@example.co.zw"
    status, body = stack.api.request(
        "POST",
        "/api/accounts/register/",
        {"email": email, "password": SHOPPER["password"], "company_name": "Chipo Farms"},
    )
    assert status == 201, body
    client_token = body["access"]
    status, cart = stack.api.request("GET", "/api/billing/carts/current/", token=client_token)
    assert status == 200, cart
    item = {"hosting_product": 1, "quantity": 1, "billing_cycle": "monthly"}
    item["service_metadata"] = {"type": "shared", "region": "Africa", "domain": "chipo.co.zw"}
    status, body = stack.api.request(
        "POST", f"/api/billing/carts/{cart['id']}/add_item/", item, token=client_token
    )
    assert status == 201, body
    checkout = {"billing_info": {"full_name": "Chipo", "email": email}, "payment_method": "bank"}
    status, invoice = stack.api.request(
        "POST", f"/api/billing/carts/{cart['id']}/checkout/", checkout, token=client_token
    )
    assert status == 201, invoice
    number = invoice["invoice_number"]
    try:
        page = await shopper.new_tab()
        await shopper.open(page, "/admin/login")
        await page.get_by_placeholder("admin@slykertech.co.zw").fill(STAFF_EMAIL)
        await page.locator("input[placeholder='••••••••']").fill(STAFF_PASSWORD)
        await page.locator("button[type=submit]").click()
        await page.wait_for_url(re.compile(r"/admin$|/admin/?$"))
        await shopper.open(page, "/admin/invoices", settled="load")
        row = page.locator("tr", has_text=number)
        await row.wait_for()
        say("admin invoices", re.sub(r"\s+", " ", await row.inner_text()))
        assert "Chipo Farms" in await row.inner_text()
        await row.get_by_title("Mark Paid").click()
        await page.locator("tr", has_text=number).get_by_text(re.compile("^paid$", re.I)).wait_for()
        say(
            "marked paid",
            re.sub(r"\s+", " ", await page.locator("tr", has_text=number).inner_text()),
        )

        status, subscriptions = stack.api.request(
            "GET", "/api/services/subscriptions/", token=client_token
        )
        say(
            "client's subscriptions",
            f"{status} {[s['service_name'] for s in subscriptions['results']]}",
        )
        assert status == 200
        assert [(s["service_name"], s["status"]) for s in subscriptions["results"]] == [
            ("Starter Shared", "active")
        ]
        assert not shopper.failures, shopper.failures
    except BaseException:
        print(f"transcript:\n{shopper.transcript}\n{stack.logs()}")
        raise
