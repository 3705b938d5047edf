"""shared/green.py: a handled message's ack on a connection the broker has just reset must not kill the
service container (nameko 2.14 only ignores amqp's own ConnectionError there)."""
from __future__ import annotations

import pytest
from nameko.messaging import QueueConsumer

from shared.green import tolerate_acks_on_a_lost_connection


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
