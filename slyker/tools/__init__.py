"""Operator tools that run outside the served app (they import nothing from it)."""
