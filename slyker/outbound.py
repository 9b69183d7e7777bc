"""HTTP clients to third parties (Paynow, domain registries) owned by the app: one
``httpx.AsyncClient`` each, made on first use and closed when serving stops, so that
connections are pooled across requests instead of opened (and TLS-negotiated) per call."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
from quart import Quart, current_app

log = logging.getLogger(__name__)


class OwnedHTTPClient:
    """One app's client to one kind of third party; ``factory`` makes it with its timeouts
    and connection limits. After :meth:`aclose` the next use makes a fresh one (an app
    served again, as tests do)."""

    def __init__(self, name: str, factory: Callable[[], httpx.AsyncClient]) -> None:
        self.name = name
        self._factory = factory
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = self._factory()
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            await client.aclose()
            log.debug("HTTP client to %s closed", self.name)


def own_http_client(app: Quart, key: str, factory: Callable[[], httpx.AsyncClient]) -> None:
    """Give ``app`` the client ``key`` (``http_client(key)``), closed after serving."""
    owned = OwnedHTTPClient(key, factory)
    app.extensions[key] = owned
    app.after_serving(owned.aclose)


def http_client(key: str) -> httpx.AsyncClient:
    """The current app's client ``key`` (see :func:`own_http_client`)."""
    owned: OwnedHTTPClient = current_app.extensions[key]
    return owned.client
