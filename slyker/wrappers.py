"""slyker's request class: JSON bodies must say they are JSON, and are parsed strictly."""

from __future__ import annotations

import contextlib
from typing import Any

from quart import Request
from werkzeug.exceptions import RequestEntityTooLarge

from slyker.errors import APIError
from slyker.validation import BadJSON, parse_json_body, view_checks_own_text


class APIRequest(Request):
    @property
    def blueprints(self) -> list[str]:
        """Quart's answer, computed once per matched rule: Quart asks for it three times per
        request (before, after and teardown hooks) and each time re-derives it from the
        endpoint (issue 12). Quart's own list is shared too (``_split_blueprint_path`` is
        cached), so callers already treat it as read-only."""
        rule = self.url_rule
        cached = self.__dict__.get("_slyker_blueprints")
        if cached is None or cached[0] is not rule:
            cached = self.__dict__["_slyker_blueprints"] = (rule, super().blueprints)
        return cached[1]  # type: ignore[no-any-return]

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """As Quart's, but a body that is not declared ``application/json`` is a 415, and
        the body is parsed by :func:`slyker.validation.parse_json_body`: not UTF-8, nested
        too deep, not JSON or with text the database cannot store (NUL, lone surrogates) is
        a 400 that says which, never a 500. Every JSON body (quart-schema's
        ``validate_request`` included) is read here.

        So no cross-site "simple" request (form or text/plain, sent without a preflight)
        can ever reach an endpoint that takes JSON.
        """
        if not (force or silent or self.is_json):
            await self.discard_body()
            raise APIError(415, "Content-Type must be application/json.")
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        if not (force or self.is_json):
            return None
        data = await self.get_data(cache=cache, as_text=False)
        try:
            result = parse_json_body(data, check_text=not view_checks_own_text())
        except (BadJSON, APIError) as error:
            if not silent:
                raise self._json_error(error) from None
            result = None
        if cache:
            self._cached_json[silent] = result
        return result

    @staticmethod
    def _json_error(error: BadJSON | APIError) -> APIError:
        if isinstance(error, APIError):
            return error
        return APIError(400, str(error), code="invalid_json")

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
