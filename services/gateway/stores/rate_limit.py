"""Rate limits (issue 6): per API key for the REST API, per client address for failed API keys and for
web UI login attempts; 429 with `Retry-After` (whole seconds until the window resets) once spent.

Counting is done by the `limits` library in Redis, so every gunicorn worker on every gateway host
shares one budget per key. One request costs one Redis round trip per limit it is subject to (a Lua
script that increments and sets the expiry); a refusal costs one more, for the reset time. A limit
set to "" (or "0", "off") costs nothing at all: reads are unlimited by default, so the poll path
pays no Redis round trip for this.

| scope           | who is counted                        | setting                       |
| submit          | an API key's POSTs (generate)         | GAZE_RATE_LIMIT_SUBMIT        |
| read            | an API key's GETs (polls, presets)    | GAZE_RATE_LIMIT_READ          |
| auth_failures   | a client address's invalid API keys   | GAZE_RATE_LIMIT_AUTH_FAILURES |
| login           | a client address's login POSTs        | GAZE_RATE_LIMIT_LOGIN         |

API keys are counted under a hash of the key, never the key itself. Per-key limits apply only after
the key has been verified, so invalid keys create no counters. Invalid keys are counted per client
address (WSGI REMOTE_ADDR; behind a reverse proxy that is the proxy's); once an address has spent its
budget, this process refuses its requests *before* verifying the key (no database query, no Redis),
until the window resets, except for keys this process has verified before (so a client with a valid
key behind the same NAT or proxy keeps working).

Redis down or slow (0.5 s timeouts): the request is served unlimited (fail open, never a 500) and the
limits are skipped for RETRY_SECONDS before Redis is tried again; one warning is logged per interval.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time

import limits
import redis
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import STRATEGIES

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0         # after a Redis error, how long limits are skipped before Redis is tried again
TRUST_SECONDS = 3600.0      # a key this process verified is exempt from its address's auth-failure block
MAX_REMEMBERED = 10_000     # bound on each per-process memory (blocked addresses, trusted keys)
OFF = ("", "0", "off", "none")
SETTINGS = {"submit": "GAZE_RATE_LIMIT_SUBMIT", "read": "GAZE_RATE_LIMIT_READ",
            "auth_failures": "GAZE_RATE_LIMIT_AUTH_FAILURES", "login": "GAZE_RATE_LIMIT_LOGIN"}
MESSAGES = {
    "submit": "too many generate requests for this API key",
    "read": "too many requests for this API key",
    "auth_failures": "too many invalid API keys from this address",
    "login": "too many login attempts from this address",
}


class RateLimited(Exception):
    """A spent budget: errors.py maps it to 429 with `Retry-After: <retry_after>`."""

    def __init__(self, scope: str, retry_after: int):
        self.scope = scope
        self.retry_after = max(1, int(retry_after))
        super().__init__(f"{MESSAGES[scope]}; retry after {self.retry_after} s")


def parse_limit(spec, setting: str = "rate limit"):
    """"60/minute", "10 per second", "1000/hour" ... → a limits.RateLimitItem; "", "0", "off" → None."""
    spec = (spec or "").strip()
    if spec.lower() in OFF:
        return None
    try:
        item = limits.parse(spec)
    except ValueError:
        raise ValueError(f"{setting} must look like 60/minute (or be empty = off), not {spec!r}") from None
    if item.amount < 1:
        raise ValueError(f"{setting}: {spec!r} allows nothing; use an empty value to turn the limit off")
    return item


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class RateLimiter:
    """The limits and their Redis counters. Also a Falcon middleware (after ApiKeyAuth): it limits login
    attempts; ApiKeyAuth calls `guard`, `auth_failed` and `passed` around each API key check."""

    def __init__(self, redis_url: str = "", prefix: str = "gaze", *, submit="", read="", auth_failures="",
                 login="", strategy: str = "fixed-window"):
        self.items = {scope: parse_limit(spec, SETTINGS[scope]) for scope, spec in
                      (("submit", submit), ("read", read), ("auth_failures", auth_failures), ("login", login))}
        if strategy not in STRATEGIES:
            raise ValueError(f"GAZE_RATE_LIMIT_STRATEGY must be one of {', '.join(sorted(STRATEGIES))},"
                             f" not {strategy!r}")
        self.limiter = None
        if redis_url and any(self.items.values()):
            storage = RedisStorage(redis_url, key_prefix=f"{prefix}:ratelimit",
                                   socket_timeout=0.5, socket_connect_timeout=0.5)
            self.limiter = STRATEGIES[strategy](storage)
        elif any(self.items.values()):
            log.warning("no Redis (GAZE_REDIS_URL is empty): rate limits are not enforced")
        self._lock = threading.Lock()
        self._skip_until = 0.0                   # monotonic: Redis failed, limits skipped until then
        self._blocked: dict[str, float] = {}     # client address -> monotonic time its block ends
        self._trusted: dict[str, float] = {}     # key digest -> monotonic time this process last verified it

    @classmethod
    def from_settings(cls, settings) -> RateLimiter:
        return cls(settings.redis_url, settings.redis_prefix, submit=settings.rate_limit_submit,
                   read=settings.rate_limit_read, auth_failures=settings.rate_limit_auth_failures,
                   login=settings.rate_limit_login, strategy=settings.rate_limit_strategy)

    @property
    def enabled(self) -> bool:
        return self.limiter is not None

    # ---- the counters ------------------------------------------------------------------------------

    def hit(self, scope: str, identity: str) -> int | None:
        """Count one request of `identity` in `scope`: None when allowed (or unlimited, or Redis is
        unreachable), else the seconds until the window resets (≥ 1)."""
        item = self.items[scope]
        if item is None or self.limiter is None or time.monotonic() < self._skip_until:
            return None
        try:
            if self.limiter.hit(item, scope, identity):
                return None
            reset = self.limiter.get_window_stats(item, scope, identity).reset_time
        except (redis.RedisError, StorageError, OSError) as exc:
            self._redis_failed(exc)
            return None
        return max(1, math.ceil(reset - time.time()))

    def _redis_failed(self, exc) -> None:
        with self._lock:
            if time.monotonic() < self._skip_until:
                return   # another thread already logged this interval
            self._skip_until = time.monotonic() + RETRY_SECONDS
        log.warning("rate limits not enforced for %.0f s: Redis unreachable: %s", RETRY_SECONDS, exc)

    # ---- API keys (called by ApiKeyAuth) -----------------------------------------------------------

    def guard(self, req, key: str) -> None:
        """Before a key is verified: RateLimited while this address's invalid-key budget is spent (in
        this process's memory: no Redis), unless this process has verified this very key before."""
        if not self._blocked:
            return
        until = self._blocked.get(req.remote_addr)
        if until is None:
            return
        now = time.monotonic()
        if now >= until:
            self._blocked.pop(req.remote_addr, None)
            return
        seen = self._trusted.get(_digest(key))
        if seen is not None and now - seen < TRUST_SECONDS:
            return
        raise RateLimited("auth_failures", math.ceil(until - now))

    def auth_failed(self, req) -> None:
        """After an invalid key: count it against the address; RateLimited once the budget is spent."""
        retry = self.hit("auth_failures", req.remote_addr or "-")
        if retry is None:
            return
        with self._lock:
            if len(self._blocked) >= MAX_REMEMBERED:
                now = time.monotonic()
                self._blocked = {addr: until for addr, until in self._blocked.items() if until > now}
                if len(self._blocked) >= MAX_REMEMBERED:
                    self._blocked = {}
            self._blocked[req.remote_addr] = time.monotonic() + retry
        raise RateLimited("auth_failures", retry)

    def passed(self, req, key: str) -> None:
        """After a valid key: count the request against the key's budget (POST: submit, else read)."""
        digest = _digest(key)
        if self.items["auth_failures"] is not None:
            if len(self._trusted) >= MAX_REMEMBERED:
                self._trusted = {}
            self._trusted[digest] = time.monotonic()
        scope = "submit" if req.method == "POST" else "read"
        retry = self.hit(scope, digest)
        if retry is not None:
            raise RateLimited(scope, retry)

    # ---- Falcon middleware: login attempts ---------------------------------------------------------

    def process_resource(self, req, resp, resource, params):
        if req.method == "POST" and req.uri_template == "/login" and self.items["login"] is not None:
            retry = self.hit("login", req.remote_addr or "-")
            if retry is not None:
                raise RateLimited("login", retry)

