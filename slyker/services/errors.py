"""Domain errors: what a service says went wrong, without knowing about HTTP.

:mod:`slyker.errors` maps each class to a status (the one place an error body is shaped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class ServiceError(Exception):
    """Base of every domain error; ``code`` is the machine-readable ``code`` of the body."""

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        errors: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.errors = dict(errors) if errors else None


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
