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


def assert_cooperative_psycopg():
    """Fail loudly at start-up rather than freeze under load."""
    import eventlet.patcher
    import psycopg.waiting

    if eventlet.patcher.is_monkey_patched("select") and psycopg.waiting.wait.__name__ != COOPERATIVE_WAIT:
        raise RuntimeError(
            "psycopg was imported with its blocking C wait function inside an eventlet process; "
            "call shared.green.patch() (or set PSYCOPG_WAIT_FUNC=wait_select) before importing psycopg"
        )
