"""Business rules, apart from routes: plain arguments in, domain errors out.

Services never import Quart's request objects or the HTTP error type; they raise
:mod:`slyker.services.errors`, which :mod:`slyker.errors` maps to HTTP responses.
"""
