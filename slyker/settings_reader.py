"""What every settings section reads the environment with: one :class:`Reader` (trimmed,
unquoted values; typed, bounded parsers) and the one error, :class:`SettingsError`.

The core section (:mod:`slyker.settings`) and each area's section (``slyker/areas/*_settings.py``)
read through it, so a bad value reads the same wherever it is defined. Imports nothing of
slyker's: every section module may import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(SystemExit):
    """A setting that prevents start-up.

    A ``SystemExit`` so that ``hypercorn 'slyker:create_app()'`` stops with this one line
    instead of a traceback; tests catch it like any exception.
    """

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name
        super().__init__(f"slyker: invalid setting {name}: {problem}")


def split_list(raw: str) -> list[str]:
    """Comma-separated list: items trimmed, surrounding quotes stripped, empty items dropped.

    Quotes are stripped because ``CORS_ALLOWED_ORIGINS="https://a.example"`` pasted into an
    env file once reached production with the quotes inside the value.
    """
    items = []
    for item in raw.strip().strip("'\"").split(","):
        item = item.strip().strip("'\"").strip()
        if item:
            items.append(item)
    return items


def split_regex_list(raw: str) -> list[str]:
    """Like :func:`split_list`, but a comma inside ``{}``, ``[]`` or ``()`` (``{1,5}``) or
    escaped belongs to the regex."""
    items, current, depth, escaped = [], "", 0, False
    for char in raw:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        current += char
    items.append(current)
    return [item for item in (i.strip().strip("'\"").strip() for i in items) if item]


def merged_environ(
    environ: Mapping[str, str], overrides: Mapping[str, Any] | None
) -> dict[str, str]:
    """``environ`` with ``overrides`` (same names, Python values) over it, as strings."""
    merged: dict[str, str] = dict(environ)
    for name, value in (overrides or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | tuple):
            value = ",".join(str(item) for item in value)
        merged[name] = str(value)
    return merged


class Reader:
    """Typed reads of one environment; each refusal is a :class:`SettingsError` naming it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None else str(value).strip().strip("'\"").strip()

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None or value == "":
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise SettingsError(name, f"expected true or false, got {value!r}")

    def int(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise SettingsError(name, f"must be at most {maximum}, got {number}")
        return number

    def float(self, name: str, default: float, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(name, f"expected a number, got {value!r}") from None
        if not minimum <= number <= maximum:  # also refuses nan
            raise SettingsError(name, f"must be from {minimum:g} to {maximum:g}, got {value}")
        return number

    def port(self, name: str, default: int) -> int:
        port = self.int(name, default, minimum=1)
        if port > 65535:
            raise SettingsError(name, f"must be a port from 1 to 65535, got {port}")
        return port

    def list(self, name: str, default: tuple[str, ...]) -> list[str]:
        value = self.environ.get(name)
        return list(default) if value is None else split_list(str(value))
