"""What a client owns once an invoice is paid: hosting subscriptions and domain
registrations (made by :mod:`slyker.services.provisioning`, once per paid invoice)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from slyker.models.accounts import User
from slyker.models.billing import DomainProduct, HostingProduct, Invoice, InvoiceItem, money


class SubscriptionStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"


class Subscription(Model):
    """One hosting account: an invoice line of quantity N makes N subscriptions."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="subscriptions", on_delete=fields.RESTRICT
    )
    hosting_product: fields.ForeignKeyNullableRelation[HostingProduct] = fields.ForeignKeyField(
        "models.HostingProduct", related_name="subscriptions", null=True, on_delete=fields.SET_NULL
    )
    invoice: fields.ForeignKeyNullableRelation[Invoice] = fields.ForeignKeyField(
        "models.Invoice", related_name="subscriptions", null=True, on_delete=fields.SET_NULL
    )
    invoice_item: fields.ForeignKeyNullableRelation[InvoiceItem] = fields.ForeignKeyField(
        "models.InvoiceItem", related_name="subscriptions", null=True, on_delete=fields.SET_NULL
    )
    # Which of the line's ``quantity`` accounts this is (0-based); with invoice_item unique,
    # so that a line can never be provisioned twice, whatever happens above.
    unit = fields.IntField(default=0)
    service_name = fields.CharField(max_length=255)
    hosting_type = fields.CharField(max_length=16, default="")
    billing_cycle = fields.CharField(max_length=16)
    price = money()  # per billing cycle, without the setup fee
    status = fields.CharEnumField(
        SubscriptionStatus, max_length=16, default=SubscriptionStatus.ACTIVE
    )
    start_date = fields.DateField()
    next_due_date = fields.DateField()
    domain = fields.CharField(max_length=253, default="")
    region = fields.CharField(max_length=50, default="")
    service_metadata = fields.JSONField(default=dict)
    provisioning_completed = fields.BooleanField(default=False)
    notes = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "services_subscription"
        ordering = ["-id"]
        unique_together = (("invoice_item", "unit"),)


class DomainStatus(StrEnum):
    ACTIVE = "active"
    PENDING = "pending"  # needs staff: the name is already registered here
    PENDING_TRANSFER = "pending_transfer"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class DomainRegistration(Model):
    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="domain_registrations", on_delete=fields.RESTRICT
    )
    domain_product: fields.ForeignKeyNullableRelation[DomainProduct] = fields.ForeignKeyField(
        "models.DomainProduct",
        related_name="registrations",
        null=True,
        on_delete=fields.SET_NULL,
    )
    invoice: fields.ForeignKeyNullableRelation[Invoice] = fields.ForeignKeyField(
        "models.Invoice", related_name="domain_registrations", null=True, on_delete=fields.SET_NULL
    )
    # The line that created this registration (renewals extend an existing one instead).
    invoice_item: fields.ForeignKeyNullableRelation[InvoiceItem] = fields.ForeignKeyField(
        "models.InvoiceItem",
        related_name="domain_registrations",
        null=True,
        unique=True,
        on_delete=fields.SET_NULL,
    )
    domain_name = fields.CharField(max_length=253, db_index=True)  # lower-case, no final dot
    action = fields.CharField(max_length=16, default="registration")
    years = fields.IntField(default=1)
    status = fields.CharEnumField(DomainStatus, max_length=20, default=DomainStatus.ACTIVE)
    registration_date = fields.DateField()
    expiry_date = fields.DateField()
    whois_privacy = fields.BooleanField(default=False)
    auto_renew = fields.BooleanField(default=False)
    nameservers = fields.JSONField(default=list)
    notes = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "services_domain_registration"
        ordering = ["-id"]
