"""Helpers of ``tests/test_browser.py``: the page it serves and the app Hypercorn runs."""
