"""The billing area: catalog, domain search, carts, promotions, invoices, payments, Paynow,
and what clients own once paid (subscriptions, domain registrations)."""

from __future__ import annotations

import click
from quart import Quart

from slyker.blueprints import domain_registrations, subscriptions
from slyker.blueprints.billing import (
    carts,
    catalog,
    domains,
    invoices,
    payments,
    paynow,
    promotions,
)
from slyker.cli import run_with_database
from slyker.outbound import own_http_client
from slyker.services import paynow_protocol
from slyker.services import whois as whois_service
from slyker.services.catalog_cache import announce_change
from slyker.services.demo_catalog import load_demo_catalog
from slyker.settings import EXTENSION_KEY as SETTINGS_KEY
from slyker.settings import Settings


def init_app(app: Quart) -> None:
    for blueprint in (
        catalog.blueprint,
        domains.blueprint,
        carts.blueprint,
        promotions.blueprint,
        invoices.blueprint,
        payments.blueprint,
        paynow.blueprint,
        subscriptions.blueprint,
        domain_registrations.blueprint,
    ):
        app.register_blueprint(blueprint)
    settings: Settings = app.extensions[SETTINGS_KEY]
    # One pooled client per third party, closed after serving.
    own_http_client(
        app,
        paynow_protocol.HTTP_CLIENT_KEY,
        lambda: paynow_protocol.new_http_client(settings.billing.paynow),
    )
    own_http_client(
        app, whois_service.HTTP_CLIENT_KEY, lambda: whois_service.new_http_client(settings)
    )
    register_commands(app, settings)


def register_commands(app: Quart, settings: Settings) -> None:
    @app.cli.command("load-demo-catalog")
    def load_demo_catalog_command() -> None:
        """Load demo hosting and domain products and the WELCOME10 coupon into an empty catalog."""

        async def work() -> None:
            loaded = await load_demo_catalog()
            if loaded and settings.redis_url:
                await announce_change(settings.redis_url)  # running workers drop their lists
            click.echo("demo catalog loaded" if loaded else "catalog not empty: nothing loaded")

        run_with_database(settings, work)
