"""Tortoise models. The foundation has none; accounts and billing add theirs here."""
