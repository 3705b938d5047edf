"""Who may read the operations endpoints' details: whoever presents `Authorization: Bearer
<GAZE_METRICS_TOKEN>`. No token configured means nobody (from outside; the admin's pages are the way in)."""
from __future__ import annotations

import hmac


def bearer_ok(req, token: str) -> bool:
    if not token:
        return False
    scheme, _, credential = (req.get_header("Authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode("utf-8", "surrogatepass"),
                                                             token.encode())
