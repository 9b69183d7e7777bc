"""slyker's request class: JSON bodies must say they are JSON."""

from __future__ import annotations

from typing import Any

from quart import Request

from slyker.errors import APIError


class APIRequest(Request):
    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """As Quart's, but a body that is not declared ``application/json`` is a 415.

        So no cross-site "simple" request (form or text/plain, sent without a preflight)
        can ever reach an endpoint that takes JSON.
        """
        if not (force or silent or self.is_json):
            raise APIError(415, "Content-Type must be application/json.")
        return await super().get_json(force=force, silent=silent, cache=cache)

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise APIError(400, "Request body is not valid JSON.", code="invalid_json")
