"""Eventlet set-up for nameko processes.

psycopg 3's C wait function blocks the whole process under eventlet (it only detects gevent), so one
slow query would freeze every green thread. Selecting the pure-Python `wait_select`, which eventlet
monkey-patches, makes database waits cooperative. It must happen before psycopg is imported.
"""
import os

COOPERATIVE_WAIT = "wait_select"


def patch():
    os.environ.setdefault("PSYCOPG_WAIT_FUNC", COOPERATIVE_WAIT)
    import eventlet

    eventlet.monkey_patch()
    tolerate_acks_on_a_lost_connection()
    tolerate_replies_on_a_lost_connection()
    refuse_silent_reconnects()


def tolerate_acks_on_a_lost_connection():
    """nameko 2.14 acks (and requeues) a handled message on the worker's green thread and ignores only
    amqp's own ConnectionError there; a socket the broker has just reset raises ConnectionResetError /
    BrokenPipeError (OSError) instead, which kills the whole service container (seen in the fault suite:
    the jobs service exited when RabbitMQ stopped while it acked an event). Such an ack cannot matter: the
    broker takes back every unacked message of a closed connection and delivers it again, and every handler
    is idempotent. So a socket error there is ignored the same way; the consumer reconnects by itself."""
    from nameko.messaging import QueueConsumer

    if getattr(QueueConsumer, "_gaze_tolerant", False):
        return
    for name in ("ack_message", "requeue_message"):
        original = getattr(QueueConsumer, name)

        def tolerant(self, message, _original=original):
            try:
                return _original(self, message)
            except OSError:
                pass   # the connection is gone: the broker redelivers the message (see above)

        tolerant.__name__ = name
        setattr(QueueConsumer, name, tolerant)
    QueueConsumer._gaze_tolerant = True


def tolerate_replies_on_a_lost_connection():
    """nameko 2.14 publishes an RPC's reply on the worker's green thread, and a publish that fails because
    the broker is down (kombu's OperationalError, a reset socket) kills the whole service container (seen in
    the fault suite: the jobs service exited when RabbitMQ stopped while it answered a replica's
    `assign_line`, which replicas call every tick). A reply that cannot be sent is lost either way, as it
    would be with the broker: the caller's time limit covers it (a claim's work order goes back to its line,
    a replica keeps its line and asks again), and the request message is settled as usual. So the failure is
    logged and the container lives on; it reconnects by itself."""
    import logging

    from kombu.exceptions import OperationalError
    from nameko.rpc import Responder

    if getattr(Responder, "_gaze_tolerant", False):
        return
    original = Responder.send_response

    def send_response(self, result, exc_info):
        try:
            return original(self, result, exc_info)
        except (OperationalError, OSError) as exc:
            logging.getLogger(__name__).warning("an RPC reply was lost with the broker connection: %s: %s",
                                                type(exc).__name__, exc)
            return result, exc_info

    Responder.send_response = send_response
    Responder._gaze_tolerant = True


def refuse_silent_reconnects():
    """kombu's `Connection.connection` property re-establishes a lost connection by itself (to the next node
    of a `;` failover list), and `drain_events` goes through it: a consumer whose connection died under
    another green thread (a worker's ack hit the dead socket first, and was tolerated above) then reads a
    fresh connection that has none of its channels, and waits there for ever while the broker shows no
    consumer on its queues. Seen in tests/faults/test_broker_cluster.py: the jobs service stopped taking
    claims after a broker node stopped, in about one run of three, logging nothing. Draining a connection
    that is no longer connected raises a connection error instead, which the consumer loops (kombu's
    ConsumerMixin: nameko's consumers, the generators' cancel listener; nameko's standalone RPC replies)
    answer by reconnecting and consuming again."""
    from amqp.exceptions import RecoverableConnectionError
    from kombu import Connection

    if getattr(Connection, "_gaze_no_silent_reconnect", False):
        return
    original = Connection.drain_events

    def drain_events(self, **kwargs):
        if not self.connected:
            raise RecoverableConnectionError("the broker connection was lost; reconnect and consume again")
        return original(self, **kwargs)

    Connection.drain_events = drain_events
    Connection._gaze_no_silent_reconnect = True


def assert_cooperative_psycopg():
    """Fail loudly at start-up rather than freeze under load."""
    import eventlet.patcher
    import psycopg.waiting

    if eventlet.patcher.is_monkey_patched("select") and psycopg.waiting.wait.__name__ != COOPERATIVE_WAIT:
        raise RuntimeError(
            "psycopg was imported with its blocking C wait function inside an eventlet process; "
            "call shared.green.patch() (or set PSYCOPG_WAIT_FUNC=wait_select) before importing psycopg"
        )


def dump_green_threads_on(signum) -> None:
    """On `signum` (SIGUSR2 for the services: `kill -USR2 <pid>`), write every green thread's stack to
    standard error: what a service that stopped taking messages is waiting on, without stopping it."""
    import gc
    import signal
    import sys
    import traceback

    import greenlet

    def dump(_signum, _frame):
        lines = ["green threads:"]
        for thread in gc.get_objects():
            if isinstance(thread, greenlet.greenlet) and thread.gr_frame is not None:
                lines.append(f"--- {thread!r}")
                lines.extend(line.rstrip() for line in traceback.format_stack(thread.gr_frame))
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()

    signal.signal(signum, dump)
