"""The demo catalog: hosting plans, domain prices, a service and the WELCOME10 coupon that
``load-demo-catalog`` (``./dev run``) puts into an empty database."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from slyker.models.billing import DomainProduct, HostingProduct, Promotion, Service

DEMO_HOSTING = [
    ("Starter Shared", "shared", "2.99", "8.49", "16.49", "29.99", "55.99", "79.99", "0"),
    ("Business Shared", "shared", "5.99", "16.99", "32.99", "59.99", "109.99", None, "0"),
    ("VPS 2 GB", "vps", "12.00", "34.00", "66.00", "129.00", None, None, "10.00"),
    ("Cloud Flex", "cloud", "19.00", None, None, "199.00", None, None, "0"),
    ("Dedicated E3", "dedicated", "89.00", None, None, "959.00", None, None, "49.00"),
    ("Reseller 50", "reseller", "24.99", "71.99", None, "269.99", None, None, "0"),
]
GB = 1024  # the plan pages' units are MB
# Specs by product name: what the plan pages print (0 = unlimited).
_SHARED = {"ssl_certificate": True, "cpanel_access": True, "cron_jobs": True}
_SERVER = {"ssl_certificate": True, "dedicated_ip": True, "ssh_access": True, "cron_jobs": True}
DEMO_SPECS: dict[str, dict[str, Any]] = {
    "Starter Shared": {
        **_SHARED,
        "slug": "starter-shared",
        "description": "One website with the essentials: cPanel, free SSL and e-mail.",
        "disk_space": 10 * GB,
        "bandwidth": 100 * GB,
        "email_accounts": 10,
        "databases": 5,
        "ftp_accounts": 5,
        "subdomains": 10,
        "addon_domains": 0,
        "parked_domains": 2,
    },
    "Business Shared": {
        **_SHARED,
        "slug": "business-shared",
        "description": "For growing businesses: unlimited bandwidth, more sites, daily backups.",
        "is_featured": True,
        "disk_space": 50 * GB,
        "bandwidth": 0,
        "email_accounts": 0,
        "databases": 0,
        "ftp_accounts": 0,
        "subdomains": 0,
        "addon_domains": 10,
        "parked_domains": 10,
        "backups_included": True,
    },
    "VPS 2 GB": {
        **_SERVER,
        "slug": "vps-2-gb",
        "description": "A virtual private server with root access.",
        "is_featured": True,
        "cpu_cores": 2,
        "ram_gb": 2,
        "storage_type": "NVMe",
        "disk_space": 50 * GB,
        "bandwidth": 2000 * GB,
        "backups_included": True,
    },
    "Cloud Flex": {
        **_SERVER,
        "slug": "cloud-flex",
        "description": "Cloud server that scales with you.",
        "cpu_cores": 4,
        "ram_gb": 8,
        "storage_type": "SSD",
        "disk_space": 160 * GB,
        "bandwidth": 0,
        "backups_included": True,
    },
    "Dedicated E3": {
        **_SERVER,
        "slug": "dedicated-e3",
        "description": "A whole server: Intel Xeon E3, full root access.",
        "cpu_type": "Intel Xeon E3-1230 v6",
        "cpu_cores": 4,
        "ram_gb": 32,
        "storage_type": "SSD",
        "disk_space": 1000 * GB,
        "bandwidth": 0,
        "backups_included": True,
    },
    "Reseller 50": {
        **_SHARED,
        "slug": "reseller-50",
        "description": "Host up to 50 client accounts under your own brand.",
        "disk_space": 100 * GB,
        "bandwidth": 1000 * GB,
        "email_accounts": 0,
        "databases": 0,
        "subdomains": 0,
        "addon_domains": 50,
        "backups_included": True,
    },
}
DEMO_DOMAINS = [
    (".com", "12.99", "25.49", "37.99", "62.99", "124.99", "14.99", "12.99", "4.99"),
    (".co.zw", "9.99", "19.49", None, None, None, "9.99", "9.99", "0"),
    (".net", "14.49", "28.49", "42.49", None, None, "15.99", "14.49", "4.99"),
    (".org", "13.49", "26.49", None, None, None, "14.49", "13.49", "4.99"),
]
DEMO_SERVICES = [("SSL Certificate (1 year)", "ssl", "39.00", "annual")]
DEMO_COUPON = "WELCOME10"


def _price(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


async def load_demo_catalog() -> bool:
    """Add the demo products and coupon; False (and nothing added) if a catalog exists."""
    if await HostingProduct.exists() or await DomainProduct.exists():
        return False
    for name, kind, m, q, s, a, b, t, setup in DEMO_HOSTING:
        await HostingProduct.create(
            name=name,
            hosting_type=kind,
            monthly_price=Decimal(m),
            quarterly_price=_price(q),
            semi_annual_price=_price(s),
            annual_price=_price(a),
            biennial_price=_price(b),
            triennial_price=_price(t),
            setup_fee=Decimal(setup),
            **DEMO_SPECS[name],
        )
    for tld, y1, y2, y3, y5, y10, renew, transfer, privacy in DEMO_DOMAINS:
        await DomainProduct.create(
            tld=tld,
            registration_price_1yr=Decimal(y1),
            registration_price_2yr=_price(y2),
            registration_price_3yr=_price(y3),
            registration_price_5yr=_price(y5),
            registration_price_10yr=_price(y10),
            renewal_price=Decimal(renew),
            transfer_price=Decimal(transfer),
            whois_privacy_price=Decimal(privacy),
        )
    for name, category, price, cycle in DEMO_SERVICES:
        await Service.create(
            name=name, category=category, price=Decimal(price), billing_cycle=cycle
        )
    await Promotion.get_or_create(
        code=DEMO_COUPON,
        defaults={
            "name": "Welcome 10% off",
            "is_public": True,
            "discount_type": "percentage",
            "discount_value": Decimal("10"),
            "minimum_order_amount": Decimal("10.00"),
        },
    )
    return True
