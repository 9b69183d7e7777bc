"""Hosting subscriptions clients own, made once when an invoice is paid
(:mod:`slyker.services.provisioning`; domains: :mod:`.domain_registrations`). Clients see
their own; staff see all and may adjust a subscription."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field
from quart import Blueprint, request
from quart_schema import document_querystring, validate_request
from tortoise.models import Model

from slyker.auth import authenticated_user, login_required, staff_required
from slyker.errors import APIError, invalid
from slyker.models.billing import BillingCycle
from slyker.models.services import (
    DomainStatus,
    Subscription,
    SubscriptionStatus,
)
from slyker.money import as_string, cents
from slyker.pagination import PageQuery, paginate
from slyker.services.clients import client_summary
from slyker.validation import NO_NUL, Day

blueprint = Blueprint("subscriptions", __name__, url_prefix="/api/services/subscriptions")


async def subscription_json(subscription: Subscription) -> dict[str, Any]:
    price = as_string(subscription.price)
    return {
        "id": subscription.id,
        "user": subscription.user_id,
        "client": await client_summary(subscription.user_id),
        # The client dashboard prints service_name; the staff pages service.name.
        "service": {
            "id": subscription.hosting_product_id,
            "name": subscription.service_name,
            "category": "hosting",
            "hosting_type": subscription.hosting_type,
        },
        "service_name": subscription.service_name,
        "hosting_product": subscription.hosting_product_id,
        "status": str(subscription.status),
        "billing_cycle": subscription.billing_cycle,
        "price": price,
        "amount": price,
        "start_date": subscription.start_date.isoformat(),
        "next_due_date": subscription.next_due_date.isoformat(),
        "next_billing_date": subscription.next_due_date.isoformat(),
        "domain": subscription.domain,
        "region": subscription.region,
        "provisioning_completed": subscription.provisioning_completed,
        "notes": subscription.notes,
        "invoice": subscription.invoice_id,
        "created_at": subscription.created_at.isoformat(),
        "updated_at": subscription.updated_at.isoformat(),
    }


def _visible(model: type[Model]) -> Any:
    user = authenticated_user()
    queryset = model.all()
    return queryset if user.is_staff else queryset.filter(user_id=user.id)


def _status_filter(queryset: Any, statuses: type[SubscriptionStatus | DomainStatus]) -> Any:
    status = request.args.get("status")
    if not status:
        return queryset
    if status not in {s.value for s in statuses}:
        raise invalid("status", f"must be one of {', '.join(s.value for s in statuses)}.")
    return queryset.filter(status=status)


async def _subscription(subscription_id: int) -> Subscription:
    subscription = await _visible(Subscription).get_or_none(id=subscription_id)
    if subscription is None:
        raise APIError(404, "Subscription not found.")
    return subscription  # type: ignore[no-any-return]


class SubscriptionQuery(PageQuery):
    status: SubscriptionStatus | None = None


@blueprint.get("/")
@document_querystring(SubscriptionQuery)
@login_required
async def list_subscriptions() -> dict[str, Any]:
    """The caller's hosting subscriptions (staff: everyone's), newest first; ``?status=``."""
    queryset = _status_filter(_visible(Subscription), SubscriptionStatus)
    return await paginate(queryset.order_by("-id"), subscription_json)


@blueprint.get("/<int:subscription_id>/")
@login_required
async def get_subscription(subscription_id: int) -> dict[str, Any]:
    """One subscription (404 if it is not the caller's)."""
    return await subscription_json(await _subscription(subscription_id))


class SubscriptionChange(BaseModel):
    status: SubscriptionStatus | None = None
    billing_cycle: BillingCycle | None = None
    price: Decimal | None = Field(default=None, ge=0, max_digits=12, decimal_places=2)
    next_due_date: Day | None = None
    provisioning_completed: bool | None = None
    notes: Annotated[str, Field(max_length=10_000), NO_NUL] | None = None


@blueprint.patch("/<int:subscription_id>/")
@staff_required
@validate_request(SubscriptionChange)
async def update_subscription(subscription_id: int, data: SubscriptionChange) -> dict[str, Any]:
    """Staff: change a subscription's status, cycle, price, next due date, provisioning flag
    or notes (only the fields sent; ``null`` is refused)."""
    subscription = await _subscription(subscription_id)
    changes = data.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise invalid(name, "may not be null.")
    if "price" in changes:
        changes["price"] = cents(changes["price"])
    if changes:
        await Subscription.filter(id=subscription.id).update(**changes)
    return await subscription_json(await Subscription.get(id=subscription.id))
