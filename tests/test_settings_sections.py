"""Each area's settings section (slyker/areas/*_settings.py): reached as ``settings.<area>``,
read from the same environment names, and validated at start-up whichever areas the app
installs, so one environment is valid or not whatever app is built from it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from slyker import create_app
from slyker.areas import ALL_AREAS
from slyker.areas.accounts_settings import AccountsSettings
from slyker.areas.billing_settings import BillingSettings, PaynowSettings
from slyker.areas.chat_settings import ChatSettings
from slyker.chat.service import BROKER_KEY
from slyker.settings import EXTENSION_KEY, Settings, SettingsError, load_settings

SECRET_KEY = "sections-test-secret-key-0123456789abcdef"
# Every app shape: the core alone, each area alone, all of them.
APP_AREAS = [
    pytest.param((), id="core-only"),
    *(pytest.param((area,), id=area) for area in ALL_AREAS),
    pytest.param(ALL_AREAS, id="all"),
]


def valid(**overrides: Any) -> dict[str, Any]:
    return {"SECRET_KEY": SECRET_KEY, **overrides}


def test_each_area_has_its_section() -> None:
    settings = load_settings(
        environ={},
        overrides=valid(
            CHAT_PING_INTERVAL=7,
            CHAT_DEPARTMENTS="sales,vip",
            CHAT_STAFF_DEPARTMENTS="vip",
            WS_ALLOW_MISSING_ORIGIN=True,
            CART_MAX_LINES=12,
            TAX_RATE="15.5",
            WHOIS_RATE_LIMIT=3,
            PAYNOW_TIMEOUT=9,
            JWT_ACCESS_TOKEN_LIFETIME=5,
            MAIL_FROM="Shop <shop@example.com>",
        ),
    )
    assert isinstance(settings.chat, ChatSettings)
    assert isinstance(settings.billing, BillingSettings)
    assert isinstance(settings.billing.paynow, PaynowSettings)
    assert isinstance(settings.accounts, AccountsSettings)
    assert settings.chat.ping_interval == 7
    assert settings.chat.departments == ("sales", "vip")
    assert settings.chat.staff_departments == ("vip",)
    assert settings.chat.ws_allow_missing_origin is True
    assert settings.billing.cart_max_lines == 12
    assert settings.billing.tax_rate == Decimal("15.5")
    assert settings.billing.whois_rate_limit == 3
    assert settings.billing.paynow.timeout == 9.0
    assert settings.accounts.jwt_access_token_lifetime == timedelta(minutes=5)
    assert settings.accounts.mail_from == "Shop <shop@example.com>"
    # The core keeps only its own fields: no area's field is left at the top level.
    core = set(Settings.__dataclass_fields__)
    for section in (ChatSettings, BillingSettings, AccountsSettings):
        assert not core & set(section.__dataclass_fields__) - {"accounts", "billing", "chat"}
    assert not {name for name in core if name.startswith(("chat_", "cart_", "whois_", "smtp_"))}


BAD_SECTION_SETTINGS = [
    pytest.param("CHAT_PING_INTERVAL", "0", "must be from 0.1 to 3600, got 0", id="chat-ping-zero"),
    pytest.param(
        "CHAT_MESSAGES_PER_SECOND", "fast", "expected a whole number, got 'fast'", id="chat-rate"
    ),
    pytest.param(
        "CHAT_DEPARTMENTS", "sales,Sales Team", "'sales team' is not a department name", id="dept"
    ),
    pytest.param("CHAT_DEPARTMENTS", "agents", "'agents' is not a department name", id="agents"),
    pytest.param(
        "CHAT_STAFF_DEPARTMENTS", "vip", "'vip' is not in CHAT_DEPARTMENTS", id="staff-dept"
    ),
    pytest.param(
        "CHAT_AUTH_FRAME_TIMEOUT", "nan", "must be from 0.1 to 60, got nan", id="chat-auth-nan"
    ),
    pytest.param(
        "WS_ALLOW_MISSING_ORIGIN", "maybe", "expected true or false, got 'maybe'", id="ws-origin"
    ),
    pytest.param(
        "CART_COOKIE_SAMESITE", "loose", "expected Lax, Strict or None, got 'Loose'", id="samesite"
    ),
    pytest.param("CART_MAX_LINES", "1001", "must be at most 1000, got 1001", id="cart-lines"),
    pytest.param("TAX_RATE", "100", "must be a percentage from 0 to 99.99, got '100'", id="tax"),
    pytest.param(
        "WHOIS_SERVERS", "com", "'com' is not suffix=value (e.g. com=...)", id="whois-servers"
    ),
    pytest.param(
        "JWT_ACCESS_TOKEN_LIFETIME", "0", "must be at least 1, got 0", id="jwt-access-zero"
    ),
    pytest.param("MAIL_FROM", "nobody", "expected an e-mail address, got 'nobody'", id="mail-from"),
]


@pytest.mark.parametrize(("name", "value", "problem"), BAD_SECTION_SETTINGS)
@pytest.mark.parametrize("areas", APP_AREAS)
def test_a_bad_section_setting_stops_every_app(
    tmp_path: Path, areas: tuple[str, ...], name: str, value: str, problem: str
) -> None:
    """A bad CHAT_* (or CART_*, JWT_*, ...) value stops the app at start-up with the one line
    naming it, even when the app does not install that area: sections are always read."""
    with pytest.raises(SettingsError) as info:
        create_app(valid(DATA_DIR=str(tmp_path / "data"), **{name: value}), areas=areas)
    assert info.value.setting == name
    assert info.value.code == f"slyker: invalid setting {name}: {problem}"


@pytest.mark.parametrize("areas", APP_AREAS)
def test_an_app_with_some_areas_loads_every_section(tmp_path: Path, areas: tuple[str, ...]) -> None:
    app = create_app(
        valid(DATA_DIR=str(tmp_path / "data"), CHAT_PING_INTERVAL=9, CART_MAX_LINES=3),
        areas=areas,
    )
    settings: Settings = app.extensions[EXTENSION_KEY]
    assert settings.chat.ping_interval == 9
    assert settings.billing.cart_max_lines == 3
    assert settings.accounts.jwt_refresh_reuse_grace == timedelta(seconds=30)
    assert (BROKER_KEY in app.extensions) is ("chat" in areas)
    blueprints = set(app.blueprints)
    assert ("chat" in blueprints) is ("chat" in areas)
    assert ("carts" in blueprints) is ("billing" in areas)
    assert ("accounts" in blueprints) is ("accounts" in areas)


async def test_the_core_only_app_answers(tmp_path: Path) -> None:
    app = create_app(valid(DATA_DIR=str(tmp_path / "data")), areas=())
    assert set(app.blueprints) == {"health"}
    client = app.test_client()
    response = await client.get("/health/")
    assert response.status_code == 200
    missing = await client.get("/api/carts/")
    assert missing.status_code == 404
    assert (await missing.get_json())["code"] == "not_found"
