"""Domains clients own, registered once when an invoice is paid
(:mod:`slyker.services.provisioning`). Clients see their own; staff see all."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request
from quart_schema import document_querystring

from slyker.auth import authenticated_user, login_required
from slyker.errors import APIError, invalid
from slyker.models.services import DomainRegistration, DomainStatus
from slyker.pagination import PageQuery, paginate
from slyker.services.clients import client_summary

blueprint = Blueprint(
    "domain_registrations", __name__, url_prefix="/api/services/domain-registrations"
)


async def domain_registration_json(registration: DomainRegistration) -> dict[str, Any]:
    nameservers = list(registration.nameservers or [])
    return {
        "id": registration.id,
        "user": registration.user_id,
        "client": await client_summary(registration.user_id),
        "domain_name": registration.domain_name,
        "domain_product": registration.domain_product_id,
        "action": registration.action,
        "years": registration.years,
        "status": str(registration.status),
        "registration_date": registration.registration_date.isoformat(),
        "expiry_date": registration.expiry_date.isoformat(),
        "whois_privacy": registration.whois_privacy,
        "auto_renew": registration.auto_renew,
        "nameservers": nameservers,
        "nameserver1": nameservers[0] if nameservers else None,
        "nameserver2": nameservers[1] if len(nameservers) > 1 else None,
        "notes": registration.notes,
        "invoice": registration.invoice_id,
        "created_at": registration.created_at.isoformat(),
        "updated_at": registration.updated_at.isoformat(),
    }


def _visible() -> Any:
    user = authenticated_user()
    queryset = DomainRegistration.all()
    return queryset if user.is_staff else queryset.filter(user_id=user.id)


def _status_filter(queryset: Any) -> Any:
    status = request.args.get("status")
    if not status:
        return queryset
    if status not in {s.value for s in DomainStatus}:
        raise invalid("status", f"must be one of {', '.join(s.value for s in DomainStatus)}.")
    return queryset.filter(status=status)


class DomainRegistrationQuery(PageQuery):
    status: DomainStatus | None = None


@blueprint.get("/")
@document_querystring(DomainRegistrationQuery)
@login_required
async def list_domain_registrations() -> dict[str, Any]:
    """The caller's domains (staff: everyone's), newest first; ``?status=``."""
    queryset = _status_filter(_visible())
    return await paginate(queryset.order_by("-id"), domain_registration_json)


@blueprint.get("/<int:registration_id>/")
@login_required
async def get_domain_registration(registration_id: int) -> dict[str, Any]:
    """One domain registration (404 if it is not the caller's)."""
    registration = await _visible().get_or_none(id=registration_id)
    if registration is None:
        raise APIError(404, "Domain registration not found.")
    return await domain_registration_json(registration)
