"""Checkpoint-aware scheduling: which line a generator replica takes its work from.

Every job waits in the line of its checkpoint (a durable queue per checkpoint, shared/events.py); a replica
takes work from the one line it serves (and from the shared line, which GAZE_SCHEDULING=fcfs uses alone).
Loading a checkpoint costs seconds (L), longer than an image (T), so a replica should stay on the model it
holds; but no job may wait without bound. A replica asks `choose_line` when it goes idle and every
GAZE_SCHEDULER_TICK_SECONDS while busy; the jobs service answers from the waiting jobs per checkpoint and the
lines the other live replicas serve, one decision at a time (services/jobs/store.py `assign_line`). The
rule, in the order it is applied (the README's "Scheduling" says the same to operators):

1. Start: a replica that serves no line takes the line with the most waiting jobs per replica serving it if
   its share pays for a load (see 5), else the longest line nobody serves, else none yet (it asks again):
   while jobs are still arriving, it does not pile onto a line of a few jobs it would soon leave.
2. Rescue: a line with waiting jobs and no replica is taken by the first replica that can be spared (its
   own line has no job waiting, or another replica serving it) and asks once the line's jobs would otherwise
   miss GAZE_SCHEDULER_MAX_WAIT_SECONDS: when oldest wait + L + (waiting − 1) × T + the replica's lead (its
   jobs in hand and one tick) reaches the maximum wait. So the last of its jobs starts by then, if one
   replica is enough for them; the line waiting longest first. A replica alone on a line with work is never
   taken off it for a rescue (that would only move the wait elsewhere, and thrash): the bound holds while
   the farm has a replica to spare, i.e. fewer busy checkpoints than replicas.
3. Stay: a replica keeps its line while the line has jobs waiting,
4. unless another replica serves its line too and another line is much longer: at least twice the waiting
   jobs per replica serving it (counting this one) of its own line, and enough work to pay for a load
   (that share × T ≥ 1.5 L). A replica alone on its line stays until the line runs dry (rule 5).
5. Dry: when its line has no job waiting, a replica moves to the line with the most waiting jobs per replica
   serving it, if its share pays for a load (share × T ≥ 1.5 L); otherwise it stays, idle, its model loaded,
   so that the next jobs of its checkpoint start at once.

T and L are the asking replica's own recent means (GeneratorStatus.mean_job_seconds, mean_load_seconds),
else the other replicas', else the defaults below. A replica is only sent to a checkpoint it can load, but
a line no live replica can load is due at once: the first replica that can be spared takes it, so that its
jobs end soon (failed by the backend with a reason the client can act on: "checkpoint 'x' is not installed
on this node") instead of waiting for a replica that may never come.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable, Optional

DEFAULT_JOB_SECONDS = 1.0     # T before any replica measured one
DEFAULT_LOAD_SECONDS = 5.0    # L before any replica measured one
# a move must bring this many loads' worth of work (share × T ≥ LOAD_PAYBACK × L): below it, a replica whose
# line ran dry keeps its model for the next jobs of its checkpoint (tried 1, 1.5, 2 and 3 on the model farm in
# tests/scheduling_sim.py at R=4, K=4, T=0.5 s, L=3 s: 1.5 loaded least for the same efficiency)
LOAD_PAYBACK = 1.5
LONGER_FACTOR = 2.0           # rule 4: how much longer another line must be before a replica leaves its own


@dataclass(frozen=True)
class Replica:
    """A replica as the scheduler sees it: the line it serves (None: only the shared one), its jobs in hand,
    the checkpoints it can load (None: any) and its recent means (None: not measured yet)."""

    name: str
    serving: Optional[str] = None
    in_flight: int = 0
    can_load: Optional[frozenset] = None
    job_seconds: Optional[float] = None
    load_seconds: Optional[float] = None

    def loads(self, checkpoint: str) -> bool:
        return self.can_load is None or checkpoint in self.can_load


@dataclass(frozen=True)
class Line:
    """A checkpoint's waiting jobs (pending, not reserved by a replica) and how long the oldest has waited."""

    checkpoint: str
    waiting: int
    oldest_wait: float


@dataclass(frozen=True)
class Decision:
    serve: Optional[str]      # the line to serve from now on (unchanged when it is the current one)
    reason: str               # start, rescue, stay, longer, dry, idle: which rule decided


def choose_line(me: Replica, others: Iterable[Replica], lines: Iterable[Line], max_wait: float,
                tick: float) -> Decision:
    """The line `me` serves next, given the other live replicas and the waiting lines (see the module's rule)."""
    others = [replica for replica in others if replica.name != me.name]
    lines = {line.checkpoint: line for line in lines if line.waiting > 0}
    job_seconds = _mean(me.job_seconds, (replica.job_seconds for replica in others), DEFAULT_JOB_SECONDS)
    load_seconds = _mean(me.load_seconds, (replica.load_seconds for replica in others), DEFAULT_LOAD_SECONDS)

    def servers(checkpoint):
        """Replicas serving `checkpoint`, this one included when it does."""
        return sum(replica.serving == checkpoint for replica in others) + (me.serving == checkpoint)

    def share(line):
        """The waiting jobs per replica of `line` if this replica joined it."""
        return line.waiting / (servers(line.checkpoint) + (me.serving != line.checkpoint))

    def worth_a_load(line):
        return share(line) * job_seconds >= LOAD_PAYBACK * load_seconds

    candidates = [line for line in lines.values() if me.loads(line.checkpoint)]
    best = max((line for line in candidates if line.checkpoint != me.serving),
               key=lambda line: (share(line), line.oldest_wait), default=None)
    own = lines.get(me.serving) if me.serving is not None else None

    if me.serving is None:
        unserved = [line for line in candidates if servers(line.checkpoint) == 0]
        if best is not None and worth_a_load(best):
            return Decision(best.checkpoint, "start")
        if unserved:
            return Decision(max(unserved, key=lambda line: (line.waiting, line.oldest_wait)).checkpoint, "start")
        return Decision(None, "idle")      # only a little work, all of it served: ask again later

    def nobody_loads(checkpoint):
        return not me.loads(checkpoint) and not any(replica.loads(checkpoint) for replica in others)

    lead = tick + me.in_flight * job_seconds
    due = [line for line in lines.values()
           if line.checkpoint != me.serving and servers(line.checkpoint) == 0
           and (nobody_loads(line.checkpoint)
                or me.loads(line.checkpoint)
                and line.oldest_wait + load_seconds + (line.waiting - 1) * job_seconds + lead >= max_wait)]
    spare = own is None or servers(me.serving) > 1     # its line keeps a replica, or has no work
    if due and spare:
        return Decision(max(due, key=lambda line: line.oldest_wait).checkpoint, "rescue")

    if own is not None:
        own_share = own.waiting / servers(me.serving)
        if (spare and best is not None and share(best) >= LONGER_FACTOR * own_share
                and worth_a_load(best)):
            return Decision(best.checkpoint, "longer")
        return Decision(me.serving, "stay")

    if best is not None and worth_a_load(best):
        return Decision(best.checkpoint, "dry")
    return Decision(me.serving, "idle")


def _mean(own: Optional[float], others: Iterable[Optional[float]], default: float) -> float:
    if own is not None:
        return own
    measured = [value for value in others if value is not None]
    return statistics.fmean(measured) if measured else default
