"""A replica hears every client's cancel (the jobs service's `job_cancelled` event) on a queue of its own.

Not a nameko event handler: nameko's worker pool of a generator is its prefetch (GAZE_GENERATOR_PREFETCH,
2), and both slots are busy for the whole length of the jobs they run, so a cancel handled there would
wait for a job to end, which is what it is meant to stop. This consumer runs in its own green thread
beside the pool (like the status reporter) on an exclusive, auto-deleted queue bound to the jobs
service's event exchange; kombu's ConsumerMixin reconnects after a broker outage. A cancel sent while a
replica is disconnected is not heard by it: a job still in the work queue is stopped by its claim
("already cancelled"), and a job the replica runs anyway ends unrecorded (the jobs service keeps it
`cancelled`) and its image is deleted by the jobs service.
"""
from __future__ import annotations

import logging
import uuid

from kombu import Connection, Exchange, Queue
from kombu.mixins import ConsumerMixin
from pydantic import ValidationError

from shared import events

log = logging.getLogger(__name__)

# the exchange nameko's EventDispatcher publishes the jobs service's events on (nameko.events.get_event_exchange)
JOBS_EVENTS = Exchange(f"{events.JOBS_SOURCE}.events", type="topic", durable=True)


class CancelListener(ConsumerMixin):
    def __init__(self, amqp_uri: str, replica: str, on_cancel):
        self.connection = Connection(amqp_uri)
        self.on_cancel = on_cancel   # on_cancel(job_id)
        self.queue = Queue(f"gaze.cancels.{replica}.{uuid.uuid4().hex[:8]}", JOBS_EVENTS,
                           routing_key=events.JOB_CANCELLED, exclusive=True, auto_delete=True, durable=False)

    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=[self.queue], callbacks=[self.on_message], accept=["json"])]

    def on_message(self, body, message):
        try:
            cancelled = events.JobCancelled.model_validate(body)
        except ValidationError as exc:
            log.error("dropped a malformed job_cancelled event: %s", exc)
        else:
            self.on_cancel(cancelled.job_id)
        message.ack()

    def stop(self):
        self.should_stop = True
        self.connection.release()
