"""Which lines a replica takes work from: the shared line always, and the line of the one checkpoint the jobs
service's scheduler has it serve (services/jobs/scheduling.py), switched while the replica runs.

`LineConsumer` is nameko's queue consumer for the work entrypoint (services/generator/service.py), on a
connection of its own: one channel, GAZE_GENERATOR_PREFETCH per line (quorum queues know no channel-wide
prefetch; shared/broker.py). A switch cancels the consumer of the old checkpoint's line at once and consumes
the new one once the jobs in hand are done (so a replica holds no more jobs across a switch than it would
without one: the jobs in hand run first, their messages acked as usual, the new line's jobs follow), from
the consumer's own green thread between two reads of the connection (a channel is never used by two readers
at once). The shared line is consumed throughout (with checkpoint-aware scheduling nothing is sent there but
what an older install left in it).

`LineSteering` asks the scheduler (`jobs.assign_line`) when the replica's jobs in hand run out and every
GAZE_SCHEDULER_TICK_SECONDS while it works, telling it what the worker holds and how long its jobs and
loads take (services/generator/supervisor.py); a scheduler out of reach changes nothing (the replica keeps
its line and asks again at the next tick). Everything here runs on green threads of the replica's process.
"""
from __future__ import annotations

import logging
from collections import Counter

import eventlet
from eventlet.event import Event
from nameko.extensions import DependencyProvider
from nameko.messaging import QueueConsumer
from nameko.standalone.rpc import ClusterRpcProxy

from shared import events
from shared.config import from_nameko
from shared.contracts import ClusterTransport
from shared.contracts.jobs import JobsClient, LineRequest

log = logging.getLogger(__name__)
SWITCH_POLL_SECONDS = 0.1    # the consumer's longest read of the connection: how late a switch may be applied


class ArrivalOrder:
    """The replica's jobs reach its worker in the order their messages arrived: each handler claims its job
    first (an RPC: the green threads may overtake each other there), then waits for its turn here before
    handing the job to the worker. A handler takes its number in the consumer's thread (delivery order) and
    passes it on every path, once its job is with the worker or it has given up; a redelivered job passes at
    once (it may wait long for an earlier run, and must not hold the line behind it)."""

    def __init__(self):
        self._taken = 0
        self._lowest = 0            # every number below this one has passed
        self._passed = set()
        self._moved = Event()

    def take(self) -> int:
        number, self._taken = self._taken, self._taken + 1
        return number

    def wait_turn(self, number):
        while number is not None and self._lowest < number:
            self._moved.wait()

    def passed(self, number):
        if number is None or number < self._lowest or number in self._passed:
            return
        self._passed.add(number)
        while self._lowest in self._passed:
            self._passed.discard(self._lowest)
            self._lowest += 1
        moved, self._moved = self._moved, Event()
        moved.send(True)


class LineConsumer(QueueConsumer):
    """nameko's QueueConsumer, for the work lines (see the module's docstring)."""

    def __init__(self):
        super().__init__()
        self.serving = None         # the checkpoint whose line is consumed now (None: none but the shared line)
        self.wanted = None          # the checkpoint whose line should be (applied by the consumer's thread)
        self.in_flight = 0          # work messages delivered and not yet acked or requeued
        self.ran_dry = Event()      # sent when in_flight falls to 0
        self.arrivals = ArrivalOrder()

    def setup(self):
        self.max_attempts = from_nameko(self.container.config).max_attempts
        super().setup()

    def switch(self, checkpoint):
        """Serve `checkpoint`'s line (None: none, the shared line only) from the consumer's next iteration."""
        self.wanted = checkpoint

    # ---- the consumer's thread

    def run(self, _tokens=1, **kwargs):
        # kombu's loop reads the connection for at most safety_interval, then calls on_iteration
        return super().run(_tokens, safety_interval=SWITCH_POLL_SECONDS, **kwargs)

    def get_consumers(self, consumer_cls, channel):
        """(Re)connected: consume the shared line and the wanted checkpoint's line."""
        self._consumers = {}
        for provider in self._providers:
            consumer = consumer_cls(queues=[provider.queue, *self._checkpoint_lines(self.wanted)],
                                    callbacks=[lambda body, message, provider=provider:
                                               self.handle_message(provider, body, message)],
                                    accept=self.accept)
            consumer.qos(prefetch_count=self.prefetch_count)
            self._consumers[provider] = consumer
        self.serving = self.wanted
        return self._consumers.values()

    def on_iteration(self):
        self._cancel_consumers_if_requested()
        if not self._consumers:
            # The entrypoint stopped (the replica is stopping): no new deliveries, but the connection stays
            # open until the jobs in hand are acked; closing it would hand them to another replica again.
            # (nameko's own QueueConsumer stops at once: its other provider, the RPC reply listener, keeps
            # the connection open until the workers are done.)
            self.should_stop = self.in_flight == 0
            return
        if self.wanted == self.serving:
            return
        if self.serving is not None:
            for consumer in self._consumers.values():
                consumer.cancel_by_queue(events.checkpoint_queue_name(self.serving))
            log.debug("no longer taking work from the line of %s", self.serving)
            self.serving = None
        if self.wanted is None or self.in_flight > 0:
            return                           # the new line's jobs follow those in hand
        for consumer in self._consumers.values():
            for line in self._checkpoint_lines(self.wanted):
                consumer.add_queue(line)     # declares it: a line nobody published to yet exists from now on
            consumer.consume()               # starts consuming the queues added since the last call
        log.debug("now taking work from the line of %s", self.wanted)
        self.serving = self.wanted

    def _checkpoint_lines(self, checkpoint):
        return [] if checkpoint is None else [events.checkpoint_queue(checkpoint, self.max_attempts)]

    # ---- jobs in hand

    def handle_message(self, provider, body, message):
        self.in_flight += 1
        super().handle_message(provider, body, message)

    def ack_message(self, message):
        self._settled()
        super().ack_message(message)

    def requeue_message(self, message):
        self._settled()
        super().requeue_message(message)

    def _settled(self):
        self.in_flight = max(0, self.in_flight - 1)
        if self.in_flight == 0 and not self.ran_dry.ready():
            self.ran_dry.send(True)


class LineSteering(DependencyProvider):
    """The replica's side of scheduling: a green thread that asks the scheduler which line to serve (see the
    module's docstring). Needs the service's GpuWorker dependency and its work entrypoint (a WorkConsumer on
    a LineConsumer)."""

    def setup(self):
        self.settings = from_nameko(self.container.config)
        self._thread = None
        self._proxy = None
        self._running = Counter()    # job id -> runs of it in this replica's handlers (started, not ended)

    def get_dependency(self, worker_ctx):
        return self

    @property
    def arrivals(self) -> ArrivalOrder:
        return self.consumer.arrivals

    def started(self, job_id):
        self._running[job_id] += 1

    def ended(self, job_id, announced=False):
        """A run of `job_id` ended. One whose outcome was announced stays named for GAZE_OWNER_SILENCE_SECONDS
        more: until the jobs service has recorded that event (it may lag while the broker fails over), a
        redelivered copy of the job must still wait rather than run it again."""
        if announced:
            eventlet.spawn_after(self.settings.owner_silence_seconds, self.ended, job_id)
            return
        self._running[job_id] -= 1
        if self._running[job_id] <= 0:
            del self._running[job_id]

    @property
    def running(self) -> list[str]:
        return sorted(self._running)

    def start(self):
        from services.generator.replica import GpuWorker

        self.gpu = next(dep for dep in self.container.dependencies if isinstance(dep, GpuWorker))
        self.consumer = next(entrypoint.queue_consumer for entrypoint in self.container.entrypoints
                             if isinstance(getattr(entrypoint, "queue_consumer", None), LineConsumer))
        self._thread = self.container.spawn_managed_thread(self._steer_forever)

    def stop(self):
        if self._thread is not None:
            self._thread.kill()
        self._close_proxy()

    kill = stop

    def _steer_forever(self):
        tick = self.settings.scheduler_tick_seconds
        failing = False
        while True:
            self.consumer.ran_dry = Event()
            if self.gpu.supervisor.serving:      # a replica without a working worker takes no new line
                try:
                    self._ask()
                except Exception as exc:   # the scheduler out of reach: keep the line, ask again next tick
                    self._close_proxy()
                    if not failing:
                        log.warning("cannot ask the jobs service which line to serve (keeping %s): %s: %s",
                                    self.consumer.wanted, type(exc).__name__, exc, extra={"replica": self.gpu.replica})
                    failing = True
                else:
                    if failing:
                        log.info("asking the jobs service which line to serve again", extra={"replica": self.gpu.replica})
                    failing = False
            if self.consumer.in_flight > 0:
                with eventlet.Timeout(tick, False):
                    self.consumer.ran_dry.wait()     # went idle: ask at once (its line may have run dry)
            else:
                eventlet.sleep(tick)                 # idle: its line's next job comes by itself; ask each tick

    def _ask(self):
        supervisor = self.gpu.supervisor
        status = self.gpu.status()
        ask = LineRequest(replica=self.gpu.replica, serving=self.consumer.wanted,
                          loaded=supervisor.loaded_checkpoint, in_flight=self.consumer.in_flight,
                          can_load=status.checkpoints, running=self.running,
                          mean_job_seconds=supervisor.mean_job_seconds,
                          mean_load_seconds=supervisor.mean_load_seconds)
        answer = self._jobs().assign_line(ask)
        if answer.serve != self.consumer.wanted:
            log.info("replica %s: serving the line of %s (was %s): %s", self.gpu.replica, answer.serve,
                     self.consumer.wanted, answer.reason, extra={"replica": self.gpu.replica})
            self.consumer.switch(answer.serve)
            self.gpu.serve_line(answer.serve)

    def _jobs(self) -> JobsClient:
        if self._proxy is None:
            self._proxy = ClusterRpcProxy(self.container.config, timeout=self.settings.rpc_timeout)
            self._cluster = self._proxy.start()
        return JobsClient(ClusterTransport(self._cluster))

    def _close_proxy(self):
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            try:
                proxy.stop()
            except Exception:   # a connection already gone: nothing left to close
                pass
