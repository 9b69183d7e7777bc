"""The app factory: the one place the app is assembled."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from quart import Quart
from quart_schema import QuartSchema

from slyker import auth, csrf, database, lifecycle
from slyker.areas import ALL_AREAS, chosen_areas, install_areas
from slyker.blueprints import health
from slyker.cors import CORSMiddleware, init_cors
from slyker.errors import register_error_handlers
from slyker.fixed_cost import remove_fixed_costs
from slyker.hosts import AllowedHostsMiddleware, announce_allowed_hosts
from slyker.proxy import H2CUpgradeGuard, TrustedProxyMiddleware
from slyker.ratelimit import RateLimiter, make_store
from slyker.redis_client import init_redis
from slyker.request_id import RequestIDMiddleware, configure_logging
from slyker.settings import EXTENSION_KEY as SETTINGS_KEY
from slyker.settings import load_settings
from slyker.validation import BoundedOpenAPIProvider, RowIdConverter, refuse_unstorable_query
from slyker.wrappers import APIRequest, WebsocketConnection


def create_app(
    overrides: Mapping[str, Any] | None = None, areas: Iterable[str] = ALL_AREAS
) -> Quart:
    """Build the slyker app: the core (settings → database → CORS → error handlers → health),
    then the chosen ``areas`` (:mod:`slyker.areas`; all by default, an unknown name is a
    ValueError), then the ASGI layers around it all.

    ``overrides`` take the same names as the environment variables (``{"DEBUG": True}``)
    and win over them; tests use it instead of touching ``os.environ``.
    """
    areas = chosen_areas(areas)  # refused before anything is built or logged
    settings = load_settings(overrides=overrides)
    configure_logging(settings.log_level)
    announce_allowed_hosts(settings.allowed_hosts)
    if settings.secret_key_generated:
        logging.getLogger("slyker").warning(
            "SECRET_KEY is not set: signing with a random key made for this process (DEBUG); "
            "tokens, cart tokens and reset links stop working when it restarts. Set "
            "SECRET_KEY in .env (./dev run writes one)"
        )

    app = Quart("slyker", static_folder=None)
    app.request_class = APIRequest
    app.asgi_websocket_class = WebsocketConnection  # idle sockets: no asyncio.Queue each
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
    auth.init_password_hashing(app, settings)
    init_redis(app, settings.redis_url)

    cors_config = init_cors(app, settings)
    app.before_request(csrf.check_request_origin)
    app.before_request(auth.load_identity)
    app.before_request(refuse_unstorable_query)
    # Shared through Redis with REDIS_URL (per process while it is away), atomic either way.
    RateLimiter(make_store(settings.redis_url)).init_app(app)
    register_error_handlers(app)
    docs = settings.api_docs  # off by default without DEBUG: the pages load CDN scripts
    QuartSchema(
        app,
        info={"title": "slyker API", "version": "1.0"},
        openapi_provider_class=BoundedOpenAPIProvider,
        openapi_path="/openapi.json" if docs else None,
        redoc_ui_path="/redocs" if docs else None,
        scalar_ui_path="/scalar" if docs else None,
        swagger_ui_path="/docs" if docs else None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # after QuartSchema's provider

    app.register_blueprint(health.blueprint)
    install_areas(app, areas)  # each area's blueprints, lifecycle and CLI commands
    lifecycle.init_draining(app)  # SIGTERM: /ready/ 503, chat sockets closed with 1001

    remove_fixed_costs(app)  # per-request work of Quart and quart-schema done once
    # Outermost last: request id and nosniff (one pass over the response headers), then CORS
    # (preflights, the origin decision once per request, the last net), the Host check (before
    # routing; its 400 gets CORS headers), then the database.
    app.asgi_app = database.DatabaseContextMiddleware(app.asgi_app, app)  # type: ignore[method-assign]
    app.asgi_app = AllowedHostsMiddleware(app.asgi_app, settings.allowed_hosts)  # type: ignore[method-assign]
    app.asgi_app = CORSMiddleware(app.asgi_app, cors_config)  # type: ignore[method-assign]
    app.asgi_app = RequestIDMiddleware(app.asgi_app)  # type: ignore[method-assign]
    if settings.trusted_proxy_hops:
        # Behind nginx: the client address, scheme (ws/wss for a WebSocket) and host come
        # from the proxy's X-Forwarded-* headers (rate limits key on that address); only as
        # many hops as are trusted.
        app.asgi_app = TrustedProxyMiddleware(  # type: ignore[method-assign]
            app.asgi_app, trusted_hops=settings.trusted_proxy_hops
        )
        # Outermost: it needs the connection's own peer address, not the forwarded one.
        app.asgi_app = H2CUpgradeGuard(app.asgi_app)  # type: ignore[method-assign]
    return app
