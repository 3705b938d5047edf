"""`gaze migrate-queues`: turn an install's RabbitMQ queues into the quorum queues GAZE declares now
(shared/broker.py) without losing a message.

RabbitMQ cannot change a queue's type or arguments: declaring a classic `gaze.generate` as a quorum queue
fails with PRECONDITION_FAILED, and the services would not start. For each queue GAZE declares (derived from
the services' own entrypoints: the work lines, the event handlers' and the RPC queues, the webhooks queue),
one that exists with other arguments is moved, messages and all:

1. `<name>.migrating`, a quorum queue, is bound where the old queue is bound (so nothing published meanwhile
   is dropped by an exchange without a queue), and every message of the old queue is copied into it (the
   copy confirmed by the broker before the original is acked: a crash duplicates, never loses);
2. the old queue is deleted once empty, and declared again as GAZE declares it now (bound as before);
3. the messages held in `<name>.migrating` move into it, then `<name>.migrating` goes.

A message published while both queues are bound lands in both: the services tell such a copy apart (a claim
takes a job once; every event handler applies an event once). A run that stopped half-way is finished by the
next one (step 3 for any `<name>.migrating` left). The services consuming a queue must be stopped first: a
queue with consumers is left as it is (the command says which and exits 1). Checkpoint lines are found from
the configured checkpoints and those of the jobs not ended yet.
"""
from __future__ import annotations

from dataclasses import dataclass

from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Connection, Queue

from shared import broker, events

MIGRATING_SUFFIX = ".migrating"


@dataclass
class Outcome:
    queue: str
    action: str           # absent | up to date | migrated | busy
    moved: int = 0

    def __str__(self):
        return {"absent": f"{self.queue}: not there yet (declared by its service at start)",
                "up to date": f"{self.queue}: up to date",
                "migrated": f"{self.queue}: now a quorum queue; {self.moved} message(s) moved",
                "busy": f"{self.queue}: has consumers: stop the services that use it, then run this again"
                }[self.action]


def declared_queues(settings, checkpoints=()) -> list[Queue]:
    """Every durable queue GAZE's services declare, as they declare it (from their entrypoints)."""
    from nameko.events import SERVICE_POOL, get_event_exchange
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
    from nameko.rpc import get_rpc_exchange

    from operations.registry import NAMEKO_SERVICES, SERVICES
    from shared.entrypoints import Consumer, EventHandler, Rpc

    max_attempts = settings.max_attempts
    config = settings.nameko_config()
    queues = {}
    for name in NAMEKO_SERVICES:
        cls = SERVICES[name].nameko_class()
        for method_name in dir(cls):
            for entrypoint in getattr(getattr(cls, method_name), ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(entrypoint, Rpc):
                    queue = Queue(f"rpc-{cls.name}", exchange=get_rpc_exchange(config), routing_key=f"{cls.name}.*")
                elif isinstance(entrypoint, EventHandler) and entrypoint.handler_type is SERVICE_POOL:
                    queue = Queue(f"evt-{entrypoint.source_service}-{entrypoint.event_type}--{cls.name}.{method_name}",
                                  exchange=get_event_exchange(entrypoint.source_service, config),
                                  routing_key=entrypoint.event_type)
                elif isinstance(entrypoint, Consumer):
                    queue = entrypoint.queue_of(max_attempts)
                else:
                    continue
                queues[queue.name] = queue if broker.is_quorum(queue) else broker.quorum(queue, max_attempts)
    for checkpoint in checkpoints:
        line = events.checkpoint_queue(checkpoint, max_attempts)
        queues[line.name] = line
    return list(queues.values())


def migrate(connection: Connection, queues) -> list[Outcome]:
    return [migrate_queue(connection, queue) for queue in queues]


def migrate_queue(connection: Connection, target: Queue) -> Outcome:
    """Make `target` exist as declared, with the messages of the queue of its name (see the module's docstring)."""
    staging = _staging(target)
    present = _exists(connection, target.name)
    if present is None:
        moved = _finish(connection, target, staging)
        return Outcome(target.name, "migrated" if moved else "absent", moved)
    if _declares(connection, target):
        moved = _finish(connection, target, staging)
        return Outcome(target.name, "migrated" if moved else "up to date", moved)
    _, consumers = present
    if consumers:
        return Outcome(target.name, "busy")
    channel = connection.channel()
    try:
        staging(channel).declare()                       # declares and binds it where target is bound
        moved = _move(connection, target.name, staging.name)
        while True:
            try:
                channel.queue_delete(target.name, if_unused=True, if_empty=True)
                break
            except PreconditionFailed:                   # a message arrived meanwhile: move it too
                channel = connection.channel()
                moved += _move(connection, target.name, staging.name)
        target(channel).declare()
    finally:
        _close(channel)
    _finish(connection, target, staging)
    return Outcome(target.name, "migrated", moved)


def _staging(target: Queue) -> Queue:
    return Queue(target.name + MIGRATING_SUFFIX, exchange=target.exchange, routing_key=target.routing_key,
                 durable=True, queue_arguments={"x-queue-type": "quorum"})


def _finish(connection, target: Queue, staging: Queue) -> int:
    """Step 3: empty a staging queue (of this run or of one that stopped) into `target`; 0 when none."""
    if _exists(connection, staging.name) is None:
        return 0
    channel = connection.channel()
    try:
        channel.queue_unbind(staging.name, target.exchange.name, target.routing_key)
        moved = _move(connection, staging.name, target.name)
        channel.queue_delete(staging.name)
    finally:
        _close(channel)
    return moved


def _exists(connection, name):
    """(messages, consumers) of queue `name`, None when there is none."""
    channel = connection.channel()
    try:
        _, messages, consumers = channel.queue_declare(name, passive=True)
        return messages, consumers
    except NotFound:
        return None
    finally:
        _close(channel)


def _declares(connection, queue: Queue) -> bool:
    """Whether `queue` can be declared as it is (exists with these arguments); False: PRECONDITION_FAILED."""
    channel = connection.channel()
    try:
        queue(channel).declare()
        return True
    except PreconditionFailed:
        return False
    finally:
        _close(channel)


def _move(connection, source: str, destination: str) -> int:
    """Every message of `source` into `destination` (through the default exchange), each confirmed by the
    broker before its original is acked. Properties and headers travel with the body as they were."""
    reader, writer = connection.channel(), connection.channel()
    writer.confirm_select()
    moved = 0
    try:
        while (message := reader.basic_get(source, no_ack=False)) is not None:
            writer.basic_publish_confirm(message, exchange="", routing_key=destination, mandatory=True)
            reader.basic_ack(message.delivery_tag)
            moved += 1
    finally:
        _close(reader)
        _close(writer)
    return moved


def _close(channel):
    try:
        channel.close()
    except Exception:   # already closed by the broker (a 404 or 406 closes the channel): nothing to do
        pass
