"""Tortoise models, one module per area. aerich reads MODEL_MODULES (slyker.database)."""
