"""How GAZE's durable queues are declared on RabbitMQ: quorum queues, so that a cluster keeps them (and the
messages in them) on a majority of its nodes and a node going away moves their leader instead of taking them
with it.

Every durable queue GAZE declares (the work lines, the event and announcement queues, the services' RPC
queues) carries the same arguments, derived from GAZE_MAX_ATTEMPTS:
- `x-delivery-limit` = GAZE_MAX_ATTEMPTS: the broker counts every delivery that came back unacknowledged (its
  consumer died, its connection closed, it was rejected); one more than the limit and the message leaves the
  queue for the dead-letter exchange instead of looping forever. It backs the job's attempt count in the jobs
  service's database, which fails a job at its attempt GAZE_MAX_ATTEMPTS + 1 before the broker would (a claim
  is made with every delivery): the broker's limit catches the message that kills its consumer before the
  claim is recorded, or any message of the other queues that does.
- `x-dead-letter-exchange` = DEAD_LETTER_EXCHANGE with the at-least-once strategy (the message is kept in
  its queue until the dead-letter queue confirms it; RabbitMQ asks for `x-overflow: reject-publish` with it).
  The jobs service consumes DEAD_LETTER_QUEUE and records each message (a work order's job fails with a
  readable error).

nameko's own reply queues (transient, one per RPC client) stay as nameko declares them. A queue that exists
with other arguments (a classic queue of an install from before) cannot be redeclared: RabbitMQ answers
PRECONDITION_FAILED and the service does not start; `gaze migrate-queues` (operations/queues.py) turns such
queues into these without losing their messages.

Nothing here imports nameko (the generator's worker process imports shared/events.py, which uses this);
the nameko entrypoints that declare their queues this way are in shared/entrypoints.py.
"""
from __future__ import annotations

from kombu import Exchange, Queue

DEAD_LETTER_EXCHANGE = Exchange("gaze.dead-letter", type="fanout", durable=True)
# itself a quorum queue, without a limit or a dead-letter exchange of its own
DEAD_LETTER_QUEUE = Queue("gaze.dead-letter", exchange=DEAD_LETTER_EXCHANGE, durable=True,
                          queue_arguments={"x-queue-type": "quorum"})


def quorum_arguments(max_attempts: int) -> dict:
    """The arguments of every durable GAZE queue (see the module's docstring)."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": int(max_attempts),
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def quorum(queue: Queue, max_attempts: int) -> Queue:
    """`queue` (name, exchange, routing key) as a durable quorum queue with GAZE's arguments."""
    return Queue(queue.name, exchange=queue.exchange, routing_key=queue.routing_key, durable=True,
                 queue_arguments={**(queue.queue_arguments or {}), **quorum_arguments(max_attempts)})


def is_quorum(queue: Queue) -> bool:
    return (queue.queue_arguments or {}).get("x-queue-type") == "quorum"


def deaths(headers: dict | None) -> list[dict]:
    """The `x-death` records RabbitMQ adds to a dead-lettered message (newest first): queue, reason
    (`delivery_limit`, `rejected`, `expired`, `maxlen`), count, exchange, routing-keys."""
    return list((headers or {}).get("x-death") or [])
