"""Catalog, carts, promotions, invoices and payments. Money is Decimal with 2 places."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from slyker.models.accounts import User


def money(null: bool = False, default: str | None = None) -> fields.DecimalField:
    if default is None:
        return fields.DecimalField(max_digits=12, decimal_places=2, null=null)
    return fields.DecimalField(max_digits=12, decimal_places=2, null=null, default=default)


class HostingType(StrEnum):
    SHARED = "shared"
    VPS = "vps"
    DEDICATED = "dedicated"
    CLOUD = "cloud"
    RESELLER = "reseller"


class BillingCycle(StrEnum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMI_ANNUAL = "semi_annual"
    ANNUAL = "annual"
    BIENNIAL = "biennial"
    TRIENNIAL = "triennial"


class HostingProduct(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    # URL name, unique; made from the name when staff leave it out (nullable only so that a
    # migration can add it to existing rows).
    slug = fields.CharField(max_length=200, unique=True, null=True)
    description = fields.TextField(default="")
    hosting_type = fields.CharEnumField(HostingType, max_length=16)
    is_featured = fields.BooleanField(default=False)
    # The plan pages' units: disk space and bandwidth in MB (they print value / 1024 GB);
    # 0 means unlimited for disk, bandwidth and the account counts.
    disk_space = fields.IntField(default=0)
    bandwidth = fields.IntField(default=0)
    email_accounts = fields.IntField(default=0)
    databases = fields.IntField(default=0)
    ftp_accounts = fields.IntField(default=0)
    subdomains = fields.IntField(default=0)
    addon_domains = fields.IntField(default=0)
    parked_domains = fields.IntField(default=0)
    ssl_certificate = fields.BooleanField(default=False)
    dedicated_ip = fields.BooleanField(default=False)
    cpanel_access = fields.BooleanField(default=False)
    ssh_access = fields.BooleanField(default=False)
    cron_jobs = fields.BooleanField(default=False)
    backups_included = fields.BooleanField(default=False)
    # Servers (VPS, cloud, dedicated); null for shared plans.
    cpu_cores = fields.IntField(null=True)
    ram_gb = fields.IntField(null=True)
    cpu_type = fields.CharField(max_length=100, default="")
    storage_type = fields.CharField(max_length=8, default="")  # "SSD", "NVMe", "HDD" or ""
    monthly_price = money()
    quarterly_price = money(null=True)
    semi_annual_price = money(null=True)
    annual_price = money(null=True)
    biennial_price = money(null=True)
    triennial_price = money(null=True)
    setup_fee = money(default="0.00")
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "billing_hosting_product"
        ordering = ["id"]


class DomainProduct(Model):
    id = fields.IntField(primary_key=True)
    tld = fields.CharField(max_length=63, unique=True)  # ".com", stored lower-cased
    registration_price_1yr = money()
    registration_price_2yr = money(null=True)
    registration_price_3yr = money(null=True)
    registration_price_5yr = money(null=True)
    registration_price_10yr = money(null=True)
    renewal_price = money()
    transfer_price = money()
    whois_privacy_price = money(default="0.00")
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "billing_domain_product"
        ordering = ["id"]


class Service(Model):
    """Anything sold that is neither hosting nor a domain (SSL, e-mail, design work)."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    category = fields.CharField(max_length=50)
    description = fields.TextField(default="")
    price = money()
    billing_cycle = fields.CharField(max_length=16, default="one_time")
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "billing_service"
        ordering = ["id"]


class DiscountType(StrEnum):
    PERCENTAGE = "percentage"
    FIXED = "fixed"


class Promotion(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    code = fields.CharField(max_length=50, unique=True)  # stored upper-cased
    description = fields.TextField(default="")
    discount_type = fields.CharEnumField(DiscountType, max_length=16)
    discount_value = money()
    start_date = fields.DatetimeField(null=True)
    end_date = fields.DatetimeField(null=True)
    is_active = fields.BooleanField(default=True)
    usage_limit = fields.IntField(null=True)
    usage_count = fields.IntField(default=0)
    # Uses per customer (their invoices with it, cancelled ones aside); NULL: unlimited.
    max_uses_per_customer = fields.IntField(null=True, default=1)
    # Listed by GET /api/billing/promotions/active/. Private codes are handed out, never listed.
    is_public = fields.BooleanField(default=False)
    minimum_order_amount = money(default="0.00")
    # Empty: every product type. Else categories ("shared", "vps", "domain", "ssl", ...).
    product_types = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "billing_promotion"
        ordering = ["id"]


class CartStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"
    COMPLETED = "completed"


class Cart(Model):
    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="carts", null=True, on_delete=fields.CASCADE
    )
    anonymous_token = fields.CharField(max_length=64, null=True, db_index=True)
    # "user:<id>" or "anon:<token>" while active, NULL once closed: the unique constraint
    # is what guarantees one active cart per identity, even under concurrent first calls.
    active_key = fields.CharField(max_length=80, null=True, unique=True)
    status = fields.CharEnumField(CartStatus, max_length=16, default=CartStatus.ACTIVE)
    coupon: fields.ForeignKeyNullableRelation[Promotion] = fields.ForeignKeyField(
        "models.Promotion", related_name="carts", null=True, on_delete=fields.SET_NULL
    )
    # The user cart an anonymous cart was merged into (a plain id: aerich cannot create a
    # self-referencing foreign key).
    merged_into_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    items: fields.ReverseRelation[CartItem]

    class Meta:
        table = "billing_cart"


class CartItem(Model):
    id = fields.IntField(primary_key=True)
    cart: fields.ForeignKeyRelation[Cart] = fields.ForeignKeyField(
        "models.Cart", related_name="items", on_delete=fields.CASCADE
    )
    hosting_product: fields.ForeignKeyNullableRelation[HostingProduct] = fields.ForeignKeyField(
        "models.HostingProduct", related_name="cart_items", null=True, on_delete=fields.RESTRICT
    )
    domain_product: fields.ForeignKeyNullableRelation[DomainProduct] = fields.ForeignKeyField(
        "models.DomainProduct", related_name="cart_items", null=True, on_delete=fields.RESTRICT
    )
    service: fields.ForeignKeyNullableRelation[Service] = fields.ForeignKeyField(
        "models.Service", related_name="cart_items", null=True, on_delete=fields.RESTRICT
    )
    service_name = fields.CharField(max_length=255)
    service_category = fields.CharField(max_length=50)
    # What promotions restrict on: a hosting type, "domain", or a service's category.
    product_type = fields.CharField(max_length=50)
    service_metadata = fields.JSONField(default=dict)
    quantity = fields.IntField(default=1)
    billing_cycle = fields.CharField(max_length=16)
    unit_price = money()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "billing_cart_item"
        ordering = ["id"]


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    SENT = "sent"
    PAID = "paid"
    OVERDUE = "overdue"
    CANCELLED = "cancelled"


class Invoice(Model):
    id = fields.IntField(primary_key=True)
    # Set from the id right after insert: unique, ordered, gaps tolerated.
    invoice_number = fields.CharField(max_length=40, unique=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="invoices", on_delete=fields.RESTRICT
    )
    # One invoice per cart: a repeated or concurrent checkout finds this one. (unique_together,
    # not unique=True: Tortoise and aerich make no constraint for a unique foreign key.)
    cart: fields.ForeignKeyNullableRelation[Cart] = fields.ForeignKeyField(
        "models.Cart", related_name="invoices", null=True, on_delete=fields.SET_NULL
    )
    status = fields.CharEnumField(InvoiceStatus, max_length=16, default=InvoiceStatus.SENT)
    issue_date = fields.DateField()
    due_date = fields.DateField()
    paid_date = fields.DateField(null=True)
    subtotal = money()
    tax_rate = fields.DecimalField(max_digits=5, decimal_places=2, default="0.00")
    tax_amount = money(default="0.00")
    discount_amount = money(default="0.00")
    total = money()
    promotion: fields.ForeignKeyNullableRelation[Promotion] = fields.ForeignKeyField(
        "models.Promotion", related_name="invoices", null=True, on_delete=fields.SET_NULL
    )
    billing_info = fields.JSONField(default=dict)
    payment_method = fields.CharField(max_length=20)
    notes = fields.TextField(default="")
    terms = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    items: fields.ReverseRelation[InvoiceItem]
    payments: fields.ReverseRelation[Payment]

    class Meta:
        table = "billing_invoice"
        ordering = ["-id"]
        unique_together = (("cart",),)


class InvoiceItem(Model):
    id = fields.IntField(primary_key=True)
    invoice: fields.ForeignKeyRelation[Invoice] = fields.ForeignKeyField(
        "models.Invoice", related_name="items", on_delete=fields.CASCADE
    )
    description = fields.CharField(max_length=255)
    service_category = fields.CharField(max_length=50)
    billing_cycle = fields.CharField(max_length=16)
    quantity = fields.IntField()
    unit_price = money()
    total = money()
    service_metadata = fields.JSONField(default=dict)
    # What was sold, for provisioning once the invoice is paid (null on staff's free lines).
    hosting_product: fields.ForeignKeyNullableRelation[HostingProduct] = fields.ForeignKeyField(
        "models.HostingProduct", related_name="invoice_items", null=True, on_delete=fields.SET_NULL
    )
    domain_product: fields.ForeignKeyNullableRelation[DomainProduct] = fields.ForeignKeyField(
        "models.DomainProduct", related_name="invoice_items", null=True, on_delete=fields.SET_NULL
    )
    service: fields.ForeignKeyNullableRelation[Service] = fields.ForeignKeyField(
        "models.Service", related_name="invoice_items", null=True, on_delete=fields.SET_NULL
    )
    # The one-off part of unit_price (a hosting setup fee): the recurring price is the rest.
    setup_fee = money(default="0.00")

    class Meta:
        table = "billing_invoice_item"
        ordering = ["id"]


class PaymentStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class Payment(Model):
    id = fields.IntField(primary_key=True)
    invoice: fields.ForeignKeyRelation[Invoice] = fields.ForeignKeyField(
        "models.Invoice", related_name="payments", on_delete=fields.RESTRICT
    )
    amount = money()
    method = fields.CharField(max_length=20)
    status = fields.CharEnumField(PaymentStatus, max_length=16, default=PaymentStatus.COMPLETED)
    reference = fields.CharField(max_length=100, default="")
    recorded_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="recorded_payments", null=True, on_delete=fields.SET_NULL
    )
    paid_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "billing_payment"
        ordering = ["-id"]
