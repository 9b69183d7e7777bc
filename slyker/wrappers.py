"""slyker's request class: JSON bodies must say they are JSON."""

from __future__ import annotations

import contextlib
from typing import Any

from quart import Request
from werkzeug.exceptions import RequestEntityTooLarge

from slyker.errors import APIError


class APIRequest(Request):
    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """As Quart's, but a body that is not declared ``application/json`` is a 415.

        So no cross-site "simple" request (form or text/plain, sent without a preflight)
        can ever reach an endpoint that takes JSON.
        """
        if not (force or silent or self.is_json):
            await self.discard_body()
            raise APIError(415, "Content-Type must be application/json.")
        return await super().get_json(force=force, silent=silent, cache=cache)

    async def discard_body(self) -> None:
        """Read (at most MAX_CONTENT_LENGTH of) a body before refusing the request.

        Hypercorn closes a keep-alive connection, without ``Connection: close``, when the
        response is complete before the request body was read; the browser's next request
        on that connection then fails.
        """
        with contextlib.suppress(RequestEntityTooLarge):
            await self.get_data(cache=False)

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise APIError(400, "Request body is not valid JSON.", code="invalid_json")
