"""Paynow (Zimbabwe): initiate web and mobile (express) payments, read status updates, and
apply each status to its invoice's payment exactly once.

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
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from slyker.areas.billing_settings import PaynowSettings
from slyker.models.accounts import User
from slyker.models.billing import Invoice, Payment, PaymentStatus
from slyker.models.paynow import (
    PaynowKind,
    PaynowStatusUpdate,
    PaynowTransaction,
    PaynowUpdateSource,
)
from slyker.money import cents
from slyker.services.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    UpstreamError,
)
from slyker.services.settlement import SETTLEABLE, completed_amount, settle_if_covered

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


# --- payments -----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class PaynowAttempt:
    transaction: PaynowTransaction
    payment: Payment


async def payable_invoice(invoice: Invoice) -> Decimal:
    """What is left to pay on ``invoice``; Conflict when it cannot be paid."""
    if invoice.status not in SETTLEABLE:
        raise Conflict(
            f"Invoice {invoice.invoice_number} is {invoice.status!s}: it cannot be paid.",
            code="invoice_not_payable",
        )
    async with in_transaction() as connection:
        outstanding = cents(invoice.total - await completed_amount(invoice.id, connection))
    if outstanding <= 0:
        raise Conflict(
            f"Invoice {invoice.invoice_number} is already covered by its payments.",
            code="invoice_not_payable",
        )
    return outstanding


async def start_payment(
    settings: PaynowSettings,
    http: httpx.AsyncClient,
    invoice: Invoice,
    user: User,
    *,
    phone: str = "",
    method: str = "",
) -> PaynowAttempt:
    """Record a pending payment for what is left to pay on ``invoice`` and initiate it with
    Paynow: web (redirect) without ``method``, express (mobile money) with it.

    The pending payment and its transaction are committed before Paynow is called, so that
    a status update can never arrive for a transaction we do not know. If Paynow fails, the
    attempt is recorded as failed and the UpstreamError (502) is raised.
    """
    client = PaynowClient(settings, http)
    check_mobile_method(method)
    amount = await payable_invoice(invoice)
    auth_email = _auth_email(settings, invoice, user)
    attempt = await _record_pending_attempt(invoice, amount, phone=phone, method=method)
    transaction, payment = attempt.transaction, attempt.payment
    request = PaymentRequest(
        reference=transaction.reference,
        amount=amount,
        additional_info=f"Slyker Tech invoice {invoice.invoice_number}",
        auth_email=auth_email,
        phone=phone,
        method=method,
    )
    try:
        reply = await client.initiate(request)
    except UpstreamError as error:
        await _record_failed_start(transaction, payment, error.message)
        raise
    await _record_started(transaction.id, transaction.reference, method, reply)
    log.info("Paynow %s payment %s started for %s", transaction.kind, transaction.reference, amount)
    await transaction.refresh_from_db()
    await payment.refresh_from_db()
    return attempt


def check_mobile_method(method: str) -> None:
    """InvalidInput unless ``method`` is empty (a web payment) or a mobile money method."""
    if method and method not in MOBILE_METHODS:
        raise InvalidInput("method", f"must be one of {', '.join(MOBILE_METHODS)}.")


def _auth_email(settings: PaynowSettings, invoice: Invoice, user: User) -> str:
    """The email Paynow is given for the payer: the merchant's setting, else the invoice's
    billing email, else the user's."""
    billing_email = str((invoice.billing_info or {}).get("email") or "")
    return settings.auth_email or billing_email or user.email


async def _record_pending_attempt(
    invoice: Invoice, amount: Decimal, *, phone: str, method: str
) -> PaynowAttempt:
    """A pending payment of ``amount`` and its transaction (reference
    ``<invoice number>-P<payment id>``), committed together."""
    async with in_transaction() as connection:
        payment = await Payment.create(
            invoice_id=invoice.id,
            amount=amount,
            method="paynow",
            status=PaymentStatus.PENDING,
            reference="",
            using_db=connection,
        )
        reference = f"{invoice.invoice_number}-P{payment.id}"
        payment.reference = reference
        await payment.save(using_db=connection, update_fields=["reference"])
        transaction = await PaynowTransaction.create(
            invoice_id=invoice.id,
            payment=payment,
            reference=reference,
            kind=PaynowKind.EXPRESS if method else PaynowKind.WEB,
            method=method,
            phone=phone,
            amount=amount,
            using_db=connection,
        )
    return PaynowAttempt(transaction, payment)


async def _record_started(
    transaction_id: int, reference: str, method: str, reply: InitiateReply
) -> None:
    """Record Paynow's answer to an initiation: its status, URLs and reference."""
    # Paynow's own words: a web transaction is "Created" until the customer acts, an express
    # one "Sent" (referred to the mobile money operator).
    updated = await PaynowTransaction.filter(id=transaction_id, status="Initiating").update(
        status="Sent" if method else "Created",
        poll_url=reply.poll_url,
        browser_url=reply.browser_url,
        instructions=reply.instructions,
    )
    if reply.paynow_reference:
        try:
            await PaynowTransaction.filter(id=transaction_id, paynow_reference=None).update(
                paynow_reference=reply.paynow_reference
            )
        except IntegrityError:
            log.error("Paynow reference %s reused for %s", reply.paynow_reference, reference)
    if not updated:  # a status update arrived first: keep its status, add the URLs
        await PaynowTransaction.filter(id=transaction_id).update(
            poll_url=reply.poll_url, browser_url=reply.browser_url, instructions=reply.instructions
        )


async def _record_failed_start(
    transaction: PaynowTransaction, payment: Payment, reason: str
) -> None:
    async with in_transaction() as connection:
        await (
            PaynowTransaction.filter(id=transaction.id, status="Initiating")
            .using_db(connection)
            .update(status="Error", error=reason[:1000])
        )
        await (
            Payment.filter(id=payment.id, status=PaymentStatus.PENDING)
            .using_db(connection)
            .update(status=PaymentStatus.FAILED)
        )
    log.warning("Paynow payment %s could not start: %s", transaction.reference, reason)


@dataclass(frozen=True)
class AppliedStatus:
    transaction: PaynowTransaction
    payment: Payment
    applied: bool  # this message changed the payment
    settled: bool  # ... and marked the invoice paid


# Statuses after payment that the transaction always shows (a paid transaction keeps "Paid"
# when an older status such as "Sent" arrives late).
AFTER_PAYMENT_STATUSES = ("disputed", "refunded")


async def apply_status(report: StatusReport, source: PaynowUpdateSource) -> AppliedStatus:
    """Apply a verified status to its transaction, once.

    The transaction row is locked for the whole database transaction and the payment only
    moves by conditional UPDATEs (pending/failed → completed, pending → failed), so a result
    URL POST and a poll reporting "Paid" at the same moment, or a repeated update, complete
    the payment once; the invoice is marked paid through the settlement service, once, and
    only when completed payments cover its total.
    """
    try:
        async with in_transaction() as connection:
            transaction = await _lock_transaction(report, connection)
            payment = await Payment.filter(id=transaction.payment_id).using_db(connection).get()
            was_completed = payment.status == PaymentStatus.COMPLETED
            applied, settled = await _move_payment(report, transaction, connection)
            await _update_transaction(
                transaction,
                report,
                paid_now=applied and report.is_paid,
                was_completed=was_completed,
                connection=connection,
            )
            await _record_status_update(transaction, report, source, applied, connection)
    except IntegrityError:
        raise Conflict(
            "Another transaction already has this Paynow reference.",
            code="paynow_reference_mismatch",
        ) from None
    await payment.refresh_from_db()
    if applied:
        log.info(
            "Paynow %s: %s from %s (invoice settled: %s)",
            transaction.reference,
            report.status,
            source,
            settled,
        )
    return AppliedStatus(transaction, payment, applied, settled)


async def _lock_transaction(
    report: StatusReport, connection: BaseDBAsyncClient
) -> PaynowTransaction:
    """The transaction ``report`` is about, locked until ``connection``'s transaction ends;
    NotFound for an unknown reference, Conflict when Paynow's reference does not match."""
    transaction = (
        await PaynowTransaction.filter(reference=report.reference)
        .using_db(connection)
        .select_for_update()
        .get_or_none()
    )
    if transaction is None:
        raise NotFound(f"No Paynow transaction has the reference {report.reference!r}.")
    check_paynow_reference(report.paynow_reference, transaction.paynow_reference)
    return transaction


def check_paynow_reference(reported: str, recorded: str | None) -> None:
    """Conflict when an update names another Paynow reference than the one recorded (either
    may be missing: then there is nothing to compare)."""
    if reported and recorded and reported != recorded:
        raise Conflict(
            "The status update's Paynow reference does not match this transaction.",
            code="paynow_reference_mismatch",
        )


async def _move_payment(
    report: StatusReport, transaction: PaynowTransaction, connection: BaseDBAsyncClient
) -> tuple[bool, bool]:
    """Apply ``report`` to the transaction's payment: ``(applied, settled)``, whether the
    payment changed and whether that settled the invoice. Paid: pending or failed →
    completed; cancelled or failed: pending → failed; any other status changes nothing."""
    if report.is_paid:
        assert report.amount is not None  # read_status_message requires it
        if not await _complete_payment(report, transaction, connection):
            return False, False
        settled = await _settle_invoice(transaction, report.amount, connection)
        return True, settled
    if report.is_failed:
        return await _fail_payment(transaction.payment_id, connection), False
    return False, False


async def _complete_payment(
    report: StatusReport, transaction: PaynowTransaction, connection: BaseDBAsyncClient
) -> bool:
    """Pending or failed → completed, with the amount paid; False if it was neither."""
    moved = await (
        Payment.filter(
            id=transaction.payment_id, status__in=[PaymentStatus.PENDING, PaymentStatus.FAILED]
        )
        .using_db(connection)
        .update(
            status=PaymentStatus.COMPLETED,
            amount=report.amount,
            paid_at=datetime.now(UTC),
            reference=report.paynow_reference or transaction.reference,
        )
    )
    return bool(moved)


async def _settle_invoice(
    transaction: PaynowTransaction, paid_amount: Decimal, connection: BaseDBAsyncClient
) -> bool:
    """Mark the transaction's invoice paid if its completed payments now cover it."""
    invoice = (
        await Invoice.filter(id=transaction.invoice_id)
        .using_db(connection)
        .select_for_update()
        .get()
    )
    settled = await settle_if_covered(invoice, connection)
    if not settled:
        log.warning(
            "Paynow %s paid %s; invoice %s (%s, total %s) not settled by it",
            transaction.reference,
            paid_amount,
            invoice.invoice_number,
            invoice.status,
            invoice.total,
        )
    return settled


async def _fail_payment(payment_id: int, connection: BaseDBAsyncClient) -> bool:
    """Pending → failed; False if it was not pending."""
    moved = await (
        Payment.filter(id=payment_id, status=PaymentStatus.PENDING)
        .using_db(connection)
        .update(status=PaymentStatus.FAILED)
    )
    return bool(moved)


def transaction_status(report: StatusReport, current: str, *, was_completed: bool) -> str:
    """The transaction's status once ``report`` is applied: Paynow's latest, except that an
    older status arriving after the payment completed does not undo the paid status."""
    if report.is_paid or not was_completed or report.status.lower() in AFTER_PAYMENT_STATUSES:
        return report.status
    return current


async def _update_transaction(
    transaction: PaynowTransaction,
    report: StatusReport,
    *,
    paid_now: bool,
    was_completed: bool,
    connection: BaseDBAsyncClient,
) -> None:
    """Save ``report`` on ``transaction``: its status, Paynow's reference if it had none,
    and the amount paid when ``report`` completed the payment (``paid_now``)."""
    if paid_now:
        transaction.paid_amount = report.amount
    transaction.status = transaction_status(report, transaction.status, was_completed=was_completed)
    if was_completed and report.status.lower() in AFTER_PAYMENT_STATUSES:
        log.warning("Paynow %s is now %s", transaction.reference, report.status)
    if report.paynow_reference and not transaction.paynow_reference:
        transaction.paynow_reference = report.paynow_reference
    await transaction.save(
        using_db=connection, update_fields=["status", "paynow_reference", "paid_amount"]
    )


async def _record_status_update(
    transaction: PaynowTransaction,
    report: StatusReport,
    source: PaynowUpdateSource,
    applied: bool,
    connection: BaseDBAsyncClient,
) -> PaynowStatusUpdate:
    """Keep every authentic message as received, and whether it changed the payment."""
    return await PaynowStatusUpdate.create(
        transaction=transaction,
        source=source,
        status=report.status,
        amount=report.amount,
        paynow_reference=report.paynow_reference,
        applied=applied,
        using_db=connection,
    )


async def receive_status_update(settings: PaynowSettings, body: bytes) -> AppliedStatus:
    """A status update POSTed by Paynow to our result URL: verified, then applied once."""
    if settings.integration_key is None:
        raise PaynowNotConfigured("PAYNOW_INTEGRATION_KEY")
    report = verify_status_update(body, settings.integration_key)
    return await apply_status(report, PaynowUpdateSource.RESULT_URL)


async def check_status(
    settings: PaynowSettings, http: httpx.AsyncClient, transaction: PaynowTransaction
) -> AppliedStatus:
    """Poll Paynow for ``transaction`` and apply what it says (the fallback when the result
    URL is late or unreachable). A completed payment is not polled again."""
    payment = await Payment.get(id=transaction.payment_id)
    if payment.status == PaymentStatus.COMPLETED:
        return AppliedStatus(transaction, payment, applied=False, settled=False)
    client = PaynowClient(settings, http)
    if not transaction.poll_url:
        raise Conflict(
            "This Paynow payment was never started with Paynow; start a new one.",
            code="paynow_not_started",
        )
    report = await client.poll(transaction.poll_url)
    if report.reference != transaction.reference:
        raise UpstreamError("Paynow's status reply is for another transaction.")
    return await apply_status(report, PaynowUpdateSource.POLL)


async def latest_web_attempt(invoice_id: int) -> PaynowTransaction | None:
    return await PaynowTransaction.filter(invoice_id=invoice_id, kind=PaynowKind.WEB).first()


async def checkout_attempt(
    settings: PaynowSettings,
    http: httpx.AsyncClient,
    invoice: Invoice,
    user: User,
    *,
    created: bool,
) -> PaynowTransaction | None:
    """The Paynow transaction a checkout of ``invoice`` answers with.

    A new invoice starts one. A repeated checkout returns the pending one, if any (its page
    can still be paid; while it is still being started there is no URL yet), and starts a
    new one when the last attempt failed or was cancelled: checking out again is how the
    storefront retries. None when the invoice no longer needs paying.
    """
    if invoice.status not in SETTLEABLE:
        return None
    if not created:
        latest = await latest_web_attempt(invoice.id)
        if latest is None:
            return None  # the first checkout is still starting it
        pending = await PaynowTransaction.filter(
            invoice_id=invoice.id, kind=PaynowKind.WEB, payment__status=PaymentStatus.PENDING
        ).first()
        if pending is not None:
            return pending
    try:
        attempt = await start_payment(settings, http, invoice, user)
    except Conflict:
        return None  # covered by other payments meanwhile
    return attempt.transaction
