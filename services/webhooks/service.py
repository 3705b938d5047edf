"""The `webhooks` nameko service: delivers the job events clients asked for to their URLs (Standard
Webhooks, signed with the API key name's secret), and keeps those secrets.

It hears the jobs service's job_status_changed on its own durable queue (shared/events.py webhooks_queue),
records a delivery and acknowledges; a timer hands the deliveries that are due to the sender's green
threads (services/webhooks/delivery.py). A slow receiver so never holds up an event, and a delivery,
being in Postgres before its announcement is acknowledged, survives a restart of anything.
"""
import logging

from nameko.dependency_providers import Config
from pydantic import ValidationError

from shared import events
from shared.entrypoints import consume, rpc
from shared.config import from_nameko
from shared.contracts.webhooks import EVENT_OF_STATUS, SERVICE
from shared.errors import EXPECTED, InvalidField
from shared.timers import configured_timer
from services.webhooks import signing
from services.webhooks.delivery import Sender, lease_seconds
from services.webhooks.store import WebhookStore

log = logging.getLogger(__name__)

MAX_LISTED = 200


def _key_name(value):
    if not isinstance(value, str) or not value.strip():
        raise InvalidField("key_name", "must be an API key's name")
    return value.strip()


class WebhooksService:
    name = SERVICE

    store = WebhookStore()
    config = Config()
    sender = Sender()

    # --- the jobs service's announcements ---------------------------------------------------------
    @consume(queue_of=events.webhooks_queue, requeue_on_error=True)
    def on_status_changed(self, payload):
        """Record a delivery of the job's event if its webhook asked for it. A database that is away
        fails the handler: the announcement goes back to the queue (requeue_on_error) instead of being lost."""
        try:
            announced = events.JobStatusChanged.model_validate(payload)
        except ValidationError as exc:
            log.error("dropped a malformed job_status_changed: %s", exc)
            return
        job = announced.job
        event = EVENT_OF_STATUS.get(job.get("status"))
        if event is None or event not in announced.webhook_events:
            return
        if not announced.owner:
            log.warning("job %s: a webhook without an API key to sign with; not delivered", job.get("id"))
            return
        if self.store.record(job["id"], event, announced.owner, announced.webhook,
                             signing.body(event, job, announced.at)):
            log.info("job %s: webhook delivery of job.%s recorded", job["id"], event, extra={"job_id": job["id"]})

    @configured_timer("webhook_poll_seconds")
    def send_due(self):
        """Hand the deliveries that are due (first attempts and retries) to the sender, as many as it has
        room for: they are leased, so another instance or the next tick does not send them too."""
        free = self.sender.free()
        if free:
            for delivery in self.store.lease_due(free, lease_seconds(from_nameko(self.config))):
                self.sender.send(self.store, delivery)

    # --- RPC --------------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED)
    def secret(self, key_name):
        """The key name's signing secret (made on first need), and until when a rotated-out one still signs."""
        return self.store.secret(_key_name(key_name))

    @rpc(expected_exceptions=EXPECTED)
    def rotate_secret(self, key_name):
        return self.store.rotate(_key_name(key_name))

    @rpc(expected_exceptions=EXPECTED)
    def deliveries(self, key_name=None, limit=50):
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LISTED:
            raise InvalidField("limit", f"must be an integer from 1 to {MAX_LISTED}")
        return self.store.recent(None if key_name is None else _key_name(key_name), limit)
