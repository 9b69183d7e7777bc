"""Paynow payments: a pending payment and its Paynow transaction for what is left to pay on
an invoice, started with Paynow, and each verified status applied to its payment exactly once
(the invoice settled through :mod:`slyker.services.settlement`). Paynow's wire protocol and
HTTP client are :mod:`slyker.services.paynow_protocol`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

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
from slyker.services.errors import Conflict, NotFound, UpstreamError
from slyker.services.paynow_protocol import (
    InitiateReply,
    PaymentRequest,
    PaynowClient,
    PaynowNotConfigured,
    StatusReport,
    check_mobile_method,
    verify_status_update,
)
from slyker.services.settlement import SETTLEABLE, completed_amount, settle_if_covered

log = logging.getLogger(__name__)


# --- starting a payment -------------------------------------------------------------------


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


# --- applying a status --------------------------------------------------------------------


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


# --- status updates, polls and checkouts --------------------------------------------------


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
