"""Domains clients own, registered once when an invoice is paid
(:mod:`slyker.services.provisioning`). Clients see their own; staff see all."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_querystring, validate_response

from slyker.auth import login_required, visible_to_caller
from slyker.contracts import IsoDate, IsoDateTime, Page
from slyker.errors import APIError
from slyker.models.services import (
    DomainRegistration,
    DomainStatus,
)
from slyker.pagination import PageQuery, paginate_rows
from slyker.services.clients import ClientSummary, client_summaries
from slyker.validation import query_choice

blueprint = Blueprint(
    "domain_registrations", __name__, url_prefix="/api/services/domain-registrations"
)


class DomainRegistrationOut(BaseModel):
    id: int
    user: int
    client: ClientSummary
    domain_name: str
    domain_product: int | None
    action: str
    years: int
    status: str
    registration_date: IsoDate
    expiry_date: IsoDate
    whois_privacy: bool
    auto_renew: bool
    nameservers: list[str]
    nameserver1: str | None
    nameserver2: str | None
    notes: str
    invoice: int | None
    created_at: IsoDateTime
    updated_at: IsoDateTime

    @classmethod
    def from_row(
        cls, registration: DomainRegistration, client: ClientSummary
    ) -> DomainRegistrationOut:
        nameservers = list(registration.nameservers or [])
        return cls(
            id=registration.id,
            user=registration.user_id,  # type: ignore[attr-defined]
            client=client,
            domain_name=registration.domain_name,
            domain_product=registration.domain_product_id,  # type: ignore[attr-defined]
            action=registration.action,
            years=registration.years,
            status=str(registration.status),
            registration_date=registration.registration_date,
            expiry_date=registration.expiry_date,
            whois_privacy=registration.whois_privacy,
            auto_renew=registration.auto_renew,
            nameservers=nameservers,
            nameserver1=nameservers[0] if nameservers else None,
            nameserver2=nameservers[1] if len(nameservers) > 1 else None,
            notes=registration.notes,
            invoice=registration.invoice_id,  # type: ignore[attr-defined]
            created_at=registration.created_at,
            updated_at=registration.updated_at,
        )

    @classmethod
    async def of_rows(cls, registrations: list[DomainRegistration]) -> list[DomainRegistrationOut]:
        """A page of registrations, with their clients fetched at once."""
        clients = await client_summaries(r.user_id for r in registrations)  # type: ignore[attr-defined]
        return [cls.from_row(r, clients[r.user_id]) for r in registrations]  # type: ignore[attr-defined]


class DomainRegistrationQuery(PageQuery):
    status: Annotated[DomainStatus | None, query_choice(DomainStatus)] = None


@blueprint.get("/")
@login_required
@validate_querystring(DomainRegistrationQuery)
@validate_response(Page[DomainRegistrationOut])
async def list_domain_registrations(query_args: DomainRegistrationQuery) -> dict[str, Any]:
    """The caller's domains (staff: everyone's), newest first; ``?status=``."""
    queryset = visible_to_caller(DomainRegistration)
    if query_args.status is not None:
        queryset = queryset.filter(status=query_args.status)
    return await paginate_rows(queryset.order_by("-id"), DomainRegistrationOut.of_rows, query_args)


@blueprint.get("/<int:registration_id>/")
@login_required
@validate_response(DomainRegistrationOut)
async def get_domain_registration(registration_id: int) -> DomainRegistrationOut:
    """One domain registration (404 if it is not the caller's)."""
    registration = await visible_to_caller(DomainRegistration).get_or_none(id=registration_id)
    if registration is None:
        raise APIError(404, "Domain registration not found.")
    return (await DomainRegistrationOut.of_rows([registration]))[0]
