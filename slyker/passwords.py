"""What a new password must not be, beyond its length: control characters (a NUL, a line
break: bytes nobody types, which tools mangle), only whitespace, or one of the most common
passwords (a bundled list, slyker/data/common-passwords.txt, compared case-insensitively),
which are the first guesses of every attacker."""

from __future__ import annotations

import unicodedata
from functools import cache
from pathlib import Path

COMMON_PASSWORDS_FILE = Path(__file__).parent / "data" / "common-passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(
        line.strip().lower() for line in lines if line.strip() and not line.startswith("#")
    )


def password_problem(password: str) -> str | None:
    """Why ``password`` may not be used, for the user; None when it may."""
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in password):
        return "The password must not contain control characters."
    if not password.strip():
        return "The password must not be only spaces."
    if password.strip().casefold() in common_passwords():
        return "This password is too common. Choose one that is harder to guess."
    return None
