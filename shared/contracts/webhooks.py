"""The webhooks service's RPC contract (services/webhooks/service.py is the callee), and what a webhook
target may be: checked by the gateway when a job is submitted and by the webhooks service again before
every attempt (a name may resolve elsewhere by then)."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from shared.contracts import ServiceClient

SERVICE = "webhooks"

# The job events a webhook may ask for (`webhook_events_filter`), each the status word it follows, and
# the `type` its deliveries carry: job.<event>.
EVENT_OF_STATUS = {"processing": "started", "done": "completed", "failed": "failed", "cancelled": "cancelled"}
EVENTS = tuple(EVENT_OF_STATUS.values())
DEFAULT_EVENTS = ("completed", "failed", "cancelled")    # the ends of a job, as Replicate's default
MAX_URL_CHARS = 2000


class WebhooksClient(ServiceClient):
    service = SERVICE

    def secret(self, key_name: str) -> dict:
        """The API key name's signing secret, made on first need: {"key_name", "secret", "created_at",
        "previous_valid_until"} (the last: until when the secret it replaced also signs; None without one)."""
        return self._call("secret", key_name)

    def rotate_secret(self, key_name: str) -> dict:
        """A new secret for the key name (answered as `secret` answers); the old one keeps signing for 24 h."""
        return self._call("rotate_secret", key_name)

    def deliveries(self, key_name: str | None = None, limit: int = 50) -> list[dict]:
        """The most recent deliveries (of one key name, or all), newest first, each with its attempts."""
        return self._call("deliveries", key_name, limit)


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as a webhook target before any lookup (None: nothing)."""
    if len(url) > MAX_URL_CHARS:
        return f"must be at most {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        parts.port   # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    return None


def refused_address(address: str) -> bool:
    """Loopback, private, link-local (cloud metadata at 169.254.169.254 included), or otherwise not a
    public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def target_problem(url: str, allow_private: bool, resolve=socket.getaddrinfo) -> str | None:
    """What makes `url` a target we refuse (None: deliver to it): a malformed URL, a name that does not
    resolve, or one that resolves to any refused address unless `allow_private` (GAZE_WEBHOOK_ALLOW_PRIVATE)."""
    problem = url_problem(url)
    if problem is not None or allow_private:
        return problem
    parts = urlsplit(url)
    try:
        infos = resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                        type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"the host {parts.hostname} does not resolve"
    addresses = {info[4][0] for info in infos}
    if not addresses:
        return f"the host {parts.hostname} does not resolve"
    if any(refused_address(address) for address in addresses):
        return "must not resolve to a loopback, private, link-local or metadata address"
    return None
