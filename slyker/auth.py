"""JWT identity: tokens issued, rotated and revoked; who the current request is.

Access tokens are short-lived and stateless (but refused once issued before the user's
last password reset). Refresh tokens are recorded
(:class:`~slyker.models.accounts.RefreshToken`): each can be used once, and presenting a
used or revoked one revokes its whole family, because only a thief or a replay does that.

One exception, the reuse grace window (``JWT_REFRESH_REUSE_GRACE_SECONDS``, as Auth0's
"reuse interval" and Okta's "grace period"): two tabs, or two code paths of one page, that
refresh with the same token at once are not thieves. For that many seconds after a token
was rotated, presenting it again issues a new *sibling* pair in the same family, as long as
no token issued from it has been used yet (Auth0: only the previous token may be reused).
A sibling rather than the same successor because each tab keeps its own copy of the refresh
token in memory: tabs handed one shared successor would collide again at their next refresh.
Reuse detection still holds for everything else: a reuse after the window, or of a token
whose successor has already been used, revokes the family (every branch of it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from quart import Quart, current_app, g, has_app_context, request
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.queryset import QuerySet

from slyker.errors import APIError
from slyker.models.accounts import RefreshToken, User
from slyker.services.errors import Unavailable
from slyker.settings import Settings, current_settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
_password_hasher = PasswordHasher()
# Verifying against a dummy hash when the e-mail is unknown keeps login time the same either
# way. It is made on first use, with the hasher of that time: made at import it cost ~0.15 s
# of CPU in every process importing slyker (each worker, each ``python -m slyker check``).
_dummy: tuple[PasswordHasher, str] | None = None

P = ParamSpec("P")
R = TypeVar("R")
ModelT = TypeVar("ModelT", bound=Model)


HASHING_KEY = "slyker.password_hashing"


class PasswordHashing:
    """Argon2 off the event loop: a pool of ``threads`` threads (argon2-cffi releases the
    GIL), with at most ``max_waiting`` hashes queued behind them. Hashing on the loop cost
    every other request of the worker up to half a second during ten concurrent logins; an
    unbounded queue would only move that wait into the queue, so past the bound the caller
    gets :class:`Unavailable` (503 with Retry-After)."""

    def __init__(self, threads: int, max_waiting: int) -> None:
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="argon2")
        self.capacity = threads + max_waiting
        self._lock = threading.Lock()
        self.in_use = 0  # running or queued; freed when the hash is done, not when its
        # caller stops waiting (a cancelled request's hash still occupies a thread)

    async def run(self, work: Callable[..., R], *args: Any) -> R:
        with self._lock:
            if self.in_use >= self.capacity:
                raise Unavailable(
                    "Too many sign-ins at once. Please try again in a moment.", retry_after=2
                )
            self.in_use += 1
        try:
            future = self.executor.submit(work, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self.in_use -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def init_password_hashing(app: Quart, settings: Settings) -> None:
    hashing = PasswordHashing(settings.password_hash_threads, settings.password_hash_max_waiting)
    app.extensions[HASHING_KEY] = hashing

    @app.after_serving
    async def stop_hashing() -> None:
        hashing.shutdown()


async def _off_the_loop(work: Callable[..., R], *args: Any) -> R:
    hashing = current_app.extensions.get(HASHING_KEY) if has_app_context() else None
    if hashing is None:  # a CLI command or a script without the app: nothing else waits
        return await asyncio.to_thread(work, *args)
    return await hashing.run(work, *args)  # type: ignore[no-any-return]


def _hash(password: str) -> str:
    return _password_hasher.hash(password)


def _dummy_hash() -> str:
    global _dummy
    if _dummy is None or _dummy[0] is not _password_hasher:
        # Two threads may both make one here: either hash does.
        _dummy = (_password_hasher, _password_hasher.hash(secrets.token_urlsafe(16)))
    return _dummy[1]


def _verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (None: the dummy hash, never a match)."""
    try:
        if password_hash is None:
            _password_hasher.verify(_dummy_hash(), password)
            return False
        return bool(_password_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await _off_the_loop(_hash, password)


async def verify_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s; with no user, the same work against a dummy hash
    (the answer's timing does not tell whether the e-mail has an account)."""
    return await _off_the_loop(_verify, user.password_hash if user else None, password)


def token_error(message: str = "Token is invalid or expired.") -> APIError:
    return APIError(401, message, code="token_not_valid", headers={"WWW-Authenticate": "Bearer"})


def _encode(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, current_settings().secret_key, algorithm=ALGORITHM)


def decode_token(token: str, token_type: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            current_settings().secret_key,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "jti", "type"]},
        )
    except jwt.PyJWTError:
        raise token_error() from None
    subject = claims["sub"]
    valid_subject = isinstance(subject, str) and subject.isascii() and subject.isdigit()
    if claims["type"] != token_type or not valid_subject or not 0 < int(subject) < 2**31:
        raise token_error()
    return claims


async def issue_tokens(
    user: User, family: str | None = None, parent: str | None = None
) -> dict[str, str]:
    """A new access token and a new recorded refresh token (in ``family``, issued from the
    refresh token ``parent``, when rotating)."""
    settings = current_settings()
    now = datetime.now(UTC)
    refresh_jti = uuid.uuid4().hex
    await RefreshToken.create(
        jti=refresh_jti,
        family=family or uuid.uuid4().hex,
        parent_jti=parent,
        user=user,
        expires_at=now + settings.accounts.jwt_refresh_token_lifetime,
    )
    common = {"sub": str(user.id), "iat": now}
    access = {
        **common,
        "type": ACCESS,
        "jti": uuid.uuid4().hex,
        "role": str(user.user_type),
        "exp": now + settings.accounts.jwt_access_token_lifetime,
    }
    refresh = {
        **common,
        "type": REFRESH,
        "jti": refresh_jti,
        "exp": now + settings.accounts.jwt_refresh_token_lifetime,
    }
    return {"access": _encode(access), "refresh": _encode(refresh)}


async def rotate_refresh_token(token: str) -> dict[str, str]:
    claims = decode_token(token, REFRESH)
    now = datetime.now(UTC)
    record = await RefreshToken.get_or_none(jti=claims["jti"]).select_related("user")
    if record is None:
        raise token_error()
    # Revocation is family-wide (or user-wide); a token inserted into the family after the
    # revoking UPDATE (a concurrent rotation) is caught here.
    if await RefreshToken.filter(family=record.family, revoked_at__isnull=False).exists():
        raise token_error("Token has been used or revoked.")
    # Only one concurrent refresh may win: the update is conditional on "unused".
    won = await RefreshToken.filter(
        jti=record.jti, used_at__isnull=True, revoked_at__isnull=True
    ).update(used_at=now)
    if won:
        if not record.user.is_active:
            raise token_error("User is inactive.")
        return await issue_tokens(record.user, family=record.family, parent=record.jti)
    if await _within_reuse_grace(record.jti, now):
        if not record.user.is_active:
            raise token_error("User is inactive.")
        log.info("Refresh token reused within the grace window by user %s", record.user.id)
        return await issue_tokens(record.user, family=record.family, parent=record.jti)
    await revoke_family(record.family, now)
    log.warning("Refresh token reused for user %s: its family is revoked", record.user.id)
    raise token_error("Token has been used or revoked.")


async def _within_reuse_grace(jti: str, now: datetime) -> bool:
    """A used (not revoked) token, rotated at most the grace window ago, none of whose
    successors has been used yet."""
    grace = current_settings().accounts.jwt_refresh_reuse_grace
    if not grace:
        return False
    current = await RefreshToken.get_or_none(jti=jti)
    if current is None or current.revoked_at is not None or current.used_at is None:
        return False
    if now - current.used_at > grace:
        return False
    return not await RefreshToken.filter(parent_jti=jti, used_at__isnull=False).exists()


async def revoke_family(family: str, now: datetime | None = None) -> None:
    await RefreshToken.filter(family=family, revoked_at__isnull=True).update(
        revoked_at=now or datetime.now(UTC)
    )


async def revoke_refresh_token(token: str) -> None:
    """Logout: the token's whole family, which is this login in every tab it reached."""
    claims = decode_token(token, REFRESH)
    record = await RefreshToken.get_or_none(jti=claims["jti"])
    if record is not None:
        await revoke_family(record.family)


async def revoke_user_refresh_tokens(
    user_id: int, connection: BaseDBAsyncClient | None = None
) -> int:
    """Every refresh token of a user (after a password reset); how many were live."""
    return await (
        RefreshToken.filter(user_id=user_id, revoked_at__isnull=True)
        .using_db(connection)
        .update(revoked_at=datetime.now(UTC))
    )


_IGNORES_BEARER = "_slyker_ignores_bearer"


def ignores_bearer_header(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """For the token endpoints, which authenticate by their body: the storefront keeps
    sending its (possibly expired) access token in the header when it logs in or refreshes."""
    setattr(func, _IGNORES_BEARER, True)
    return func


async def load_identity() -> None:
    """``before_request``: a present Authorization header must be a valid Bearer token,
    on public endpoints too (the storefront answers a 401 by refreshing its token)."""
    g.user = None
    header = request.headers.get("Authorization")
    if header is None:
        return  # most requests: no view look-up (issue 12, fixed cost per request)
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, _IGNORES_BEARER, False):
        return
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise token_error("Authorization header must be 'Bearer <access token>'.")
    claims = decode_token(token.strip(), ACCESS)
    user = await User.get_or_none(id=int(claims["sub"]), is_active=True)
    if user is None:
        raise token_error("User not found or inactive.")
    if issued_before_password_change(claims, user):
        raise token_error("Token was issued before the password was changed.")
    g.user = user


def issued_before_password_change(claims: dict[str, Any], user: User) -> bool:
    """``iat`` is whole seconds: a token from the same second as the change still counts
    as after it (the new password's first login may well be in that second)."""
    changed = user.password_changed_at
    return changed is not None and int(claims["iat"]) < int(changed.timestamp())


def current_user() -> User | None:
    return g.get("user")


def authenticated_user() -> User:
    user = current_user()
    if user is None:
        raise APIError(
            401,
            "Authentication credentials were not provided.",
            code="not_authenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


def login_required(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        authenticated_user()
        return await func(*args, **kwargs)

    return wrapper


def staff_required(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not authenticated_user().is_staff:
            raise APIError(403, "Staff only.", code="permission_denied")
        return await func(*args, **kwargs)

    return wrapper


def visible_to_caller(model: type[ModelT], owner_field: str = "user_id") -> QuerySet[ModelT]:
    """The rows of ``model`` the signed-in caller may see: every row for staff, else only
    the caller's own (``owner_field`` holds the owning user's id, through a relation if
    need be: ``invoice__user_id``). Someone else's row is simply absent, so a view that
    looks one up by id answers 404, not 403: an id that is not yours does not tell whether
    it exists. 401 without a signed-in caller."""
    user = authenticated_user()
    rows = model.all()
    return rows if user.is_staff else rows.filter(**{owner_field: user.id})
