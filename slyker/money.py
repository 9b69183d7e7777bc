"""Money is Decimal end to end, rounded half-up to cents only where an amount is final."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def cents(amount: Decimal | int | str) -> Decimal:
    return Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)


def as_string(amount: Decimal) -> str:
    """``"12.50"``: how the storefront reads ``unit_price``."""
    return f"{cents(amount):.2f}"


def as_number(amount: Decimal) -> float:
    """A JSON number for fields the storefront calls ``toFixed`` on (exact to the cent)."""
    return float(cents(amount))
