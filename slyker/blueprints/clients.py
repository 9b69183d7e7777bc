"""Staff: the clients (a client profile per user), for the staff pages' client pickers and
lists (``/api/clients/clients/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, request
from quart_schema import validate_response
from tortoise.expressions import Q

from slyker.auth import staff_required
from slyker.errors import APIError
from slyker.models.accounts import ClientProfile
from slyker.pagination import paginate

blueprint = Blueprint("clients", __name__, url_prefix="/api/clients/clients")
SEARCH_MAX_LENGTH = 100


class ClientUser(BaseModel):
    id: int
    email: str
    first_name: str
    last_name: str


class Client(BaseModel):
    id: int
    company_name: str
    user: ClientUser
    phone: str
    company_website: str
    address: str
    city: str
    country: str
    created_at: datetime


class ClientPage(BaseModel):
    count: int
    next: str | None
    previous: str | None
    results: list[Client]


def client_json(profile: ClientProfile) -> dict[str, Any]:
    """``profile`` with its user fetched (``select_related``): no query per row."""
    user = profile.user
    full_name = f"{user.first_name} {user.last_name}".strip()
    return {
        "id": profile.id,
        # The pages print company_name: the company, else the person, else the e-mail.
        "company_name": profile.company or full_name or user.email,
        "user": {
            "id": user.id,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
        },
        "phone": profile.phone,
        "company_website": profile.company_website,
        "address": profile.address,
        "city": profile.city,
        "country": profile.country,
        "created_at": profile.created_at,
    }


@blueprint.get("/")
@staff_required
@validate_response(ClientPage)
async def list_clients() -> dict[str, Any]:
    """Staff: every client, newest first; ``?search=`` matches the e-mail, names or company."""
    queryset = ClientProfile.all().select_related("user").order_by("-id")
    search = (request.args.get("search") or "").strip()
    if search:
        if len(search) > SEARCH_MAX_LENGTH:  # (NUL never gets here: refuse_unstorable_query)
            raise APIError(400, f"search: at most {SEARCH_MAX_LENGTH} characters.")
        queryset = queryset.filter(
            Q(user__email__icontains=search)
            | Q(user__first_name__icontains=search)
            | Q(user__last_name__icontains=search)
            | Q(company__icontains=search)
        )
    return await paginate(queryset, client_json)


@blueprint.get("/<int:client_id>/")
@staff_required
@validate_response(Client)
async def get_client(client_id: int) -> dict[str, Any]:
    """Staff: one client (404 if there is none with this id)."""
    profile = await ClientProfile.get_or_none(id=client_id).select_related("user")
    if profile is None:
        raise APIError(404, "Client not found.")
    return client_json(profile)
