"""Who may read the operations endpoints' details: whoever presents `Authorization: Bearer
<GAZE_METRICS_TOKEN>`. No token configured means nobody (from outside; the admin's pages are the way in).

/metrics itself (`metrics_allowed`): with a token configured, the bearer is required from everywhere;
without one, only callers on this host's loopback may read it, so a gateway published to a network (docker
compose's port, `gaze up` on 0.0.0.0) never shows it to the network unless a token is set."""
from __future__ import annotations

import hmac
import ipaddress


def bearer_ok(req, token: str) -> bool:
    if not token:
        return False
    scheme, _, credential = (req.get_header("Authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode("utf-8", "surrogatepass"),
                                                             token.encode())


def from_loopback(req) -> bool:
    """The request's peer (REMOTE_ADDR; uvicorn puts a local proxy's X-Forwarded-For client there) is
    127.0.0.0/8 or ::1 (IPv4-mapped forms included). Without a peer address (a unix socket, only a
    process on this host can connect) Falcon says 127.0.0.1."""
    try:
        address = ipaddress.ip_address((req.remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def metrics_allowed(req, token: str) -> bool:
    """A token configured: its bearer, from anywhere. None: loopback callers only."""
    return bearer_ok(req, token) if token else from_loopback(req)
