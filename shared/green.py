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


def assert_cooperative_psycopg():
    """Fail loudly at start-up rather than freeze under load."""
    import eventlet.patcher
    import psycopg.waiting

    if eventlet.patcher.is_monkey_patched("select") and psycopg.waiting.wait.__name__ != COOPERATIVE_WAIT:
        raise RuntimeError(
            "psycopg was imported with its blocking C wait function inside an eventlet process; "
            "call shared.green.patch() (or set PSYCOPG_WAIT_FUNC=wait_select) before importing psycopg"
        )
