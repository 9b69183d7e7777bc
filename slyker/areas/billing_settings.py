"""The billing area's settings section: ``settings.billing`` (``CART_*``,
``COUPON_CHECKS_PER_MINUTE``, ``TAX_RATE``, ``INVOICE_DUE_DAYS``, ``*_PAYMENT_INSTRUCTIONS``,
``PAYNOW_*`` as ``settings.billing.paynow``, ``WHOIS_*``).

Read and validated at start-up with the rest (:func:`slyker.settings.load_settings`), whether
or not the billing area is installed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from slyker.settings_reader import Reader, SettingsError

# An invoice is due at most ten years after it is issued (dates stay within the calendar).
MAX_INVOICE_DUE_DAYS = 3650
DEFAULT_BANK_INSTRUCTIONS = (
    "Pay by bank transfer to Slyker Tech (account details on your invoice e-mail) "
    "quoting the invoice number as the reference."
)
DEFAULT_CRYPTO_INSTRUCTIONS = (
    "Pay in cryptocurrency: reply to your invoice e-mail or contact billing@slykertech.co.zw "
    "for the wallet address and amount, quoting the invoice number; we confirm the payment "
    "by hand."
)
PAYNOW_API_URL = "https://www.paynow.co.zw"
_PAYNOW_ID_RE = re.compile(r"[0-9]{1,12}")
_PAYNOW_KEY_RE = re.compile(r"[A-Za-z0-9-]{8,128}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = _SUFFIX_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LOOPBACK_NAMES = {"localhost"}


@dataclass(frozen=True)
class PaynowSettings:
    """Paynow (Zimbabwe). Optional as a whole: without them ``paynow`` payments are refused
    with a 400 naming the first missing setting (:attr:`missing`)."""

    integration_id: str | None
    integration_key: str | None  # lower-cased: Paynow's keys are GUIDs, hashed in lower case
    return_url: str | None  # the storefront page the customer comes back to
    result_url: str | None  # the public URL of our result endpoint (Paynow POSTs to it)
    api_url: str  # https://www.paynow.co.zw; tests point it at their simulator
    timeout: float  # seconds for each call to Paynow
    auth_email: str | None  # sent as authemail instead of the customer's (test mode needs it)

    @property
    def missing(self) -> str | None:
        """The first setting a Paynow payment needs and does not have."""
        required = (
            ("PAYNOW_INTEGRATION_ID", self.integration_id),
            ("PAYNOW_INTEGRATION_KEY", self.integration_key),
            ("PAYNOW_RETURN_URL", self.return_url),
            ("PAYNOW_RESULT_URL", self.result_url),
        )
        return next((name for name, value in required if not value), None)


@dataclass(frozen=True)
class BillingSettings:
    cart_cookie_name: str
    cart_cookie_samesite: str
    cart_cookie_secure: bool | None  # None: Secure unless the API is served on a loopback host
    cart_cookie_max_age: int
    cart_max_lines: int
    cart_creations_per_minute: int  # new anonymous carts per client address
    cart_writes_per_minute: int  # cart changes per user, or per address when anonymous
    coupon_checks_per_minute: int  # validate_code and apply_coupon per client address
    tax_rate: Decimal
    invoice_due_days: int
    bank_payment_instructions: str
    crypto_payment_instructions: str
    paynow: PaynowSettings
    # Domain availability: per-suffix overrides of the built-in tables ("" removes a suffix).
    whois_rdap_servers: dict[str, str]
    whois_servers: dict[str, str]
    whois_timeout: float
    whois_max_parallel: int
    whois_max_domains: int
    whois_cache_seconds: int
    whois_rate_limit: int


def read_billing_settings(read: Reader) -> BillingSettings:
    samesite, secure = _cart_cookie_policy(read)
    return BillingSettings(
        cart_cookie_name=read.raw("CART_COOKIE_NAME") or "slyker_cart",
        cart_cookie_samesite=samesite,
        cart_cookie_secure=secure,
        cart_cookie_max_age=read.int("CART_COOKIE_MAX_AGE", 60 * 60 * 24 * 30, minimum=60),
        cart_max_lines=read.int("CART_MAX_LINES", 50, minimum=1, maximum=1000),
        cart_creations_per_minute=read.int("CART_CREATIONS_PER_MINUTE", 20, minimum=1),
        cart_writes_per_minute=read.int("CART_WRITES_PER_MINUTE", 120, minimum=1),
        coupon_checks_per_minute=read.int("COUPON_CHECKS_PER_MINUTE", 10, minimum=1),
        tax_rate=_percentage(read, "TAX_RATE", "0"),
        invoice_due_days=read.int("INVOICE_DUE_DAYS", 14, maximum=MAX_INVOICE_DUE_DAYS),
        bank_payment_instructions=read.raw("BANK_PAYMENT_INSTRUCTIONS")
        or DEFAULT_BANK_INSTRUCTIONS,
        crypto_payment_instructions=read.raw("CRYPTO_PAYMENT_INSTRUCTIONS")
        or DEFAULT_CRYPTO_INSTRUCTIONS,
        paynow=_paynow_settings(read),
        whois_rdap_servers={
            suffix: _service_url("WHOIS_RDAP_SERVERS", url, query=False) if url else ""
            for suffix, url in _suffix_pairs(read, "WHOIS_RDAP_SERVERS").items()
        },
        whois_servers={
            suffix: _whois_server(server) if server else ""
            for suffix, server in _suffix_pairs(read, "WHOIS_SERVERS").items()
        },
        # The storefront gives up after 30 s: a whole request must finish well before that.
        whois_timeout=read.float("WHOIS_TIMEOUT", 5.0, minimum=0.05, maximum=30.0),
        whois_max_parallel=read.int("WHOIS_MAX_PARALLEL", 5, minimum=1, maximum=50),
        whois_max_domains=read.int("WHOIS_MAX_DOMAINS", 20, minimum=1, maximum=100),
        whois_cache_seconds=read.int("WHOIS_CACHE_SECONDS", 300, maximum=86400),
        whois_rate_limit=read.int("WHOIS_RATE_LIMIT", 30, minimum=1),
    )


def _cart_cookie_policy(read: Reader) -> tuple[str, bool | None]:
    """SameSite and Secure of the cart cookie (None: decided per request, by the host)."""
    samesite = (read.raw("CART_COOKIE_SAMESITE") or "Lax").capitalize()
    if samesite not in {"Lax", "Strict", "None"}:
        raise SettingsError(
            "CART_COOKIE_SAMESITE", f"expected Lax, Strict or None, got {samesite!r}"
        )
    raw_secure = (read.raw("CART_COOKIE_SECURE") or "auto").lower()
    secure = None if raw_secure == "auto" else read.bool("CART_COOKIE_SECURE", True)
    if samesite == "None" and secure is False:
        raise SettingsError("CART_COOKIE_SECURE", "SameSite=None cookies must be Secure")
    return samesite, True if samesite == "None" else secure


def _percentage(read: Reader, name: str, default: str) -> Decimal:
    raw = read.raw(name) or default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(name, f"expected a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0 or value >= 100:
        raise SettingsError(name, f"must be a percentage from 0 to 99.99, got {raw!r}")
    return value


def _absolute_url(name: str, value: str | None, *, allow_query: bool = True) -> str | None:
    """An absolute http(s) URL without user info or fragment, or None when unset."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise SettingsError(name, f"{value!r} is not a URL") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.fragment
        or (parts.query and not allow_query)
        or any(char.isspace() or ord(char) < 32 for char in value)
    ):
        raise SettingsError(
            name, f"{value!r} is not an absolute http(s) URL (no user info or fragment)"
        )
    return value


def _paynow_settings(read: Reader) -> PaynowSettings:
    integration_id = read.raw("PAYNOW_INTEGRATION_ID") or None
    if integration_id is not None and not _PAYNOW_ID_RE.fullmatch(integration_id):
        raise SettingsError("PAYNOW_INTEGRATION_ID", "expected the numeric integration id")
    key = read.raw("PAYNOW_INTEGRATION_KEY") or None
    if key is not None and not _PAYNOW_KEY_RE.fullmatch(key):
        # Never echo the key: it is the secret that signs every Paynow message.
        raise SettingsError("PAYNOW_INTEGRATION_KEY", "expected the integration key (a GUID)")
    api_url = _absolute_url(
        "PAYNOW_API_URL", read.raw("PAYNOW_API_URL") or PAYNOW_API_URL, allow_query=False
    )
    assert api_url is not None
    auth_email = read.raw("PAYNOW_AUTH_EMAIL") or None
    if auth_email is not None and not _EMAIL_RE.fullmatch(auth_email):
        raise SettingsError("PAYNOW_AUTH_EMAIL", f"{auth_email!r} is not an e-mail address")
    return PaynowSettings(
        integration_id=integration_id,
        integration_key=key.lower() if key else None,
        return_url=_absolute_url("PAYNOW_RETURN_URL", read.raw("PAYNOW_RETURN_URL")),
        result_url=_absolute_url("PAYNOW_RESULT_URL", read.raw("PAYNOW_RESULT_URL")),
        api_url=api_url.rstrip("/"),
        timeout=float(read.int("PAYNOW_TIMEOUT", 20, minimum=1)),
        auth_email=auth_email,
    )


def _suffix_pairs(read: Reader, name: str) -> dict[str, str]:
    """``com=value,co.zw=value``: a domain suffix (a leading dot is dropped) and its value."""
    pairs: dict[str, str] = {}
    for item in read.list(name, ()):
        suffix, equals, value = item.partition("=")
        suffix = suffix.strip().lower().removeprefix(".")
        if not equals or not _SUFFIX_RE.fullmatch(suffix):
            raise SettingsError(name, f"{item!r} is not suffix=value (e.g. com=...)")
        if suffix in pairs:
            raise SettingsError(name, f"{suffix!r} is given twice")
        pairs[suffix] = value.strip()
    return pairs


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _service_url(name: str, url: str, *, query: bool) -> str:
    """An https URL (http only on loopback, for tests and local mirrors); RDAP bases get
    their trailing slash so that ``domain/<name>`` can be appended."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError(name, f"{url!r} is not a URL") from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme not in ("https", "http")
        or not host
        or parts.username is not None
        or parts.fragment
        or (parts.query and not query)
        or port == 0
    ):
        raise SettingsError(name, f"{url!r} is not an http(s) URL without user info or fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        raise SettingsError(name, f"{url!r} must use https (http only on loopback)")
    if not query and not url.endswith("/"):
        url += "/"
    return url


def _whois_server(server: str) -> str:
    """``host[:port]`` (port 43 by default), or an http(s) URL the name is appended to."""
    if "://" in server:
        return _service_url("WHOIS_SERVERS", server, query=True)
    problem = SettingsError("WHOIS_SERVERS", f"{server!r} is not host[:port] or an https URL")
    try:
        parts = urlsplit(f"//{server}")
        port = 43 if parts.port is None else parts.port
    except ValueError:
        raise problem from None
    host = (parts.hostname or "").lower()
    if parts.path or parts.query or parts.username is not None or not 1 <= port <= 65535:
        raise problem
    if not _HOST_RE.fullmatch(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise problem from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
