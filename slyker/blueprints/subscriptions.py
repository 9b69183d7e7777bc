"""Hosting subscriptions clients own, made once when an invoice is paid
(:mod:`slyker.services.provisioning`). Clients see their own; staff see all and may adjust one."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from slyker.auth import login_required, staff_required, visible_to_caller
from slyker.contracts import IsoDate, IsoDateTime, Money, Page
from slyker.errors import APIError, invalid
from slyker.models.billing import BillingCycle
from slyker.models.services import (
    Subscription,
    SubscriptionStatus,
)
from slyker.money import cents
from slyker.pagination import PageQuery, paginate_rows
from slyker.services.clients import ClientSummary, client_summaries
from slyker.validation import NO_NUL, Day, query_choice

blueprint = Blueprint("subscriptions", __name__, url_prefix="/api/services/subscriptions")


class SubscriptionService(BaseModel):
    id: int | None
    name: str
    category: str
    hosting_type: str


class SubscriptionOut(BaseModel):
    id: int
    user: int
    client: ClientSummary
    # The client dashboard prints service_name; the staff pages service.name.
    service: SubscriptionService
    service_name: str
    hosting_product: int | None
    status: str
    billing_cycle: str
    price: Money
    amount: Money = Field(description="= price")
    start_date: IsoDate
    next_due_date: IsoDate
    next_billing_date: IsoDate = Field(description="= next_due_date")
    domain: str
    region: str
    provisioning_completed: bool
    notes: str
    invoice: int | None
    created_at: IsoDateTime
    updated_at: IsoDateTime

    @classmethod
    def from_row(cls, subscription: Subscription, client: ClientSummary) -> SubscriptionOut:
        return cls(
            id=subscription.id,
            user=subscription.user_id,  # type: ignore[attr-defined]
            client=client,
            service=SubscriptionService(
                id=subscription.hosting_product_id,  # type: ignore[attr-defined]
                name=subscription.service_name,
                category="hosting",
                hosting_type=subscription.hosting_type,
            ),
            service_name=subscription.service_name,
            hosting_product=subscription.hosting_product_id,  # type: ignore[attr-defined]
            status=str(subscription.status),
            billing_cycle=subscription.billing_cycle,
            price=subscription.price,
            amount=subscription.price,
            start_date=subscription.start_date,
            next_due_date=subscription.next_due_date,
            next_billing_date=subscription.next_due_date,
            domain=subscription.domain,
            region=subscription.region,
            provisioning_completed=subscription.provisioning_completed,
            notes=subscription.notes,
            invoice=subscription.invoice_id,  # type: ignore[attr-defined]
            created_at=subscription.created_at,
            updated_at=subscription.updated_at,
        )

    @classmethod
    async def of_rows(cls, subscriptions: list[Subscription]) -> list[SubscriptionOut]:
        """A page of subscriptions, with their clients fetched at once."""
        clients = await client_summaries(s.user_id for s in subscriptions)  # type: ignore[attr-defined]
        return [cls.from_row(s, clients[s.user_id]) for s in subscriptions]  # type: ignore[attr-defined]

    @classmethod
    async def of(cls, subscription: Subscription) -> SubscriptionOut:
        return (await cls.of_rows([subscription]))[0]


async def _subscription(subscription_id: int) -> Subscription:
    subscription = await visible_to_caller(Subscription).get_or_none(id=subscription_id)
    if subscription is None:
        raise APIError(404, "Subscription not found.")
    return subscription


class SubscriptionQuery(PageQuery):
    status: Annotated[SubscriptionStatus | None, query_choice(SubscriptionStatus)] = None


@blueprint.get("/")
@login_required
@validate_querystring(SubscriptionQuery)
@validate_response(Page[SubscriptionOut])
async def list_subscriptions(query_args: SubscriptionQuery) -> dict[str, Any]:
    """The caller's hosting subscriptions (staff: everyone's), newest first; ``?status=``."""
    queryset = visible_to_caller(Subscription)
    if query_args.status is not None:
        queryset = queryset.filter(status=query_args.status)
    return await paginate_rows(queryset.order_by("-id"), SubscriptionOut.of_rows, query_args)


@blueprint.get("/<int:subscription_id>/")
@login_required
@validate_response(SubscriptionOut)
async def get_subscription(subscription_id: int) -> SubscriptionOut:
    """One subscription (404 if it is not the caller's)."""
    return await SubscriptionOut.of(await _subscription(subscription_id))


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
@validate_response(SubscriptionOut)
async def update_subscription(subscription_id: int, data: SubscriptionChange) -> SubscriptionOut:
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
    return await SubscriptionOut.of(await Subscription.get(id=subscription.id))
