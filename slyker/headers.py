"""Headers every response carries, whichever layer made it.

``X-Content-Type-Options: nosniff``: a browser must not guess that a JSON body (an error
echoing a client's text, say) is HTML or script. It sits outside the CORS layer, so even
the responses the CORS safety net or the Host check make carry it.

The request-id layer (:class:`~slyker.request_id.RequestIDMiddleware`) adds them in its pass
over the response headers: one send wrapper for both, instead of a layer of its own that
would wrap ``send`` and copy the headers again.
"""

from __future__ import annotations

_NOSNIFF = (b"x-content-type-options", b"nosniff")
SECURITY_HEADERS = (_NOSNIFF,)
SECURITY_HEADER_NAMES = frozenset(name for name, _value in SECURITY_HEADERS)
