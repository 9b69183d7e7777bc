"""What ``tests/test_browser.py`` serves with Hypercorn: the contract app (the real app plus
its probe routes) with ``CORS_ALLOWED_ORIGINS`` from the environment.

``create_contract_app()`` alone would not do: its ``CONTRACT_SETTINGS`` override the
environment and allow only ``https://slykertech.co.zw``-style origins and
``http://localhost:3000``, which a test cannot serve a page from (port 3000 may be taken).
Its ``overrides`` argument wins over ``CONTRACT_SETTINGS``, so the page's origins (loopback
ports chosen by the test) go through there.
"""

from __future__ import annotations

import os

from quart import Quart

from tests.contract_app import create_contract_app


def create_browser_app() -> Quart:
    return create_contract_app({"CORS_ALLOWED_ORIGINS": os.environ["CORS_ALLOWED_ORIGINS"]})
