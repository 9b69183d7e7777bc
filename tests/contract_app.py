"""The real app plus test-only routes that produce every outcome the CORS contract covers.

Used by the in-process contract matrix and served by a real Hypercorn in the live tests
(``hypercorn 'tests.contract_app:create_contract_app()'``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, Quart, abort, request
from quart_schema import validate_request
from werkzeug.exceptions import TooManyRequests

from slyker import create_app
from slyker.areas import ALL_AREAS

SECRET_MARKER = "SECRET-/etc/slyker.env-SELECT password FROM users"
MAX_CONTENT_LENGTH = 1024
ABORT_STATUSES = (401, 403, 408, 409, 422, 429, 503)
CRASH_IN_BEFORE_REQUEST = "/_probe/crash-in-before-request/"
CRASH_IN_AFTER_REQUEST = "/_probe/crash-in-after-request/"

ALLOWED_ORIGIN = "https://slykertech.co.zw"
REGEX_ORIGIN = "https://pr-42.preview.slykertech.co.zw"
CONTRACT_SETTINGS: dict[str, Any] = {
    "SECRET_KEY": "contract-test-secret-key-0123456789abcdef",
    "CORS_ALLOWED_ORIGINS": f"{ALLOWED_ORIGIN}, https://www.slykertech.co.zw, http://localhost:3000",
    "CORS_ALLOWED_ORIGIN_REGEXES": r"https://pr-[0-9]+\.preview\.slykertech\.co\.zw",
    "CORS_EXPOSE_HEADERS": "X-Cart-Token",
    "ALLOWED_HOSTS": "api.slykertech.co.zw,localhost,127.0.0.1",
    "MAX_CONTENT_LENGTH": MAX_CONTENT_LENGTH,
}


class ProbeItem(BaseModel):
    name: str
    quantity: int = Field(ge=1)


@dataclass
class Recorder:
    """Counts the writes that reached a view, to prove a refused request changed nothing."""

    writes: int = 0


def probe_blueprint(recorder: Recorder) -> Blueprint:
    probe = Blueprint("probe", __name__, url_prefix="/_probe")

    @probe.get("/ok/")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @probe.get("/pid/")
    async def pid() -> dict[str, int]:
        """Which worker process answered (tests/test_serve_live.py)."""
        return {"pid": os.getpid()}

    @probe.get("/slow/")
    async def slow() -> dict[str, Any]:
        """An in-flight request for the shutdown tests: answers after ``?seconds=`` (at most
        30), with the worker's pid."""
        seconds = min(float(request.args.get("seconds", "1")), 30.0)
        await asyncio.sleep(seconds)
        return {"pid": os.getpid(), "slept": seconds}

    @probe.post("/items/")
    @validate_request(ProbeItem)
    async def create_item(data: ProbeItem) -> tuple[dict[str, Any], int]:
        recorder.writes += 1
        return {"name": data.name, "quantity": data.quantity}, 201

    @probe.post("/raw-json/")
    async def raw_json() -> dict[str, Any]:
        received = await request.get_json()
        recorder.writes += 1
        return {"received": received}

    for status in ABORT_STATUSES:

        async def aborts(status: int = status) -> None:
            if status == 429:
                raise TooManyRequests(retry_after=7)
            abort(status)

        probe.add_url_rule(f"/status/{status}/", f"status_{status}", aborts)

    @probe.get("/crash/")
    async def crash() -> None:
        raise RuntimeError(SECRET_MARKER)

    @probe.get("/crash-in-before-request/")
    @probe.get("/crash-in-after-request/")
    async def crash_in_hook() -> dict[str, bool]:
        return {"reached": True}

    @probe.before_app_request
    async def crash_before() -> None:
        if request.path == CRASH_IN_BEFORE_REQUEST:
            raise RuntimeError(SECRET_MARKER)

    @probe.after_app_request
    async def crash_after(response: Any) -> Any:
        if request.path == CRASH_IN_AFTER_REQUEST:
            raise RuntimeError(SECRET_MARKER)
        return response

    return probe


def create_contract_app(
    overrides: dict[str, Any] | None = None, areas: Iterable[str] = ALL_AREAS
) -> Quart:
    """The app of ``areas`` (all by default; tests/test_areas.py: one each) plus the probes."""
    app = create_app({**CONTRACT_SETTINGS, **(overrides or {})}, areas=areas)
    recorder = Recorder()
    app.extensions["probe.recorder"] = recorder
    app.register_blueprint(probe_blueprint(recorder))
    return app
