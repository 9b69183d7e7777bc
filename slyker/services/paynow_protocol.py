"""Paynow's wire protocol (Zimbabwe): signing and verifying messages, reading replies and
status updates, phone numbers and mobile money methods, and the HTTP client that calls Paynow.
The payments these messages start and settle are :mod:`slyker.services.paynow`'s.

The protocol, from Paynow's developer documentation (developers.paynow.co.zw):

* Requests are form-urlencoded POSTs to ``/interface/initiatetransaction`` (web: the
  customer is sent to ``browserurl``) or ``/interface/remotetransaction`` (express: a USSD
  prompt on the phone, ``instructions`` to show).
* Replies and status updates are urlencoded strings: ``status`` is ``Ok``/``Error`` for an
  initiation, a transaction status (``Paid``, ``Cancelled``, ...) for an update.
* Every message carries ``hash``: the upper-case hex SHA-512 of the message's values in the
  order they appear (URL-decoded, ``hash`` left out) followed by the integration key. A
  reply or update whose hash does not verify is refused; hashes are compared in constant
  time.
* Paynow POSTs status updates to our result URL; a poll URL answers the same message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from slyker.areas.billing_settings import PaynowSettings
from slyker.money import cents
from slyker.services.errors import InvalidInput, PermissionDenied, UpstreamError

log = logging.getLogger(__name__)


INITIATE_PATH = "/interface/initiatetransaction"
REMOTE_PATH = "/interface/remotetransaction"
MOBILE_METHODS = ("ecocash", "onemoney")
# "Transaction paid successfully" in Paynow's status list (the last two: funds in suspense).
PAID_STATUSES = frozenset({"paid", "awaiting delivery", "delivered"})
FAILED_STATUSES = frozenset({"cancelled", "failed"})
MAX_MESSAGE_BYTES = 16 * 1024
MAX_FIELD_LENGTH = 1000
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_AMOUNT_RE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,2})?")


# --- errors -------------------------------------------------------------------------------


class PaynowNotConfigured(InvalidInput):
    """A Paynow payment was asked for, but a setting it needs is missing (400)."""

    def __init__(self, setting: str) -> None:
        super().__init__(
            "payment_method",
            f"Paynow payments are not available: the server setting {setting} is not set.",
            code="paynow_not_configured",
        )
        self.setting = setting


class PaynowDeclined(UpstreamError):
    """Paynow answered ``status=Error`` (bad phone, insufficient balance, refused request)."""

    code = "paynow_declined"


class InvalidHash(PermissionDenied):
    """A message claiming to come from Paynow whose hash does not verify (403)."""

    code = "invalid_hash"


class MalformedMessage(ValueError):
    """A Paynow message that cannot be read (encoding, duplicate or missing fields)."""


# --- messages and hashes --------------------------------------------------------------------


def message_hash(values: Iterable[str], integration_key: str) -> str:
    """Upper-case hex SHA-512 of ``values`` concatenated, then the integration key."""
    text = "".join(values) + integration_key
    return hashlib.sha512(text.encode("utf-8")).hexdigest().upper()


def signed(fields: Sequence[tuple[str, str]], integration_key: str) -> list[tuple[str, str]]:
    """``fields`` (in the order they will be sent) plus their ``hash``."""
    return [*fields, ("hash", message_hash((value for _, value in fields), integration_key))]


def hash_is_valid(fields: Sequence[tuple[str, str]], integration_key: str) -> bool:
    """Does the message's ``hash`` match its other values? Constant-time comparison."""
    received = [value for name, value in fields if name == "hash"]
    if len(received) != 1:
        return False
    expected = message_hash((value for name, value in fields if name != "hash"), integration_key)
    return hmac.compare_digest(received[0].strip().upper().encode(), expected.encode())


def parse_message(body: bytes | str) -> list[tuple[str, str]]:
    """A urlencoded Paynow message as ``[(lower-case name, decoded value)]`` in order.

    Refused: not UTF-8, too long, a repeated field (the hash covers one value per field),
    control characters (nothing Paynow sends has them; NUL would break PostgreSQL).
    """
    if isinstance(body, bytes):
        if len(body) > MAX_MESSAGE_BYTES:
            raise MalformedMessage("the message is too long")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage("the message is not UTF-8") from None
    if len(body) > MAX_MESSAGE_BYTES:
        raise MalformedMessage("the message is too long")
    try:
        pairs = parse_qsl(body.strip(), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise MalformedMessage("the message is not urlencoded") from None
    fields: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in pairs:
        key = name.strip().lower()
        if key in seen:
            raise MalformedMessage(f"the field {key!r} is repeated")
        if _CONTROL_RE.search(name) or _CONTROL_RE.search(value) or len(value) > MAX_FIELD_LENGTH:
            raise MalformedMessage(f"the field {key!r} is not valid")
        seen.add(key)
        fields.append((key, value))
    return fields


def parse_amount(raw: str | None) -> Decimal | None:
    if raw is None or not _AMOUNT_RE.fullmatch(raw.strip().replace(",", "")):
        return None
    try:
        return cents(Decimal(raw.strip().replace(",", "")))
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class InitiateReply:
    poll_url: str
    browser_url: str  # web transactions only
    instructions: str  # express transactions: what to tell the customer
    paynow_reference: str


@dataclass(frozen=True)
class StatusReport:
    """A verified status message (from the result URL or a poll)."""

    reference: str
    paynow_reference: str
    amount: Decimal | None
    status: str
    poll_url: str

    @property
    def is_paid(self) -> bool:
        return self.status.lower() in PAID_STATUSES

    @property
    def is_failed(self) -> bool:
        return self.status.lower() in FAILED_STATUSES


def read_status_message(fields: Sequence[tuple[str, str]]) -> StatusReport:
    """The status report of a hash-verified message; MalformedMessage if it lacks fields."""
    values = dict(fields)
    reference = values.get("reference", "").strip()
    status = values.get("status", "").strip()
    if not reference or not status or len(status) > 32 or len(reference) > 60:
        raise MalformedMessage("reference and status are required")
    amount = parse_amount(values.get("amount"))
    if status.lower() in PAID_STATUSES and amount is None:
        raise MalformedMessage("a paid status needs a valid amount")
    paynow_reference = values.get("paynowreference", "").strip()
    if len(paynow_reference) > 64:
        raise MalformedMessage("paynowreference is too long")
    return StatusReport(
        reference=reference,
        paynow_reference=paynow_reference,
        amount=amount,
        status=status,
        poll_url=values.get("pollurl", "").strip(),
    )


def verify_status_update(body: bytes | str, integration_key: str) -> StatusReport:
    """A status update POSTed to our result URL: InvalidHash unless Paynow signed it,
    InvalidInput if it cannot be read."""
    try:
        fields = parse_message(body)
    except MalformedMessage as error:
        raise InvalidInput(None, f"Not a Paynow status update: {error}.") from None
    if not hash_is_valid(fields, integration_key):
        raise InvalidHash("The status update's hash does not verify.")
    try:
        return read_status_message(fields)
    except MalformedMessage as error:
        raise InvalidInput(None, f"Not a Paynow status update: {error}.") from None


# --- the HTTP client ----------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRequest:
    reference: str
    amount: Decimal
    additional_info: str
    auth_email: str
    phone: str = ""  # express only
    method: str = ""  # express only: ecocash / onemoney


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


HTTP_CLIENT_KEY = "slyker.paynow_http"  # the app's client (slyker.outbound)
# Calls to Paynow at once per worker (more wait for a connection, within PAYNOW_TIMEOUT).
MAX_CONNECTIONS = 20
MAX_IDLE_CONNECTIONS = 10


def new_http_client(settings: PaynowSettings) -> httpx.AsyncClient:
    """The client an app keeps for all its calls to Paynow (``slyker.outbound``): pooled
    connections, ``PAYNOW_TIMEOUT`` for each step (connect, write, read, pool)."""
    return httpx.AsyncClient(
        timeout=settings.timeout,
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_IDLE_CONNECTIONS
        ),
    )


class PaynowClient:
    """Talks to Paynow (or, in tests, its simulator at ``PAYNOW_API_URL``) over ``http``,
    the app's client (:func:`new_http_client`)."""

    def __init__(self, settings: PaynowSettings, http: httpx.AsyncClient) -> None:
        missing = settings.missing
        if missing is not None:
            raise PaynowNotConfigured(missing)
        self.settings = settings
        self.http = http
        self.integration_id: str = settings.integration_id or ""
        self.key: str = settings.integration_key or ""

    async def _post(self, url: str, form: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        try:
            response = await self.http.post(
                url,
                content=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.TimeoutException:
            raise UpstreamError("Paynow did not answer in time; try again.") from None
        except httpx.HTTPError as error:
            log.warning("Paynow request to %s failed: %r", url, error)
            raise UpstreamError("Paynow could not be reached; try again later.") from None
        if response.status_code != 200:
            log.warning("Paynow answered %s from %s", response.status_code, url)
            raise UpstreamError(f"Paynow answered HTTP {response.status_code}; try again later.")
        try:
            return parse_message(response.content)
        except MalformedMessage as error:
            log.warning("Unreadable Paynow reply from %s: %s", url, error)
            raise UpstreamError("Paynow sent a reply we could not read.") from None

    def _verified(self, fields: list[tuple[str, str]]) -> dict[str, str]:
        if not hash_is_valid(fields, self.key):
            log.warning("Paynow reply with a hash that does not verify: refused")
            raise UpstreamError("Paynow's reply failed hash verification: refused.")
        return dict(fields)

    async def initiate(self, request: PaymentRequest) -> InitiateReply:
        """Start a web transaction, or an express one when ``request.method`` is set."""
        express = bool(request.method)
        form = [
            ("id", self.integration_id),
            ("reference", request.reference),
            ("amount", f"{cents(request.amount):.2f}"),
            ("additionalinfo", request.additional_info),
            ("returnurl", self.settings.return_url or ""),
            ("resulturl", self.settings.result_url or ""),
            ("authemail", request.auth_email),
        ]
        if express:
            form += [("phone", request.phone), ("method", request.method)]
        form.append(("status", "Message"))
        path = REMOTE_PATH if express else INITIATE_PATH
        fields = await self._post(self.settings.api_url + path, signed(form, self.key))
        values = dict(fields)
        status = values.get("status", "")
        if status.lower() == "error":  # Paynow does not sign its error replies
            reason = values.get("error", "").strip() or "no reason given"
            raise PaynowDeclined(f"Paynow refused the payment: {reason}")
        if status.lower() != "ok":
            raise UpstreamError("Paynow sent a reply we could not read.")
        values = self._verified(fields)
        poll_url = values.get("pollurl", "").strip()
        browser_url = values.get("browserurl", "").strip()
        usable = self._is_paynow_url(poll_url) and (express or self._is_paynow_url(browser_url))
        if not usable:
            log.warning("Paynow reply without usable URLs: %r", values)
            raise UpstreamError("Paynow's reply has no usable payment or poll URL.")
        return InitiateReply(
            poll_url=poll_url,
            browser_url=browser_url,
            instructions=values.get("instructions", "").strip(),
            paynow_reference=values.get("paynowreference", "").strip(),
        )

    async def poll(self, poll_url: str) -> StatusReport:
        """The transaction's current status: an empty POST to its poll URL."""
        if not self._is_paynow_url(poll_url):
            raise UpstreamError("This transaction has no Paynow poll URL.")
        fields = await self._post(poll_url, [])
        values = dict(fields)
        if values.get("status", "").lower() == "error":
            reason = values.get("error", "").strip() or "no reason given"
            raise PaynowDeclined(f"Paynow could not report the status: {reason}")
        self._verified(fields)
        try:
            return read_status_message(fields)
        except MalformedMessage as error:
            raise UpstreamError(f"Paynow's status reply is incomplete: {error}.") from None

    def _is_paynow_url(self, url: str) -> bool:
        """Only URLs on Paynow's own origin are followed or polled (never one of ours, or
        an internal address, even if a reply were forged)."""
        try:
            return bool(url) and _origin(url) == _origin(self.settings.api_url)
        except ValueError:
            return False


# --- phone numbers and mobile money methods ---------------------------------------------


def normalise_phone(raw: str) -> str:
    """A Zimbabwean mobile number as Paynow expects it: ``0771234567``."""
    digits = re.sub(r"[\s().-]", "", raw or "")
    if digits.startswith("+263"):
        digits = "0" + digits[4:]
    elif digits.startswith("00263"):
        digits = "0" + digits[5:]
    elif digits.startswith("263") and len(digits) == 12:
        digits = "0" + digits[3:]
    if not re.fullmatch(r"07[0-9]{8}", digits):
        raise InvalidInput("phone", "expected a Zimbabwean mobile number such as 0771234567.")
    return digits


def check_mobile_method(method: str) -> None:
    """InvalidInput unless ``method`` is empty (a web payment) or a mobile money method."""
    if method and method not in MOBILE_METHODS:
        raise InvalidInput("method", f"must be one of {', '.join(MOBILE_METHODS)}.")
