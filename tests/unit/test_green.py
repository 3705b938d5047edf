"""shared/green.py: a handled message's ack on a connection the broker has just reset must not kill the
service container (nameko 2.14 only ignores amqp's own ConnectionError there)."""
from __future__ import annotations

import pytest
from nameko.messaging import QueueConsumer

from kombu.exceptions import OperationalError
from nameko.rpc import Responder

from shared.green import tolerate_acks_on_a_lost_connection, tolerate_replies_on_a_lost_connection


class _Channel:
    connection = object()   # "alive" as far as nameko's check goes: the reset shows only when writing


class _Message:
    channel = _Channel()

    def __init__(self, error):
        self.error = error

    def ack(self):
        raise self.error

    def requeue(self):
        raise self.error


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"),
                                   BrokenPipeError(32, "Broken pipe")])
@pytest.mark.parametrize("method", ["ack_message", "requeue_message"])
def test_an_ack_on_a_reset_socket_is_ignored(error, method):
    tolerate_acks_on_a_lost_connection()
    getattr(QueueConsumer, method)(QueueConsumer.__new__(QueueConsumer), _Message(error))   # no exception


def test_other_errors_still_surface():
    tolerate_acks_on_a_lost_connection()
    with pytest.raises(ValueError):
        QueueConsumer.ack_message(QueueConsumer.__new__(QueueConsumer), _Message(ValueError("bug")))


def test_patching_twice_wraps_once():
    tolerate_acks_on_a_lost_connection()
    first = QueueConsumer.ack_message
    tolerate_acks_on_a_lost_connection()
    assert QueueConsumer.ack_message is first


class _FailingPublisher:
    def __init__(self, *args, **kwargs):
        pass

    def publish(self, *args, **kwargs):
        raise _FailingPublisher.error


def _responder():
    message = type("Request", (), {"properties": {"content_type": "application/json", "reply_to": "r",
                                                  "correlation_id": "c"}})()
    responder = Responder("amqp://", exchange=None, serializer="json", message=message)
    responder.publisher_cls = _FailingPublisher
    return responder


@pytest.mark.parametrize("error", [OperationalError("[Errno 111] ECONNREFUSED"),
                                   ConnectionResetError(104, "Connection reset by peer")])
def test_a_reply_that_cannot_be_published_does_not_kill_the_service(error):
    tolerate_replies_on_a_lost_connection()
    _FailingPublisher.error = error
    assert _responder().send_response({"serve": None}, None) == ({"serve": None}, None)


def test_a_reply_that_fails_otherwise_still_surfaces():
    tolerate_replies_on_a_lost_connection()
    _FailingPublisher.error = ValueError("bug")
    with pytest.raises(ValueError):
        _responder().send_response(1, None)


def test_draining_a_lost_connection_raises_instead_of_reconnecting_behind_the_consumers_back(monkeypatch):
    """kombu would open a fresh connection (the next node of a failover list) inside drain_events, without
    the consumer's channels: the consumer would wait there for ever. A connection error instead, which the
    consumer loops answer by reconnecting and consuming again (shared/green.py refuse_silent_reconnects)."""
    from amqp.exceptions import RecoverableConnectionError
    from kombu import Connection

    from shared.green import refuse_silent_reconnects

    refuse_silent_reconnects()
    connection = Connection("memory://")
    connection.connect()
    opened = []
    monkeypatch.setattr(Connection, "_ensure_connection", lambda self, *args, **kwargs: opened.append(self))
    monkeypatch.setattr(connection.transport, "verify_connection", lambda _connection: False)   # the socket died
    with pytest.raises(RecoverableConnectionError):
        connection.drain_events(timeout=0.01)
    assert opened == [], "a new connection was opened behind the consumer's back"
