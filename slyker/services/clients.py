"""The client as other resources show it: ``{id, user_id, company_name, email, user}``."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from slyker.models.accounts import ClientProfile, User


class ClientSummaryUser(BaseModel):
    id: int
    email: str


class ClientSummary(BaseModel):
    """The staff pages print ``client.company_name`` (and ``client.user.email``): the
    company, else the person's name, else the e-mail. ``id`` is the client profile's id
    (what the staff invoice form sends as ``client``; null for a user without a profile)."""

    id: int | None
    user_id: int
    company_name: str
    email: str
    user: ClientSummaryUser


def _summary(user: User, profile: ClientProfile | None) -> ClientSummary:
    full_name = f"{user.first_name} {user.last_name}".strip()
    return ClientSummary(
        id=profile.id if profile else None,
        user_id=user.id,
        company_name=(profile.company if profile else "") or full_name or user.email,
        email=user.email,
        user=ClientSummaryUser(id=user.id, email=user.email),
    )


async def client_summaries(user_ids: Iterable[int]) -> dict[int, ClientSummary]:
    """The summaries of these users, by user id: two queries whatever their number (a
    page of invoices or subscriptions asks once, not once per row)."""
    ids = set(user_ids)
    if not ids:
        return {}
    users = await User.filter(id__in=ids)
    profiles = {p.user_id: p for p in await ClientProfile.filter(user_id__in=ids)}  # type: ignore[attr-defined]
    return {user.id: _summary(user, profiles.get(user.id)) for user in users}


async def client_summary(user_id: int) -> ClientSummary:
    return (await client_summaries([user_id]))[user_id]
