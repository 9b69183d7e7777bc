"""The client as other resources show it: ``{id, user_id, company_name, email, user}``."""

from __future__ import annotations

from typing import Any

from slyker.models.accounts import ClientProfile, User


async def client_summary(user_id: int) -> dict[str, Any]:
    """The staff pages print ``client.company_name`` (and ``client.user.email``): the
    company, else the person's name, else the e-mail. ``id`` is the client profile's id
    (what the staff invoice form sends as ``client``)."""
    user = await User.get(id=user_id)
    profile = await ClientProfile.get_or_none(user_id=user_id)
    full_name = f"{user.first_name} {user.last_name}".strip()
    return {
        "id": profile.id if profile else None,
        "user_id": user.id,
        "company_name": (profile.company if profile else "") or full_name or user.email,
        "email": user.email,
        "user": {"id": user.id, "email": user.email},
    }
