"""slyker.database makes the app's Tortoise context current per request through Tortoise's
private context variable (no public per-task setter in Tortoise 1.1). This fails when a
Tortoise release renames it or stops reading it, instead of queries silently using another
context."""

from __future__ import annotations

from tortoise.context import TortoiseContext, get_current_context

from slyker.database import enter_context, leave_context


def test_entered_context_is_what_tortoise_uses_and_leaving_restores_the_previous() -> None:
    outer, inner = TortoiseContext(), TortoiseContext()
    outer_token = enter_context(outer)
    try:
        assert get_current_context() is outer
        inner_token = enter_context(inner)
        assert get_current_context() is inner
        leave_context(inner_token)
        assert get_current_context() is outer
    finally:
        leave_context(outer_token)
    assert get_current_context() is not outer
