"""Domain errors: what a service says went wrong, without knowing about HTTP.

:mod:`slyker.errors` maps each class to a status (the one place an error body is shaped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ServiceError(Exception):
    """Base of every domain error; ``code`` is the machine-readable ``code`` of the body."""

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        errors: Mapping[str, Sequence[str]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.errors = dict(errors) if errors else None
        # More members of the error body, after the standard ones (e.g. the invoice that a
        # failed payment start still created).
        self.extra = dict(extra) if extra else None


class NotFound(ServiceError):
    code = "not_found"


class InvalidInput(ServiceError):
    """A client error about one field (``field: message``) or about the request as a whole."""

    code = "invalid"

    def __init__(self, field: str | None, message: str, *, code: str | None = None) -> None:
        text = f"{field}: {message}" if field else message
        super().__init__(text, code=code, errors={field or "non_field_errors": [message]})
        self.field = field


class PermissionDenied(ServiceError):
    code = "permission_denied"


class Conflict(ServiceError):
    """The request is valid but clashes with the resource's current state (409)."""

    code = "conflict"


class RateLimited(ServiceError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class UpstreamError(ServiceError):
    """A third party (Paynow, a registry) answered badly or not at all (502)."""

    code = "upstream_error"


class Unavailable(ServiceError):
    """A dependency of ours (database, Redis) is unavailable: try again later (503)."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


# --- carts and checkout ------------------------------------------------------------------


class CartNotFound(NotFound):
    """Not the caller's cart, or no such cart: the same answer (never reveal that it exists)."""

    code = "cart_not_found"


class CartClosed(Conflict):
    """The cart was checked out or merged: it takes no more changes."""

    code = "cart_closed"

    def __init__(self, message: str = "This cart is closed: it was checked out or merged.") -> None:
        super().__init__(message)


class CartFull(Conflict):
    code = "cart_full"

    def __init__(self, max_lines: int) -> None:
        super().__init__(
            f"This cart is full: at most {max_lines} lines. Remove a line or check out first."
        )
        self.max_lines = max_lines


class PaymentNotStarted(UpstreamError):
    """An invoice was created, but the third party could not start its payment (502). The
    body names the invoice (``extra``), so the client can pay it later or check out again."""
