"""Billing's rate limits that several routes count together.

A :class:`~slyker.ratelimit.SettingRateLimit` instance is one count for every route it
decorates, so a limit shared by two routes (or two blueprints) must be one object that both
import from here, not from each other. Limits of a single route stay next to that route.
"""

from __future__ import annotations

from datetime import timedelta

from slyker.auth import current_user
from slyker.ratelimit import SettingRateLimit, client_address


async def cart_writer_key() -> str:
    """Cart changes are counted per user when signed in, else per client address."""
    user = current_user()
    return f"user:{user.id}" if user is not None else f"addr:{await client_address()}"


# Every cart change (carts: add, update, remove, clear, apply and remove a coupon).
CART_WRITES = SettingRateLimit(
    "billing.cart_writes_per_minute", timedelta(minutes=1), cart_writer_key
)
# Guessing coupon codes: promotions' validate_code and carts' apply_coupon count together.
COUPON_CHECKS = SettingRateLimit(
    "billing.coupon_checks_per_minute", timedelta(minutes=1), client_address
)
