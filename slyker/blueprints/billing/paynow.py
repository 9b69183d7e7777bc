"""Paynow payments: pay an invoice on Paynow's page or by mobile money, poll a payment's
status, and the result URL Paynow POSTs status updates to.

The rules live in :mod:`slyker.services.paynow` (exactly-once settlement) and
:mod:`slyker.services.paynow_protocol` (hashes, messages, the HTTP client).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field
from quart import Blueprint, request
from quart_rate_limiter import rate_limit
from quart_schema import DataSource, document_request, validate_request, validate_response

from slyker.auth import (
    authenticated_user,
    current_user,
    ignores_bearer_header,
    login_required,
    visible_to_caller,
)
from slyker.errors import APIError
from slyker.models.billing import Invoice, Payment
from slyker.models.paynow import PaynowTransaction
from slyker.money import as_string
from slyker.outbound import http_client
from slyker.services import paynow as paynow_service
from slyker.services import paynow_protocol
from slyker.settings import current_settings

blueprint = Blueprint("paynow", __name__, url_prefix="/api/billing")


async def caller_key() -> str:
    """Rate limits count per user (these endpoints need a login), else per address."""
    user = current_user()
    return f"user:{user.id}" if user is not None else f"addr:{request.remote_addr}"


class PaynowAttemptOut(BaseModel):
    payment_id: int
    invoice_id: int
    invoice_number: str
    reference: str
    kind: Literal["web", "express"]
    method: str | None
    amount: str
    payment_status: str
    paynow_status: str
    invoice_status: str
    paid: bool
    redirect_url: str | None
    instructions: str | None


class ExpressCheckoutIn(BaseModel):
    phone: str = Field(min_length=1, max_length=40)
    method: Literal["ecocash", "onemoney"]


class PaynowStatusUpdate(BaseModel):
    """What Paynow POSTs to the result URL (form-urlencoded, in this order; ``hash`` is over
    the other values and the integration key)."""

    reference: str
    paynowreference: str
    amount: str
    status: str
    pollurl: str
    hash: str


class ResultAck(BaseModel):
    received: bool
    reference: str
    status: str


async def attempt_out(transaction: PaynowTransaction) -> PaynowAttemptOut:
    payment = await Payment.get(id=transaction.payment_id)
    invoice = await Invoice.get(id=transaction.invoice_id)
    return PaynowAttemptOut(
        payment_id=payment.id,
        invoice_id=invoice.id,
        invoice_number=invoice.invoice_number,
        reference=transaction.reference,
        kind=transaction.kind.value,
        method=transaction.method or None,
        amount=as_string(transaction.amount),
        payment_status=str(payment.status),
        paynow_status=transaction.status,
        invoice_status=str(invoice.status),
        paid=str(payment.status) == "completed",
        redirect_url=transaction.browser_url or None,
        instructions=transaction.instructions or None,
    )


async def own_invoice(invoice_id: int) -> Invoice:
    """The caller's invoice (staff: any), else 404."""
    invoice = await visible_to_caller(Invoice).get_or_none(id=invoice_id)
    if invoice is None:
        raise APIError(404, "Invoice not found.")
    return invoice


@blueprint.post("/invoices/<int:invoice_id>/paynow_payment/")
@rate_limit(10, timedelta(minutes=1), key_function=caller_key)
@login_required
@validate_response(PaynowAttemptOut, 201)
async def paynow_payment(invoice_id: int) -> tuple[PaynowAttemptOut, int]:
    """Pay one of your unpaid invoices on Paynow's page: starts a Paynow web transaction for
    what is left to pay and returns ``redirect_url`` (send the browser there) and
    ``payment_id`` (the pending payment; poll it with ``check_paynow_status``). A request
    body, if any, is ignored. 409 if the invoice is paid or cancelled, 502 if Paynow fails
    (the attempt is recorded as failed; try again)."""
    invoice = await own_invoice(invoice_id)
    attempt = await paynow_service.start_payment(
        current_settings().billing.paynow,
        http_client(paynow_protocol.HTTP_CLIENT_KEY),
        invoice,
        authenticated_user(),
    )
    return await attempt_out(attempt.transaction), 201


@blueprint.post("/invoices/<int:invoice_id>/express_checkout/")
@rate_limit(5, timedelta(minutes=1), key_function=caller_key)
@login_required
@validate_request(ExpressCheckoutIn)
@validate_response(PaynowAttemptOut, 201)
async def express_checkout(
    invoice_id: int, data: ExpressCheckoutIn
) -> tuple[PaynowAttemptOut, int]:
    """Pay one of your unpaid invoices by mobile money (``{phone, method}``, method
    ``ecocash`` or ``onemoney``): Paynow sends a prompt to the phone; ``instructions`` say
    what the customer should do. Poll ``payments/{payment_id}/check_paynow_status/`` until
    ``paid`` (or ``payment_status`` is ``failed``)."""
    invoice = await own_invoice(invoice_id)
    phone = paynow_protocol.normalise_phone(data.phone)
    attempt = await paynow_service.start_payment(
        current_settings().billing.paynow,
        http_client(paynow_protocol.HTTP_CLIENT_KEY),
        invoice,
        authenticated_user(),
        phone=phone,
        method=data.method,
    )
    return await attempt_out(attempt.transaction), 201


@blueprint.post("/payments/<int:payment_id>/check_paynow_status/")
@rate_limit(30, timedelta(minutes=1), key_function=caller_key)
@login_required
@validate_response(PaynowAttemptOut, 200)
async def check_paynow_status(payment_id: int) -> PaynowAttemptOut:
    """Ask Paynow for the status of one of your Paynow payments and apply it (the invoice
    becomes paid once, when its payments cover it). ``paid`` says whether this payment
    completed. 404 if the payment is not yours or not a Paynow payment."""
    transaction = await visible_to_caller(PaynowTransaction, "invoice__user_id").get_or_none(
        payment_id=payment_id
    )
    if transaction is None:
        raise APIError(404, "Paynow payment not found.")
    result = await paynow_service.check_status(
        current_settings().billing.paynow, http_client(paynow_protocol.HTTP_CLIENT_KEY), transaction
    )
    return await attempt_out(result.transaction)


@blueprint.post("/paynow/result/")
@ignores_bearer_header
# Documented, not parsed by quart-schema: the hash is checked over the raw body's fields in
# the order Paynow sent them (slyker.services.paynow_protocol.verify_status_update).
@document_request(PaynowStatusUpdate, source=DataSource.FORM)
@validate_response(ResultAck, 200)
async def paynow_result() -> ResultAck:
    """The result URL (``PAYNOW_RESULT_URL``): Paynow POSTs each status update here,
    form-urlencoded, without credentials. Accepted only when its hash verifies (403
    otherwise, 400 when it is not a status update); applied once however often it comes."""
    body = await request.get_data(cache=False)
    result = await paynow_service.receive_status_update(current_settings().billing.paynow, body)
    transaction = result.transaction
    return ResultAck(received=True, reference=transaction.reference, status=transaction.status)
