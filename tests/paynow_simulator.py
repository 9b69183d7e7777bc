"""A Paynow simulator on 127.0.0.1 for the tests: it speaks Paynow's documented protocol
(developers.paynow.co.zw) over real HTTP, with an integration id and key of its own.

* ``POST /interface/initiatetransaction`` and ``/interface/remotetransaction``: checks the
  integration id, the fields and the hash (a wrong hash gets Paynow's own ``status=Error``
  reply), records the transaction and answers ``status=Ok`` with a signed
  ``browserurl``/``pollurl`` (web) or ``instructions``/``pollurl`` (express). The test phone
  ``0774444444`` is refused with "Insufficient balance", as in Paynow's test mode.
* ``POST /interface/checkpayment/?guid=...`` (the poll URL): the signed status message.
* :meth:`PaynowSimulator.pay` is the customer paying: the simulator marks the transaction and
  POSTs the signed status update to the transaction's ``resulturl``, as Paynow does.
* :attr:`PaynowSimulator.fault` makes the next replies fail: ``"http500"``, ``"garbage"``,
  ``"bad_hash"`` (signed with another key) or ``"slow"`` (answers after ``slow_seconds``).

Hashing is written here independently of slyker's client (same documented rule: the values
in message order, then the key, SHA-512, upper-case hex), so each checks the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import http.client
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

HOST = "127.0.0.1"
SHUTDOWN_POLL_SECONDS = 0.02
INSUFFICIENT_BALANCE_PHONE = "0774444444"
MOBILE_METHODS = ("ecocash", "onemoney")


def paynow_hash(values: list[str], key: str) -> str:
    return hashlib.sha512(("".join(values) + key).encode("utf-8")).hexdigest().upper()


def encode(fields: list[tuple[str, str]]) -> str:
    """Paynow's reply format: ``key=value&...``, values URL-encoded."""
    return "&".join(f"{name}={quote_plus(value)}" for name, value in fields)


def sign(fields: list[tuple[str, str]], key: str) -> list[tuple[str, str]]:
    return [*fields, ("hash", paynow_hash([value for _, value in fields], key))]


@dataclass
class SimTransaction:
    reference: str
    amount: Decimal
    guid: str
    paynow_reference: str
    fields: dict[str, str]  # what the merchant sent (hash left out)
    express: bool
    status: str = "Created"
    updates_posted: list[tuple[int, str]] = field(default_factory=list)

    @property
    def result_url(self) -> str:
        return self.fields["resulturl"]


class PaynowSimulator:
    def __init__(self, integration_id: str = "20581") -> None:
        self.integration_id = integration_id
        self.integration_key = str(uuid.uuid4())
        self.transactions: dict[str, SimTransaction] = {}
        self.rejected: list[str] = []  # the error of every refused initiation
        self.fault: str | None = None
        self.slow_seconds = 3.0
        self.polls = 0
        # TCP connections accepted, and still open (HTTP/1.1: a client may keep one open).
        self.connections = 0
        self.open_connections = 0
        self._all_closed = threading.Condition()
        self._numbers = itertools.count(9510)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> PaynowSimulator:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Paynow's servers do
            # The head and the body are two writes: with Nagle's algorithm the body waited for
            # the client's delayed ACK of the head, 40 ms of every reply after a connection's
            # first.
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with simulator._all_closed:
                    simulator.connections += 1
                    simulator.open_connections += 1

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with simulator._all_closed:
                        simulator.open_connections -= 1
                        simulator._all_closed.notify_all()

            def do_POST(self) -> None:
                simulator._handle_post(self)

            def do_GET(self) -> None:
                simulator._handle_get(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        # serve_forever sees shutdown() only at its next poll: 0.5 s by default, half a second
        # of every Paynow test's teardown.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_until_connections_closed(self, timeout: float = 10.0) -> bool:
        """True once every accepted connection was closed by its client (False after
        ``timeout`` seconds): blocking, run it in a thread."""
        with self._all_closed:
            return self._all_closed.wait_for(lambda: self.open_connections == 0, timeout)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{HOST}:{self._server.server_address[1]}"

    # --- what the tests do -------------------------------------------------------------------

    def transaction(self, reference: str) -> SimTransaction:
        with self._lock:
            return self.transactions[reference]

    def status_message(
        self,
        reference: str,
        status: str | None = None,
        amount: Decimal | str | None = None,
        key: str | None = None,
    ) -> str:
        """The signed status update (or poll reply) for ``reference``, in Paynow's field
        order; ``key`` signs it with another key (a forgery)."""
        sim = self.transaction(reference)
        fields = [
            ("reference", sim.reference),
            ("paynowreference", sim.paynow_reference),
            ("amount", f"{Decimal(amount if amount is not None else sim.amount):.2f}"),
            ("status", status or sim.status),
            ("pollurl", self._poll_url(sim)),
        ]
        return encode(sign(fields, key or self.integration_key))

    def set_status(self, reference: str, status: str, amount: Decimal | str | None = None) -> None:
        """Paynow's side of the transaction changes (what a poll reports), without telling
        the merchant."""
        with self._lock:
            sim = self.transactions[reference]
            sim.status = status
            if amount is not None:
                sim.amount = Decimal(amount)

    def pay(
        self, reference: str, status: str = "Paid", amount: Decimal | str | None = None
    ) -> tuple[int, str]:
        """The customer pays (or cancels): Paynow marks the transaction and POSTs the signed
        status update to its result URL. Blocking: call it with ``asyncio.to_thread``."""
        self.set_status(reference, status, amount)
        return self.post_update(reference, self.status_message(reference))

    def post_update(self, reference: str, body: str) -> tuple[int, str]:
        """POST ``body`` to the transaction's result URL as Paynow's server does: form data,
        no Origin, no cookies, no credentials."""
        sim = self.transaction(reference)
        target = urlsplit(sim.result_url)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=20)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            connection.request(
                "POST",
                path,
                body=body.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = connection.getresponse()
            reply = (response.status, response.read().decode())
        finally:
            connection.close()
        with self._lock:
            sim.updates_posted.append(reply)
        return reply

    # --- the protocol ------------------------------------------------------------------------

    def _poll_url(self, sim: SimTransaction) -> str:
        return f"{self.url}/interface/checkpayment/?guid={sim.guid}"

    def _reply(self, handler: BaseHTTPRequestHandler, fields: list[tuple[str, str]]) -> None:
        fault = self.fault
        if fault == "slow":
            time.sleep(self.slow_seconds)
            # The client has given up waiting by now (its timeout is what the test is about):
            # the connection ends with this answer, which may find nobody to write to.
            handler.close_connection = True
            with contextlib.suppress(ConnectionError):
                self._answer(handler, fields, fault)
            return
        self._answer(handler, fields, fault)

    def _answer(
        self, handler: BaseHTTPRequestHandler, fields: list[tuple[str, str]], fault: str | None
    ) -> None:
        if fault == "http500":
            self._send(handler, 500, "Internal Server Error")
            return
        if fault == "garbage":
            self._send(handler, 200, "<html><body>Service Unavailable</body></html>")
            return
        if fields and fields[0][1] == "Error":
            self._send(handler, 200, encode(fields))  # Paynow does not sign errors
            return
        key = str(uuid.uuid4()) if fault == "bad_hash" else self.integration_key
        self._send(handler, 200, encode(sign(fields, key)))

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, text: str) -> None:
        body = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _error(self, handler: BaseHTTPRequestHandler, message: str) -> None:
        with self._lock:
            self.rejected.append(message)
        self._send(handler, 200, encode([("status", "Error"), ("error", message)]))

    def _by_paynow_reference(self, path: str) -> SimTransaction | None:
        paynow_reference = path.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            for sim in self.transactions.values():
                if sim.paynow_reference == paynow_reference:
                    return sim
        return None

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        # The browserurl: the page the customer pays on (a form, as a browser test drives it).
        sim = self._by_paynow_reference(urlsplit(handler.path).path)
        if sim is None:
            self._send(handler, 200, "Paynow simulator: choose a payment method")
            return
        page = (
            "<!doctype html><html><head><title>Paynow simulator</title></head><body>"
            f"<h1>Paynow simulator</h1><p>Pay {html.escape(sim.fields.get('reference', ''))}: "
            f"USD {sim.amount:.2f}</p>"
            f'<form method="post"><button type="submit">Pay USD {sim.amount:.2f}</button></form>'
            "</body></html>"
        )
        body = page.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _confirm_payment(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        """The customer pressed Pay: Paynow POSTs the signed update to the result URL, then
        sends the browser back to the merchant's return URL."""
        sim = self._by_paynow_reference(path)
        if sim is None:
            self._send(handler, 404, "Not Found")
            return
        self.pay(sim.reference)
        handler.send_response(302)
        handler.send_header("Location", sim.fields["returnurl"])
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode("utf-8")
        path = urlsplit(handler.path)
        route = path.path.lower()
        if route.startswith("/payment/confirmpayment/"):
            self._confirm_payment(handler, path.path)
        elif route == "/interface/checkpayment/":
            self._poll(handler, dict(parse_qsl(path.query)).get("guid", ""))
        elif route in ("/interface/initiatetransaction", "/interface/remotetransaction"):
            self._initiate(handler, raw, express=route.endswith("remotetransaction"))
        else:
            self._send(handler, 404, "Not Found")

    def _initiate(self, handler: BaseHTTPRequestHandler, raw: str, express: bool) -> None:
        pairs = parse_qsl(raw, keep_blank_values=True)
        names = [name.lower() for name, _ in pairs]
        if len(set(names)) != len(names):
            self._error(handler, "Duplicate field")
            return
        values = {name.lower(): value for name, value in pairs}
        if values.get("id") != self.integration_id:
            self._error(handler, "Invalid Id.")
            return
        signed_values = [value for name, value in pairs if name.lower() != "hash"]
        expected = paynow_hash(signed_values, self.integration_key)
        if values.get("hash", "").upper() != expected:
            self._error(handler, f"Invalid Hash.  Hash should start with: {expected[:6]}")
            return
        required = ["reference", "amount", "returnurl", "resulturl", "status"]
        if express:
            required += ["phone", "method", "authemail"]
        missing = [name for name in required if not values.get(name)]
        if missing:
            self._error(handler, f"Missing field: {missing[0]}")
            return
        if values["status"] != "Message":
            self._error(handler, "Invalid status field")
            return
        try:
            amount = Decimal(values["amount"])
        except InvalidOperation:
            amount = Decimal(0)
        if amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
            self._error(handler, "Invalid amount field")
            return
        if express and values["method"] not in MOBILE_METHODS:
            self._error(handler, "Invalid method")
            return
        if express and values["phone"] == INSUFFICIENT_BALANCE_PHONE:
            self._error(handler, "Insufficient balance")
            return
        with self._lock:
            duplicate = values["reference"] in self.transactions
            if not duplicate:
                sim = SimTransaction(
                    reference=values["reference"],
                    amount=amount,
                    guid=str(uuid.uuid4()),
                    paynow_reference=str(next(self._numbers)),
                    fields={k: v for k, v in values.items() if k != "hash"},
                    express=express,
                    status="Sent" if express else "Created",
                )
                self.transactions[sim.reference] = sim
        if duplicate:
            self._error(handler, "Duplicate reference")
            return
        if express:
            fields = [
                ("status", "Ok"),
                ("instructions", "Dial *151*2*7# and enter your EcoCash PIN to approve."),
                ("paynowreference", sim.paynow_reference),
                ("pollurl", self._poll_url(sim)),
            ]
        else:
            fields = [
                ("status", "Ok"),
                ("browserurl", f"{self.url}/Payment/ConfirmPayment/{sim.paynow_reference}"),
                ("pollurl", self._poll_url(sim)),
                ("paynowreference", sim.paynow_reference),
            ]
        self._reply(handler, fields)

    def _poll(self, handler: BaseHTTPRequestHandler, guid: str) -> None:
        with self._lock:
            self.polls += 1
            sim = next((t for t in self.transactions.values() if t.guid == guid), None)
        if sim is None:
            self._send(handler, 200, encode([("status", "Error"), ("error", "Invalid guid")]))
            return
        fields = [
            ("reference", sim.reference),
            ("paynowreference", sim.paynow_reference),
            ("amount", f"{sim.amount:.2f}"),
            ("status", sim.status),
            ("pollurl", self._poll_url(sim)),
        ]
        self._reply(handler, fields)
