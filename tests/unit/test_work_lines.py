"""The generator's work lines on quorum queues (services/generator/lines.py, issue 16): a prefetch per line,
as quorum queues know no channel-wide one, and a switch that takes the new line's jobs only once those in
hand are done (so a replica never holds more jobs across a switch than its prefetch); and the jobs a replica
names as running (JobRepository.claim waits on them) linger after an announced end."""
from __future__ import annotations

from types import SimpleNamespace

from services.generator import lines
from services.generator.lines import LineConsumer, LineSteering
from shared import events

MAX_ATTEMPTS = 3


class FakeConsumer:
    """kombu's Consumer as LineConsumer drives it: records what it was told."""

    def __init__(self, queues):
        self.queues = list(queues)
        self.calls = []

    def qos(self, **kwargs):
        self.calls.append(("qos", kwargs))

    def cancel_by_queue(self, name):
        self.calls.append(("cancel", name))

    def add_queue(self, queue):
        self.calls.append(("add", queue.name))

    def consume(self):
        self.calls.append(("consume",))


class WorkEntrypoint:
    queue = events.work_queue(MAX_ATTEMPTS)


class UnboundLineConsumer(LineConsumer):
    """A LineConsumer outside a container: what the container would give it, given here."""

    prefetch = 1
    prefetch_count = property(lambda self: self.prefetch)
    accept = ["json"]


def line_consumer(prefetch=1):
    consumer = UnboundLineConsumer()
    consumer.prefetch = prefetch
    consumer.max_attempts = MAX_ATTEMPTS
    consumer._providers = [WorkEntrypoint()]
    consumer._cancel_consumers_if_requested = lambda: None
    return consumer


def connected(consumer):
    [kombu_consumer] = consumer.get_consumers(lambda queues, **kwargs: FakeConsumer(queues), channel=None)
    return kombu_consumer


def test_each_line_gets_the_prefetch_of_its_own_never_a_channel_wide_one():
    consumer = line_consumer(prefetch=2)
    consumer.switch("sdxl")
    kombu_consumer = connected(consumer)
    assert kombu_consumer.calls == [("qos", {"prefetch_count": 2})]   # apply_global would be refused (540)
    assert [queue.name for queue in kombu_consumer.queues] == [events.WORK_QUEUE_NAME,
                                                               events.checkpoint_queue_name("sdxl")]
    assert all(queue.queue_arguments["x-queue-type"] == "quorum" for queue in kombu_consumer.queues)


def test_a_switch_stops_the_old_line_at_once_and_takes_the_new_one_once_the_jobs_in_hand_are_done():
    consumer = line_consumer()
    consumer.switch("sdxl")
    kombu_consumer = connected(consumer)
    kombu_consumer.calls.clear()
    consumer.in_flight = 1                     # a job of sdxl's line in hand
    consumer.switch("flux")
    consumer.on_iteration()
    assert kombu_consumer.calls == [("cancel", events.checkpoint_queue_name("sdxl"))]
    consumer.on_iteration()                    # still in hand: nothing more
    assert kombu_consumer.calls == [("cancel", events.checkpoint_queue_name("sdxl"))]
    assert consumer.serving is None
    consumer.in_flight = 0                     # done: the new line now
    consumer.on_iteration()
    assert kombu_consumer.calls[1:] == [("add", events.checkpoint_queue_name("flux")), ("consume",)]
    assert consumer.serving == "flux"


def test_a_job_whose_outcome_was_announced_stays_named_as_running_a_while(monkeypatch):
    timers = []
    monkeypatch.setattr(lines.eventlet, "spawn_after", lambda seconds, fn, *args: timers.append((seconds, fn, args)))
    steering = LineSteering()
    steering.settings = SimpleNamespace(owner_silence_seconds=10.0)
    steering._running = lines.Counter()
    steering.started("job-1")
    steering.started("job-2")
    steering.ended("job-2")                    # raised (returned to the queue): not named from now on
    steering.ended("job-1", announced=True)    # announced: named until the jobs service surely recorded it
    assert steering.running == ["job-1"]
    [(seconds, later, args)] = timers
    assert seconds == 10.0
    later(*args)
    assert steering.running == []


def test_jobs_reach_the_worker_in_the_order_their_messages_arrived():
    """Two jobs arrive; the second one's claim is answered first: it still waits until the first has reached
    the worker (or given up), so a replica starts its jobs in queue order (tests/e2e/test_steer.py saw the
    second of four start first)."""
    import eventlet

    from services.generator.lines import ArrivalOrder

    arrivals, handed = ArrivalOrder(), []
    first, second = arrivals.take(), arrivals.take()

    def hand(number):
        arrivals.wait_turn(number)
        handed.append(number)
        arrivals.passed(number)

    later = eventlet.spawn(hand, second)      # its claim came back first
    eventlet.sleep(0)
    assert handed == []                       # waits for the first
    hand(first)
    later.wait()
    assert handed == [first, second]
    arrivals.passed(second)                   # passing twice (every path passes) changes nothing
    third = arrivals.take()
    arrivals.wait_turn(third)                 # nothing ahead of it: at once
