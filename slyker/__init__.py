"""slyker: the Slykertech storefront API."""

from slyker.app import create_app

__all__ = ["create_app"]
