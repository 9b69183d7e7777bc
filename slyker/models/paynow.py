"""Paynow (Zimbabwe) transactions: one row per attempt to pay an invoice through Paynow.

Each attempt owns exactly one :class:`~slyker.models.billing.Payment` (pending until Paynow
reports it paid or cancelled), so a status update can complete at most that one payment.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from slyker.models.billing import Invoice, Payment, money


class PaynowKind(StrEnum):
    WEB = "web"  # the customer is redirected to Paynow's page (browserurl)
    EXPRESS = "express"  # mobile money: Paynow pushes a USSD prompt to the phone


class PaynowTransaction(Model):
    id = fields.IntField(primary_key=True)
    invoice: fields.ForeignKeyRelation[Invoice] = fields.ForeignKeyField(
        "models.Invoice", related_name="paynow_transactions", on_delete=fields.RESTRICT
    )
    payment: fields.OneToOneRelation[Payment] = fields.OneToOneField(
        "models.Payment", related_name="paynow_transaction", on_delete=fields.RESTRICT
    )
    # Our reference, sent to Paynow and echoed in every status update: "INV-000123-P45".
    reference = fields.CharField(max_length=60, unique=True)
    kind = fields.CharEnumField(PaynowKind, max_length=16)
    method = fields.CharField(max_length=20, default="")  # ecocash / onemoney (express)
    phone = fields.CharField(max_length=20, default="")
    amount = money()  # what we asked Paynow to collect
    # Paynow's own reference; unique, so one Paynow payment is recorded once.
    paynow_reference = fields.CharField(max_length=64, null=True, unique=True)
    browser_url = fields.CharField(max_length=1000, default="")
    poll_url = fields.CharField(max_length=1000, default="")
    instructions = fields.TextField(default="")
    # Paynow's status as last reported ("Sent", "Paid", "Cancelled", ...); "Error" when
    # initiating failed (see ``error``), "Initiating" until Paynow has answered.
    status = fields.CharField(max_length=32, default="Initiating")
    error = fields.TextField(default="")
    paid_amount = money(null=True)  # the amount of the "Paid" update that completed it
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    updates: fields.ReverseRelation[PaynowStatusUpdate]

    class Meta:
        table = "paynow_transaction"
        ordering = ["-id"]


class PaynowUpdateSource(StrEnum):
    RESULT_URL = "result_url"  # Paynow POSTed it to our result URL
    POLL = "poll"  # we asked Paynow's poll URL


class PaynowStatusUpdate(Model):
    """Every authentic status message received, as received (replays included); each is
    applied at most once to the payment."""

    id = fields.IntField(primary_key=True)
    transaction: fields.ForeignKeyRelation[PaynowTransaction] = fields.ForeignKeyField(
        "models.PaynowTransaction", related_name="updates", on_delete=fields.CASCADE
    )
    source = fields.CharEnumField(PaynowUpdateSource, max_length=16)
    status = fields.CharField(max_length=32)
    amount = money(null=True)
    paynow_reference = fields.CharField(max_length=64, default="")
    applied = fields.BooleanField(default=False)  # it changed the payment
    received_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "paynow_status_update"
        ordering = ["id"]
