"""``python -m slyker check``: validate the settings in the environment and exit 0 or 1.

Run before Hypercorn (README, Docker): with ``workers >= 1`` Hypercorn prints the start-up
error but exits 0, so a supervisor would not notice a refused configuration.
"""

from __future__ import annotations

import sys

from slyker.settings import SettingsError, load_settings


def main(argv: list[str]) -> int:
    if argv != ["check"]:
        print("usage: python -m slyker check", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error.code, file=sys.stderr)
        return 1
    print(
        f"slyker: settings OK (DEBUG={settings.debug}, "
        f"{len(settings.cors_allowed_origins)} allowed origins, "
        f"{len(settings.cors_allowed_origin_regexes)} origin regexes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
