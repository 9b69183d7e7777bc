"""The app factory: the one place the app is assembled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Quart
from quart_rate_limiter import RateLimiter
from quart_rate_limiter.redis_store import RedisStore
from quart_schema import QuartSchema

from slyker import auth, cli, csrf, database
from slyker.blueprints import accounts, chat, health, subscriptions
from slyker.blueprints.billing import carts, catalog, domains, invoices, paynow, promotions
from slyker.chat.service import BROKER_KEY, make_broker
from slyker.cors import CORSMiddleware, init_cors
from slyker.errors import register_error_handlers
from slyker.proxy import TrustedProxyMiddleware
from slyker.redis_client import init_redis
from slyker.request_id import RequestIDMiddleware, configure_logging
from slyker.services.mail import announce_mail_mode
from slyker.settings import EXTENSION_KEY as SETTINGS_KEY
from slyker.settings import load_settings
from slyker.validation import BoundedOpenAPIProvider, RowIdConverter, refuse_unstorable_query
from slyker.wrappers import APIRequest


def create_app(overrides: Mapping[str, Any] | None = None) -> Quart:
    """Build the slyker app: settings → database → CORS → error handlers → blueprints.

    ``overrides`` take the same names as the environment variables (``{"DEBUG": True}``)
    and win over them; tests use it instead of touching ``os.environ``.
    """
    settings = load_settings(overrides=overrides)
    configure_logging(settings.log_level)
    announce_mail_mode(settings)

    app = Quart("slyker", static_folder=None)
    app.request_class = APIRequest
    app.url_map.converters["int"] = RowIdConverter  # before any route is added
    app.config.update(
        DEBUG=settings.debug,
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
    )
    for name in ("TESTING", "PROPAGATE_EXCEPTIONS"):
        if overrides and name in overrides:
            app.config[name] = overrides[name]
    app.extensions[SETTINGS_KEY] = settings

    database.init_database(app, settings)
    init_redis(app, settings.redis_url)
    broker = make_broker(settings.redis_url)
    app.extensions[BROKER_KEY] = broker
    app.before_serving(broker.start)
    app.after_serving(broker.stop)

    cors_config = init_cors(app, settings)
    app.before_request(csrf.check_request_origin)
    app.before_request(auth.load_identity)
    app.before_request(refuse_unstorable_query)
    RateLimiter(app, store=RedisStore(settings.redis_url) if settings.redis_url else None)
    register_error_handlers(app)
    QuartSchema(
        app,
        info={"title": "slyker API", "version": "1.0"},
        openapi_provider_class=BoundedOpenAPIProvider,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # after QuartSchema's provider

    for blueprint in (
        health.blueprint,
        accounts.blueprint,
        catalog.blueprint,
        domains.blueprint,
        carts.blueprint,
        promotions.blueprint,
        invoices.invoices,
        invoices.payments,
        paynow.blueprint,
        subscriptions.subscriptions,
        subscriptions.domain_registrations,
        chat.blueprint,
    ):
        app.register_blueprint(blueprint)
    chat.init_chat_shutdown(app)
    cli.register_commands(app, settings)

    # Outermost last: request id, then CORS (preflights and the last net), then the database.
    app.asgi_app = database.DatabaseContextMiddleware(app.asgi_app, app)  # type: ignore[method-assign]
    app.asgi_app = CORSMiddleware(app.asgi_app, cors_config)  # type: ignore[method-assign]
    app.asgi_app = RequestIDMiddleware(app.asgi_app)  # type: ignore[method-assign]
    if settings.trusted_proxy_hops:
        # Behind nginx: the client address, scheme (ws/wss for a WebSocket) and host come
        # from the proxy's X-Forwarded-* headers (rate limits key on that address); only as
        # many hops as are trusted.
        app.asgi_app = TrustedProxyMiddleware(  # type: ignore[method-assign]
            app.asgi_app, trusted_hops=settings.trusted_proxy_hops
        )
    return app
