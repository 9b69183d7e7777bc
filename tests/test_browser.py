"""The CORS and origin contract as a real browser enforces it.

Headless Chromium (Debian's ``chromium``, driven by Playwright's async API with
``executable_path``: no browser download) loads ``tests/browser/page.html`` from a page server
on a second origin and runs ``fetch`` and ``WebSocket`` against a live Hypercorn serving the
contract app (the real app plus probe routes). Every assertion is on what the page's
JavaScript saw: a status and a JSON body, or the ``TypeError`` of a CORS failure, or the
WebSocket's events.

Origins, all on loopback (a different port is a different origin; ports do not make sites):

* the API: ``http://127.0.0.1:<api>``;
* the allowed page: ``http://127.0.0.1:<page>`` — cross-origin but same-site with the API, so
  the ``SameSite=Lax`` cart cookie travels;
* the same page server as ``http://localhost:<page>`` — also allowed, and cross-site with the
  API, so the browser neither stores nor sends the cart cookie: the ``X-Cart-Token`` case;
* the foreign page: ``http://127.0.0.1:<foreign>`` — not allowed; same-site with the API, so
  the cart cookie *is* attached to its requests and only the server's origin checks stop it.

Hypercorn's access log (request line, status, Origin, Cookie) goes to the server log with
slyker's own log, so the tests can show which requests reached the server at all.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from slyker.errors import SERVER_ERROR_MESSAGE
from tests.chromium import launched_chromium, require_chromium
from tests.contract_app import SECRET_MARKER
from tests.live_servers import (
    HOST,
    SOCKET_TIMEOUT,
    STOP_TIMEOUT,
    Hypercorn,
    LiveServer,
    child_env,
    create_user,
    migrate,
    run_command,
    start_hypercorn,
    venv_tool,
)

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright
except ImportError as error:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "tests/test_browser.py needs Playwright for Python (the dev extra: pip install -e "
        "'.[dev]'); the browser is Debian's chromium, never a Playwright download"
    ) from error

PAGE_DIR = Path(__file__).resolve().parent / "browser"
APP_PATH = "tests.browser.app:create_browser_app()"
SECRET_KEY = "browser-test-secret-key-0123456789abcdef0123"
ACCESS_LOG_FORMAT = "access %(m)s %(U)s %(s)s origin=%({origin}i)s cookie=%({cookie}i)s"

BROWSER_TIMEOUT_MS = 10_000  # navigation, waits for a frame; fetches abort after 8 s in the page
JS_TIMEOUT = 12.0  # one page.evaluate, whatever the page does

STAFF_EMAIL = "rudo.agent@slykertech.co.zw"
STAFF_PASSWORD = "Staff-passw0rd-123"
STAFF_NAME = "Rudo Moyo"
PASSWORD = "Browser-passw0rd-123"
CART_COOKIE = "slyker_cart"
GREETING = "Connected to Slyker Tech Live Support"
AUTO_REPLY_MARK = "No sales agent is online"
# The storefront's hosting item: unit_price is sent and ignored (Starter Shared costs 2.99).
HOSTING_ITEM = {
    "hosting_product": 1,
    "service_metadata": {
        "type": "shared",
        "region": "harare",
        "os": "linux",
        "domain": "example.co.zw",
        "domain_option": "register",
    },
    "quantity": 1,
    "unit_price": 0.01,
    "billing_cycle": "monthly",
}
STARTER_MONTHLY = 2.99


# --- the page server -------------------------------------------------------------------------


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class PageServer:
    """``tests/browser/`` over HTTP on a loopback port of its own, in a thread."""

    def __init__(self) -> None:
        handler = functools.partial(_PageHandler, directory=str(PAGE_DIR))
        self.server = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=STOP_TIMEOUT)


# --- the API -------------------------------------------------------------------------------


@dataclass
class Stack:
    api: LiveServer
    page_port: int
    foreign_port: int
    env: dict[str, str]

    @property
    def api_url(self) -> str:
        return self.api.base_url

    @property
    def ws_url(self) -> str:
        return self.api.ws_url

    @property
    def allowed_origin(self) -> str:
        return f"http://{HOST}:{self.page_port}"

    @property
    def cross_site_origin(self) -> str:
        return f"http://localhost:{self.page_port}"

    @property
    def foreign_origin(self) -> str:
        return f"http://{HOST}:{self.foreign_port}"

    def page_url(self, origin: str) -> str:
        return f"{origin}/page.html?api={self.api_url}"

    def log(self, limit: int = 8000) -> str:
        return self.api.log(limit)

    def log_mark(self) -> int:
        try:
            return self.api.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark: int) -> str:
        with self.api.log_path.open("rb") as log_file:
            log_file.seek(mark)
            return log_file.read().decode(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two page servers, a prepared database (migrations, demo catalog, a staff agent) and
    Hypercorn serving the contract app with the page origins allowed."""
    require_chromium()
    base = tmp_path_factory.mktemp("browser")
    pages, foreign = PageServer(), PageServer()
    try:
        env = child_env(
            SECRET_KEY=SECRET_KEY,
            DATA_DIR=str(base / "data"),
            CORS_ALLOWED_ORIGINS=f"http://{HOST}:{pages.port},http://localhost:{pages.port}",
        )
        migrate(env)
        run_command(
            [*venv_tool("quart", "quart"), "--app", "slyker:create_app()", "load-demo-catalog"], env
        )
        first_name, last_name = STAFF_NAME.split()
        create_user(
            env,
            base,
            STAFF_EMAIL,
            STAFF_PASSWORD,
            "staff",
            first_name=first_name,
            last_name=last_name,
        )
        access_log = ("--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT)
        api = start_hypercorn(Hypercorn("api", env, APP_PATH, access_log), base)
        try:
            yield Stack(api, pages.port, foreign.port, env)
        finally:
            api.stop()
    finally:
        pages.stop()
        foreign.stop()


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright, launched_chromium(playwright) as chromium:
        yield chromium


@asynccontextmanager
async def open_page(browser: Browser, url: str) -> AsyncIterator[tuple[BrowserContext, Page]]:
    """A fresh browser context (own cookies, storage and preflight cache) with ``url`` loaded."""
    context = await browser.new_context()
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    try:
        page = await context.new_page()
        await page.goto(url)
        yield context, page
    finally:
        await context.close()


async def js(page: Page, expression: str, arg: Any = None) -> Any:
    return await asyncio.wait_for(page.evaluate(expression, arg), JS_TIMEOUT)


async def probe(page: Page, path: str, init: dict[str, Any] | None = None) -> dict[str, Any]:
    """``fetch(API + path, init)`` in the page: {ok, status, type, json, requestId,
    cartToken, error, errorName} as the page saw them."""
    result: dict[str, Any] = await js(
        page, "([path, init]) => probe(path, init)", [path, init or {}]
    )
    return result


async def storefront(page: Page, path: str, **options: Any) -> dict[str, Any]:
    """The storefront's fetch: credentials 'include', Content-Type: application/json, Bearer
    ``token``; ``useCartToken``: keep X-Cart-Token in localStorage and send it back."""
    result: dict[str, Any] = await js(
        page, "([path, options]) => storefront(path, options)", [path, options]
    )
    return result


def seen(result: dict[str, Any]) -> str:
    """One line of what the page saw, for assertion messages."""
    if result["error"]:
        return str(result["error"])
    return f"{result['status']} {json.dumps(result['json'])[:300]} (type {result['type']})"


async def wait_for_log(stack: Stack, mark: int, pattern: str, count: int = 1) -> str:
    """The server log written since ``mark``, once ``pattern`` occurs ``count`` times in it
    (or after SOCKET_TIMEOUT: the access line is written just after the response went out)."""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while True:
        log = stack.log_since(mark)
        if len(re.findall(pattern, log)) >= count or time.monotonic() > deadline:
            return log
        await asyncio.sleep(0.05)


# --- every status is readable from the allowed origin ------------------------------------------


@dataclass(frozen=True)
class Call:
    id: str
    path: str
    status: int
    method: str = "GET"
    body: str | None = None
    token: str | None = None
    code: str | None = None


CALLS = (
    Call("200-health", "/health/", 200),
    Call("404-unknown-path", "/nope/", 404, code="not_found"),
    Call("400-bad-json-probe", "/_probe/items/", 400, "POST", "{bad json"),
    Call("400-bad-json-token", "/api/token/", 400, "POST", "{bad json"),
    Call("401-bogus-bearer", "/api/accounts/users/me/", 401, token="bogus.bearer.token"),
    Call("500-crash", "/_probe/crash/", 500, code="server_error"),
)


@pytest.mark.parametrize("call", CALLS, ids=[call.id for call in CALLS])
async def test_allowed_origin_reads_every_status(
    stack: Stack, browser: Browser, call: Call
) -> None:
    async with open_page(browser, stack.page_url(stack.allowed_origin)) as (_context, page):
        result = await storefront(
            page, call.path, method=call.method, body=call.body, token=call.token
        )
    print(f"allowed {call.id}: {seen(result)}")
    assert result["error"] is None, seen(result) + "\n" + stack.log()
    assert result["status"] == call.status, seen(result)
    assert result["ok"] is (call.status < 400)
    # The request id is exposed to the page: what a user quotes to support.
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,}", result["requestId"] or ""), seen(result)
    body = result["json"]
    assert isinstance(body, dict), seen(result)
    if call.status >= 400:
        assert isinstance(body["error"], str), seen(result)
        assert body["error"], seen(result)
        assert body["status"] == call.status, seen(result)
    if call.code:
        assert body["code"] == call.code, seen(result)
    if call.status == 500:
        assert body["error"] == SERVER_ERROR_MESSAGE, seen(result)
        assert SECRET_MARKER not in json.dumps(body), seen(result)
    if call.status == 200:
        assert body["status"] == "healthy", seen(result)


async def test_preflighted_request_with_authorization_succeeds(
    stack: Stack, browser: Browser
) -> None:
    """Register (a JSON POST: preflighted), then ``users/me/`` with the Bearer token (the
    ``Authorization`` header: preflighted) — both reach the view and are readable."""
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    mark = stack.log_mark()
    async with open_page(browser, stack.page_url(stack.allowed_origin)) as (_context, page):
        registered = await storefront(
            page,
            "/api/accounts/register/",
            method="POST",
            body={"email": email, "password": PASSWORD, "first_name": "Tari", "last_name": "Ncube"},
        )
        assert registered["status"] == 201, seen(registered) + "\n" + stack.log()
        me = await storefront(page, "/api/accounts/users/me/", token=registered["json"]["access"])
    print(f"allowed register: {seen(registered)}")
    print(f"allowed users/me with Bearer: {seen(me)}")
    assert me["status"] == 200, seen(me)
    assert me["json"]["email"] == email
    assert me["json"]["user_type"] == "client"
    assert me["requestId"]
    origin = re.escape(stack.allowed_origin)
    # The browser did preflight both, and both preflights and requests got through.
    for method, path, status in (
        ("OPTIONS", "/api/accounts/register/", 204),
        ("POST", "/api/accounts/register/", 201),
        ("OPTIONS", "/api/accounts/users/me/", 204),
        ("GET", "/api/accounts/users/me/", 200),
    ):
        line = rf"access {method} {path} {status} origin={origin}\b"
        log = await wait_for_log(stack, mark, line)
        assert re.search(line, log), log


# --- nothing works from a foreign origin ---------------------------------------------------


@pytest.mark.parametrize("call", CALLS, ids=[call.id for call in CALLS])
async def test_foreign_origin_fetch_fails(stack: Stack, browser: Browser, call: Call) -> None:
    """The storefront's fetch (preflighted: Content-Type application/json) from a foreign
    page: the preflight is refused, the page gets a TypeError and nothing else."""
    async with open_page(browser, stack.page_url(stack.foreign_origin)) as (_context, page):
        result = await storefront(
            page, call.path, method=call.method, body=call.body, token=call.token
        )
    print(f"foreign {call.id}: {seen(result)}")
    assert result["errorName"] == "TypeError", seen(result)
    assert result["error"] == "TypeError: Failed to fetch", seen(result)
    assert result["status"] is None
    assert result["json"] is None


SIMPLE_CALLS = (
    Call("200-health", "/health/", 200),
    Call("404-unknown-path", "/nope/", 404),
    Call("500-crash", "/_probe/crash/", 500),
)


@pytest.mark.parametrize("call", SIMPLE_CALLS, ids=[call.id for call in SIMPLE_CALLS])
async def test_foreign_origin_simple_request_is_unreadable(
    stack: Stack, browser: Browser, call: Call
) -> None:
    """A GET without custom headers needs no preflight: the server answers, and the browser
    hides the answer (no Access-Control-Allow-Origin for this origin)."""
    mark = stack.log_mark()
    async with open_page(browser, stack.page_url(stack.foreign_origin)) as (_context, page):
        result = await probe(page, call.path, {"credentials": "include"})
    print(f"foreign simple {call.id}: {seen(result)}")
    assert result["errorName"] == "TypeError", seen(result)
    assert result["status"] is None
    line = rf"access GET {call.path} {call.status} origin={re.escape(stack.foreign_origin)}\b"
    log = await wait_for_log(stack, mark, line)
    assert re.search(line, log), log


async def test_foreign_origin_cannot_change_state(stack: Stack, browser: Browser) -> None:
    """Writes from a foreign page: simple ones (form / text bodies, no preflight) reach the
    server and are refused by its origin check before any view runs; a JSON one never gets
    past the preflight. Afterwards the account does not exist."""
    email = f"mallory-{uuid.uuid4().hex[:8]}@example.com"
    account = {"email": email, "password": PASSWORD, "first_name": "Mal", "last_name": "Lory"}
    form = f"email={email}&password={PASSWORD}&first_name=Mal&last_name=Lory"
    register = "/api/accounts/register/"
    item = json.dumps({"name": "from-mallory", "quantity": 1})
    mark = stack.log_mark()
    async with open_page(browser, stack.page_url(stack.foreign_origin)) as (_context, page):
        attempts = {
            "register, form body": await probe(
                page,
                register,
                {
                    "method": "POST",
                    "credentials": "include",
                    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                    "body": form,
                },
            ),
            "register, JSON body (preflighted)": await storefront(
                page, register, method="POST", body=account
            ),
            "probe item, text/plain body": await probe(
                page,
                "/_probe/items/",
                {
                    "method": "POST",
                    "credentials": "include",
                    "headers": {"Content-Type": "text/plain"},
                    "body": item,
                },
            ),
            "probe item, JSON body (preflighted)": await storefront(
                page, "/_probe/items/", method="POST", body=item
            ),
            "register, no-cors form (the CSRF shape)": await probe(
                page,
                register,
                {
                    "method": "POST",
                    "mode": "no-cors",
                    "credentials": "include",
                    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                    "body": form,
                },
            ),
        }
    for name, result in attempts.items():
        print(f"foreign write, {name}: {seen(result)}")
    for name, result in attempts.items():
        if "no-cors" in name:
            # An opaque response: the page learns nothing, not even the status.
            assert result["error"] is None, seen(result)
            assert (result["type"], result["status"]) == ("opaque", 0), seen(result)
        else:
            assert result["errorName"] == "TypeError", f"{name}: {seen(result)}"

    origin = re.escape(stack.foreign_origin)
    log = await wait_for_log(stack, mark, rf"access POST {register} \d+ origin={origin}\b", 2)
    log = await wait_for_log(stack, mark, rf"access POST /_probe/items/ \d+ origin={origin}\b")
    # Exactly the simple writes arrived, each refused with 403 before its view ...
    assert len(re.findall(rf"access POST {register} \d+ origin={origin}\b", log)) == 2, log
    assert len(re.findall(rf"access POST {register} 403 origin={origin}\b", log)) == 2, log
    assert len(re.findall(rf"access POST /_probe/items/ 403 origin={origin}\b", log)) == 1, log
    assert len(re.findall(rf"access POST /_probe/items/ \d+ origin={origin}\b", log)) == 1, log
    assert log.count(f"CSRF check refused POST {register} from origin") == 2, log
    # ... and the JSON ones stopped at their preflight.
    for path in (register, "/_probe/items/"):
        assert re.search(rf"access OPTIONS {path} 403 origin={origin}\b", log), log
        assert re.search(rf"CORS preflight rejected: origin \(.*OPTIONS {path}\)", log), log

    async with httpx.AsyncClient(
        base_url=stack.api_url, timeout=SOCKET_TIMEOUT, trust_env=False
    ) as client:
        login = await client.post("/api/token/", json={"email": email, "password": PASSWORD})
    assert login.status_code == 401, login.text
    # The address is still free: the allowed origin registers it now.
    async with open_page(browser, stack.page_url(stack.allowed_origin)) as (_context, page):
        registered = await storefront(page, register, method="POST", body=account)
    assert registered["status"] == 201, seen(registered)


# --- the anonymous cart ------------------------------------------------------------------------


async def cart_cookies(context: BrowserContext, url: str | None = None) -> list[Any]:
    """The browser's cart cookies (of every site, or those it would send to ``url``)."""
    cookies = await context.cookies(url) if url else await context.cookies()
    return [cookie for cookie in cookies if cookie["name"] == CART_COOKIE]


async def test_cart_survives_reload_with_its_cookie(stack: Stack, browser: Browser) -> None:
    """Page on 127.0.0.1:<page>, API on 127.0.0.1:<api>: cross-origin, same-site. The cart
    cookie (HttpOnly, SameSite=Lax, not Secure on loopback, Path=/api/) is stored and sent
    back; after a reload the page has the same cart. A foreign page of the same site gets the
    cookie attached to its POST, and the server still refuses the write."""
    async with open_page(browser, stack.page_url(stack.allowed_origin)) as (context, page):
        current = await storefront(page, "/api/billing/carts/current/")
        print(
            f"cookie flow, current/: {seen(current)} X-Cart-Token readable: "
            f"{bool(current['cartToken'])}"
        )
        assert current["status"] == 200, seen(current) + "\n" + stack.log()
        cart_id = current["json"]["id"]
        token = current["cartToken"]
        assert token, "X-Cart-Token not readable by the page"
        assert current["requestId"]
        assert current["json"]["items"] == []

        added = await storefront(
            page, f"/api/billing/carts/{cart_id}/add_item/", method="POST", body=HOSTING_ITEM
        )
        print(f"cookie flow, add_item: {seen(added)}")
        assert added["status"] == 201, seen(added)
        assert added["json"]["id"] == cart_id
        assert added["json"]["item_count"] == 1
        assert added["json"]["total"] == STARTER_MONTHLY  # the catalog's price, not 0.01

        cookies = await cart_cookies(context, f"{stack.api_url}/api/")
        print(f"cookie flow, cookie: {cookies}")
        assert len(cookies) == 1, await context.cookies()
        cookie = cookies[0]
        assert cookie["value"] == token
        assert cookie["domain"] == HOST
        assert cookie["path"] == "/api/"
        assert cookie["httpOnly"] is True
        assert cookie["secure"] is False  # CART_COOKIE_SECURE=auto on a loopback API
        assert cookie["sameSite"] == "Lax"
        assert cookie["expires"] > time.time() + 29 * 24 * 3600

        await page.reload()
        assert (await js(page, "() => storedCart()"))["id"] == str(cart_id)
        again = await storefront(page, "/api/billing/carts/current/")
        print(f"cookie flow, current/ after reload: {seen(again)}")
        assert again["status"] == 200, seen(again)
        assert again["json"]["id"] == cart_id
        assert [i["service_name"] for i in again["json"]["items"]] == ["Starter Shared"]

        # A foreign page in the same browser: same site, so the Lax cookie goes along.
        mark = stack.log_mark()
        foreign = await context.new_page()
        await foreign.goto(stack.page_url(stack.foreign_origin))
        clear = f"/api/billing/carts/{cart_id}/clear/"
        cleared = await probe(
            foreign, clear, {"method": "POST", "mode": "no-cors", "credentials": "include"}
        )
        cleared_cors = await probe(
            foreign,
            clear,
            {
                "method": "POST",
                "credentials": "include",
                "headers": {"Content-Type": "text/plain"},
                "body": "{}",
            },
        )
        print(f"cookie flow, foreign clear/ no-cors: {seen(cleared)}; cors: {seen(cleared_cors)}")
        assert (cleared["type"], cleared["status"]) == ("opaque", 0), seen(cleared)
        assert cleared_cors["errorName"] == "TypeError", seen(cleared_cors)
        line = rf"access POST {clear} (\d+) origin={re.escape(stack.foreign_origin)} cookie=(.*)"
        log = await wait_for_log(stack, mark, line, 2)
        refused = re.findall(line, log)
        assert len(refused) == 2, log
        for status, cookie_header in refused:
            assert status == "403", log
            assert f"{CART_COOKIE}={token}" in cookie_header, log  # the cookie was sent
        after = await storefront(page, "/api/billing/carts/current/")
        assert after["json"]["id"] == cart_id
        assert after["json"]["item_count"] == 1, seen(after)


async def test_cart_token_header_when_the_cookie_is_blocked(stack: Stack, browser: Browser) -> None:
    """Page on localhost:<page>, API on 127.0.0.1:<api>: cross-site, so the browser neither
    stores nor sends the SameSite=Lax cart cookie. The page keeps X-Cart-Token (in
    localStorage) and sends it back; the cart survives a reload."""
    async with open_page(browser, stack.page_url(stack.cross_site_origin)) as (context, page):
        current = await storefront(page, "/api/billing/carts/current/", useCartToken=True)
        print(f"token flow, current/: {seen(current)} X-Cart-Token: {bool(current['cartToken'])}")
        assert current["status"] == 200, seen(current) + "\n" + stack.log()
        cart_id = current["json"]["id"]
        token = current["cartToken"]
        assert token
        assert (await js(page, "() => storedCart()")) == {"id": str(cart_id), "token": token}
        # The cookie came with the response, and the browser refused it (cross-site Lax).
        assert await cart_cookies(context) == []

        added = await storefront(
            page,
            f"/api/billing/carts/{cart_id}/add_item/",
            method="POST",
            body=HOSTING_ITEM,
            useCartToken=True,
        )
        print(f"token flow, add_item with X-Cart-Token: {seen(added)}")
        assert added["status"] == 201, seen(added)
        assert added["json"]["id"] == cart_id
        assert added["json"]["item_count"] == 1

        # Without the header the browser has nothing that names this cart.
        bare = await probe(
            page,
            f"/api/billing/carts/{cart_id}/add_item/",
            {
                "method": "POST",
                "credentials": "include",
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps(HOSTING_ITEM),
            },
        )
        print(f"token flow, add_item without X-Cart-Token: {seen(bare)}")
        assert bare["status"] == 404, seen(bare)
        assert bare["json"]["code"] == "cart_not_found"
        assert "X-Cart-Token" in bare["json"]["error"]

        await page.reload()
        again = await storefront(page, "/api/billing/carts/current/", useCartToken=True)
        print(f"token flow, current/ after reload: {seen(again)}")
        assert again["status"] == 200, seen(again)
        assert again["json"]["id"] == cart_id
        assert again["json"]["item_count"] == 1
        assert again["cartToken"] == token
        assert await cart_cookies(context) == []


# --- live chat -------------------------------------------------------------------------------


async def wait_for_frame(page: Page, predicate: str, arg: Any = None) -> dict[str, Any]:
    """The first chat frame for which the JS ``predicate(frame, arg)`` holds, once it came."""
    finder = f"([arg]) => window.chat.frames.find((frame) => ({predicate})(frame, arg)) || null"
    try:
        await page.wait_for_function(finder, arg=[arg], timeout=BROWSER_TIMEOUT_MS)
    except Exception as error:
        frames = await js(page, "() => window.chat")
        raise AssertionError(f"no such frame ({predicate}): {error}\n{frames}") from error
    frame: dict[str, Any] = await js(page, finder, [arg])
    return frame


async def test_chat_from_the_allowed_origin(stack: Stack, browser: Browser) -> None:
    """Greeting, a message, the automatic reply (no agent online), then an agent's reply
    sent through the staff REST API arrives live in the page."""
    async with open_page(browser, stack.page_url(stack.allowed_origin)) as (_context, page):
        opened = await js(page, "(url) => openChat(url)", f"{stack.ws_url}/ws/chat/sales/")
        print(f"chat, allowed origin: {opened}")
        assert opened["opened"] is True, f"{opened}\n{stack.log()}"
        await wait_for_frame(page, "(f) => f.type === 'connection_established'")
        greeting = await wait_for_frame(
            page, "(f, g) => f.type === 'system' && f.message === g", GREETING
        )
        print(f"chat, greeting: {greeting}")

        session_id = await js(page, "() => crypto.randomUUID()")
        text = "Hello from the browser: which plan suits a small shop?"
        await js(
            page,
            """([sessionId, text]) => sendChat({type: 'message', message: text,
                visitor_name: 'Tendai', department: 'sales', session_id: sessionId,
                sender: 'visitor', timestamp: Date.now()})""",
            [session_id, text],
        )
        auto = await wait_for_frame(
            page,
            "(f, mark) => f.type === 'message' && f.sender_type === 'system' "
            "&& f.message.includes(mark)",
            AUTO_REPLY_MARK,
        )
        print(f"chat, automatic reply: {auto}")
        assert auto["session_id"] == session_id

        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=SOCKET_TIMEOUT, trust_env=False
        ) as client:
            login = await client.post(
                "/api/token/", json={"email": STAFF_EMAIL, "password": STAFF_PASSWORD}
            )
            assert login.status_code == 200, login.text
            staff = {"Authorization": f"Bearer {login.json()['access']}"}
            sessions = await client.get("/api/livechat/sessions/", headers=staff)
            assert sessions.status_code == 200, sessions.text
            [conversation] = [
                s for s in sessions.json()["results"] if s["session_id"] == session_id
            ]
            assert conversation["visitor_name"] == "Tendai"
            reply_text = "Hi Tendai, Business Shared suits a small shop."
            reply = await client.post(
                f"/api/livechat/sessions/{conversation['id']}/send_message/",
                json={"message": reply_text},
                headers=staff,
            )
            assert reply.status_code == 201, reply.text

        agent = await wait_for_frame(
            page,
            "(f, text) => f.type === 'message' && f.sender_type === 'agent' && f.message === text",
            reply_text,
        )
        print(f"chat, agent reply: {agent}")
        assert agent["sender"] == STAFF_NAME
        assert agent["session_id"] == session_id
        chat = await js(page, "() => window.chat")
        assert chat["events"] == ["open"], chat  # still open, no error
        # The widget draws its own message: the server never echoes it back.
        assert not [f for f in chat["frames"] if f.get("message") == text], chat
        await js(page, "() => window.chat.socket.close(1000)")


async def test_chat_from_a_foreign_origin_is_refused(stack: Stack, browser: Browser) -> None:
    """The handshake is answered 403 before accept: the page's socket never opens; the
    browser reports an error and close code 1006."""
    mark = stack.log_mark()
    async with open_page(browser, stack.page_url(stack.foreign_origin)) as (_context, page):
        result = await js(page, "(url) => openChat(url)", f"{stack.ws_url}/ws/chat/sales/")
        print(f"chat, foreign origin: {result}")
        chat = await js(page, "() => window.chat")
    assert result["opened"] is False, result
    assert result["code"] == 1006, result
    assert chat["events"] == ["error", "close:1006"], chat
    assert chat["frames"] == [], chat
    rejected = f"WebSocket origin rejected: {stack.foreign_origin!r} on /ws/chat/sales/"
    handshake = rf"access GET /ws/chat/sales/ 403 origin={re.escape(stack.foreign_origin)}\b"
    log = await wait_for_log(stack, mark, re.escape(rejected))
    log = await wait_for_log(stack, mark, handshake)
    assert rejected in log, log
    assert re.search(handshake, log), log  # the server's answer to the handshake: HTTP 403


async def test_chat_the_browser_keeps_its_conversation_across_a_reconnect(
    stack: Stack, browser: Browser
) -> None:
    """As the widget does it: a plain socket URL on every (re)connect and the page-load
    session id on every message. Chromium keeps the HttpOnly visitor-key cookie set on the 101
    and sends it on the next handshake, so the conversation goes on; another browser with the
    same session id gets ``forbidden_session`` and a conversation of its own instead."""
    url = f"{stack.ws_url}/ws/chat/sales/"
    send = """([sessionId, text]) => sendChat({type: 'message', message: text,
        visitor_name: 'Tendai', department: 'sales', session_id: sessionId,
        sender: 'Tendai', timestamp: new Date().toISOString()})"""
    reopen = (
        "(url) => { window.chat = {socket: null, frames: [], events: []}; return openChat(url); }"
    )
    async with open_page(browser, stack.page_url(stack.allowed_origin)) as (context, page):
        assert (await js(page, "(url) => openChat(url)", url))["opened"] is True
        await wait_for_frame(page, "(f) => f.type === 'connection_established'")
        session_id = await js(page, "() => crypto.randomUUID()")
        await js(page, send, [session_id, "First, before the reconnect"])
        await wait_for_frame(page, "(f) => f.sender_type === 'system'")
        [cookie] = [c for c in await context.cookies() if c["name"] == "slyker_chat"]
        print(f"chat, visitor key cookie: {cookie}")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
        await js(page, "() => window.chat.socket.close(1000)")

        assert (await js(page, reopen, url))["opened"] is True
        established = await wait_for_frame(page, "(f) => f.type === 'connection_established'")
        assert established["resume_token"] == cookie["value"]
        await js(page, send, [session_id, "Second, after the reconnect"])
        await js(page, "() => sendChat({type: 'ping', timestamp: 42})")
        await wait_for_frame(page, "(f) => f.type === 'pong' && f.timestamp === 42")
        chat = await js(page, "() => window.chat")
        assert not [f for f in chat["frames"] if f.get("type") == "error"], chat
        await js(page, "() => window.chat.socket.close(1000)")

    async with open_page(browser, stack.page_url(stack.allowed_origin)) as (_context, page):
        assert (await js(page, "(url) => openChat(url)", url))["opened"] is True
        await wait_for_frame(page, "(f) => f.type === 'connection_established'")
        await js(page, send, [session_id, "Someone else"])
        refused = await wait_for_frame(page, "(f) => f.type === 'error'")
        assert refused["code"] == "forbidden_session" and refused["session_id"] != session_id
        await js(page, "() => window.chat.socket.close(1000)")

    async with httpx.AsyncClient(
        base_url=stack.api_url, timeout=SOCKET_TIMEOUT, trust_env=False
    ) as client:
        login = await client.post(
            "/api/token/", json={"email": STAFF_EMAIL, "password": STAFF_PASSWORD}
        )
        staff = {"Authorization": f"Bearer {login.json()['access']}"}
        sessions = (await client.get("/api/livechat/sessions/", headers=staff)).json()
        [conversation] = [s for s in sessions["results"] if s["session_id"] == session_id]
        detail = await client.get(f"/api/livechat/sessions/{conversation['id']}/", headers=staff)
        texts = [m["message"] for m in detail.json()["messages"] if m["sender_type"] == "user"]
        assert texts == ["First, before the reconnect", "Second, after the reconnect"]
