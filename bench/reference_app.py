"""The references slyker's ``/health/`` is measured against in the same benchmark run.

``create_reference_app()``: a minimal Quart app with quart-cors allowing the same origin,
returning the same JSON as slyker's ``/health/`` — what Quart + quart-cors cost on their own.
``raw_asgi``: the same answer from a bare ASGI callable — what Hypercorn alone costs.

    hypercorn --bind 127.0.0.1:8001 'bench.reference_app:create_reference_app()'
    hypercorn --bind 127.0.0.1:8002 'bench.reference_app:raw_asgi'
"""

from __future__ import annotations

import json
import os
from typing import Any

import quart_cors
from quart import Quart

# The benchmark sets it to the origin slyker allows in the same run.
ORIGIN = os.environ.get("BENCH_ORIGIN", "http://localhost:3000")
BODY = {"status": "healthy", "service": "slyker-api"}


def create_reference_app() -> Quart:
    app = Quart("reference")
    quart_cors.cors(app, allow_origin=[ORIGIN], allow_credentials=True)

    @app.get("/health/")
    async def health() -> dict[str, str]:
        return BODY

    return app


_RAW_BODY = json.dumps(BODY).encode()
_RAW_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_RAW_BODY)).encode()),
]


async def raw_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _RAW_HEADERS})
    await send({"type": "http.response.body", "body": _RAW_BODY})
