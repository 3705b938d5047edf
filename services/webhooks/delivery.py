"""Sending deliveries: one attempt, what follows it, and the pool of green threads that send them.

Why green threads and not an OS thread pool: the service runs under eventlet (operations/runner.py patches
sockets), so an HTTP request waiting on a slow receiver yields to every other green thread, and a
`requests` call is safe as long as its session lives in the green thread that uses it: each attempt opens
its own session and closes it (a session is not shared, so no connection pool is touched from two
threads). The pool is the service's own (not nameko's worker pool): a slow receiver holds one of its
slots for at most GAZE_WEBHOOK_TIMEOUT_SECONDS and never an event handler or the timer.
"""
from __future__ import annotations

import logging
import time

import eventlet
import requests
from eventlet.greenpool import GreenPool
from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from shared.contracts.webhooks import target_problem
from services.webhooks import signing

log = logging.getLogger(__name__)


def lease_seconds(settings) -> float:
    """How long a sender holds a delivery it took: longer than any attempt can take."""
    return 2 * settings.webhook_timeout_seconds + 30


def after_attempt(number: int, schedule) -> tuple[str, float | None]:
    """What follows the failed attempt `number` (1 = the first): ("pending", wait before the next) while
    the schedule has a wait left for it, else ("failed", None)."""
    if number <= len(schedule):
        return "pending", float(schedule[number - 1])
    return "failed", None


def post(url: str, body: str, headers: dict, timeout: float, allow_private: bool) -> tuple[int | None, str | None]:
    """One attempt: (HTTP status, None), or (None, why there was no answer). The target is checked again
    first (its name may resolve elsewhere now); redirects are not followed (one could lead to an address
    that check refuses). `timeout` bounds the whole attempt, a receiver that trickles its answer included."""
    problem = target_problem(url, allow_private)
    if problem is not None:
        return None, f"refused: {problem}"
    try:
        with eventlet.Timeout(timeout), requests.Session() as session:
            response = session.post(url, data=body.encode(), headers=headers, timeout=timeout,
                                    allow_redirects=False, stream=True)
            response.close()     # the status is the answer; a receiver's body is not read
            return response.status_code, None
    except eventlet.Timeout:
        return None, f"no answer within {timeout:g} s"
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"


def deliver(repository, delivery: dict, settings) -> None:
    """Make the next attempt of a leased delivery and record it; a 2xx answer delivers it."""
    number = delivery["attempts"] + 1
    timestamp = int(time.time())
    headers = signing.headers(repository.signing_secrets(delivery["key_name"]), delivery["id"], timestamp,
                              delivery["body"])
    started = time.monotonic()
    status_code, error = post(delivery["url"], delivery["body"], headers, settings.webhook_timeout_seconds,
                              settings.webhook_allow_private)
    duration_ms = int((time.monotonic() - started) * 1000)
    if status_code is not None and 200 <= status_code < 300:
        outcome, retry_in = "delivered", None
    else:
        outcome, retry_in = after_attempt(number, settings.webhook_retry_schedule)
        if error is None:
            error = f"answered {status_code}"
    repository.record_attempt(delivery["id"], number, status_code, error, duration_ms, outcome, retry_in)
    log.info("webhook %s attempt %d to %s: %s%s", delivery["id"], number, delivery["url"],
             outcome, f" ({error}; next in {retry_in:g} s)" if retry_in is not None else
             (f" ({error})" if error else ""))


class Sender(DependencyProvider):
    """The service's green threads that send deliveries, GAZE_WEBHOOK_CONCURRENCY at most at once."""

    def setup(self):
        self.settings = from_nameko(self.container.config)
        self.pool = GreenPool(self.settings.webhook_concurrency)

    def stop(self):
        # Let attempts in flight end (each within the timeout); one cut short is sent again when its lease ends.
        with eventlet.Timeout(self.settings.webhook_timeout_seconds + 1, False):
            self.pool.waitall()

    def kill(self):
        for thread in list(self.pool.coroutines_running):
            thread.kill()

    def get_dependency(self, worker_ctx):
        return self

    def free(self) -> int:
        return self.pool.free()

    def send(self, repository, delivery: dict) -> None:
        self.pool.spawn_n(self._send, repository, delivery)

    def _send(self, repository, delivery):
        try:
            deliver(repository, delivery, self.settings)
        except Exception:   # noqa: BLE001 - a green thread's error would vanish; its lease brings it back
            log.exception("webhook %s: the attempt could not be made or recorded; it is retried when its"
                          " lease ends", delivery["id"])
