"""Staff: the clients (a client profile per user), for the staff pages' client pickers and
lists (``/api/clients/clients/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_response
from tortoise.expressions import Q

from slyker.auth import staff_required
from slyker.contracts import Page
from slyker.errors import APIError
from slyker.models.accounts import ClientProfile
from slyker.pagination import PageQuery, first_value, paginate

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

    @classmethod
    def from_row(cls, profile: ClientProfile) -> Client:
        """``profile`` with its user fetched (``select_related``): no query per row."""
        user = profile.user
        full_name = f"{user.first_name} {user.last_name}".strip()
        return cls(
            id=profile.id,
            # The pages print company_name: the company, else the person, else the e-mail.
            company_name=profile.company or full_name or user.email,
            user=ClientUser(
                id=user.id, email=user.email, first_name=user.first_name, last_name=user.last_name
            ),
            phone=profile.phone,
            company_website=profile.company_website,
            address=profile.address,
            city=profile.city,
            country=profile.country,
            created_at=profile.created_at,
        )


def _search_text(raw: Any) -> str:
    search = (first_value(raw) or "").strip()
    if len(search) > SEARCH_MAX_LENGTH:  # (NUL never gets here: refuse_unstorable_query)
        raise APIError(400, f"search: at most {SEARCH_MAX_LENGTH} characters.")
    return search


class ClientQuery(PageQuery):
    search: Annotated[str, BeforeValidator(_search_text)] = Field(
        default="",
        max_length=SEARCH_MAX_LENGTH,
        description="matches the e-mail, first or last name, or company (case-insensitive)",
    )


@blueprint.get("/")
@staff_required
@validate_querystring(ClientQuery)
@validate_response(Page[Client])
async def list_clients(query_args: ClientQuery) -> dict[str, Any]:
    """Staff: every client, newest first; ``?search=`` matches the e-mail, names or company."""
    queryset = ClientProfile.all().select_related("user").order_by("-id")
    search = query_args.search
    if search:
        queryset = queryset.filter(
            Q(user__email__icontains=search)
            | Q(user__first_name__icontains=search)
            | Q(user__last_name__icontains=search)
            | Q(company__icontains=search)
        )
    return await paginate(queryset, Client.from_row, query_args)


@blueprint.get("/<int:client_id>/")
@staff_required
@validate_response(Client)
async def get_client(client_id: int) -> Client:
    """Staff: one client (404 if there is none with this id)."""
    profile = await ClientProfile.get_or_none(id=client_id).select_related("user")
    if profile is None:
        raise APIError(404, "Client not found.")
    return Client.from_row(profile)
