"""nameko's entrypoints as GAZE's services use them: the same decorators, whose durable queues are declared
as quorum queues with GAZE's arguments (shared/broker.py), made from the container's GAZE_MAX_ATTEMPTS.

- `rpc`: the service's `rpc-<service>` queue (requests wait there while no instance runs).
- `event_handler`: a service-pool handler's `evt-<source>-<event>--<service>.<method>` queue.
- `consume(queue_of=...)`: a queue of GAZE's own, made by `queue_of(max_attempts)` (shared/events.py); a
  keyword, as nameko's decorators take a lone function for the method they decorate.

nameko's reply queues (one per RPC client) stay classic, but transient (`RpcProxy` here): nameko declares
them durable, and a durable classic queue whose node has gone away cannot be declared again elsewhere
(NOT_FOUND, "home node down") until that node returns, so a service's reconnecting consumer would fail for
that long; a transient one goes with its node and is declared anew on another. Broadcast handlers'
exclusive queues stay as they are.
"""
from __future__ import annotations

from nameko import events as nameko_events
from nameko import messaging as nameko_messaging
from nameko import rpc as nameko_rpc

from shared import broker
from shared.config import from_nameko


def _max_attempts(extension) -> int:
    return from_nameko(extension.container.config).max_attempts


def _quorum_if_durable(queue, max_attempts):
    if queue.durable and not queue.exclusive and not queue.auto_delete:
        return broker.quorum(queue, max_attempts)
    return queue


class RpcConsumer(nameko_rpc.RpcConsumer):
    def setup(self):
        super().setup()
        # the provider registered the queue object itself: its arguments are read when the consumer declares it
        self.queue.queue_arguments = broker.quorum_arguments(_max_attempts(self))


class Rpc(nameko_rpc.Rpc):
    rpc_consumer = RpcConsumer()


rpc = Rpc.decorator


class ReplyListener(nameko_rpc.ReplyListener):
    def setup(self):
        super().setup()
        self.queue.durable = False     # see the module's docstring


class RpcProxy(nameko_rpc.RpcProxy):
    rpc_reply_listener = ReplyListener()


class EventHandler(nameko_events.EventHandler):
    def setup(self):
        super().setup()
        self.queue.queue_arguments = _quorum_if_durable(self.queue, _max_attempts(self)).queue_arguments


event_handler = EventHandler.decorator


class Consumer(nameko_messaging.Consumer):
    """nameko's Consumer on the queue `queue_of(max_attempts)` returns."""

    def __init__(self, queue_of, **kwargs):
        self.queue_of = queue_of
        super().__init__(queue=None, **kwargs)

    def setup(self):
        self.queue = self.queue_of(_max_attempts(self))
        super().setup()


consume = Consumer.decorator
