"""A discrete-event model of a farm under services/jobs/scheduling.py's rule: replicas, per-checkpoint lines,
loads of L seconds when a replica's checkpoint changes, T seconds per image. Replicas ask the rule when they
go idle and every tick while busy, as services/generator/lines.py does. The unit tests check affinity and
fairness on it; the real farm is measured by bench/checkpoints.py."""
from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from services.jobs.scheduling import Line, Replica, choose_line


@dataclass
class SimReplica:
    name: str
    serving: str | None = None
    loaded: str | None = None
    busy_until: float = 0.0
    loads: int = 0
    can_load: frozenset | None = None


@dataclass
class Result:
    makespan: float
    loads: int
    waits: dict = field(default_factory=dict)      # checkpoint -> [queue wait of each job]
    useful: float = 0.0
    replicas: int = 0

    @property
    def efficiency(self) -> float:
        return self.useful / (self.makespan * self.replicas)

    def p(self, checkpoint, q) -> float:
        values = sorted(self.waits[checkpoint])
        return values[min(len(values) - 1, int(q * len(values)))]


def mix(n, checkpoints, rare_share=0.05, seed=7):
    """`n` checkpoint names: the last of `checkpoints` is rare (`rare_share` of the jobs), the rest equal."""
    rare = round(n * rare_share) if len(checkpoints) > 1 else 0
    common = checkpoints[:-1] if rare else checkpoints
    names = [checkpoints[-1]] * rare + [common[i % len(common)] for i in range(n - rare)]
    random.Random(seed).shuffle(names)
    return names


def simulate(arrivals, replicas=4, job_seconds=0.5, load_seconds=3.0, max_wait=30.0, tick=0.5, fcfs=False,
             can_load=None):
    """`arrivals`: [(time, checkpoint)]. fcfs: every replica takes the oldest job of any line (today's shared
    queue). Returns a Result."""
    farm = [SimReplica(f"r{i}", can_load=(can_load or {}).get(i)) for i in range(replicas)]
    pending = deque(sorted(arrivals, key=lambda arrival: arrival[0]))
    lines: dict[str, deque] = {}
    result = Result(0.0, 0, {cp: [] for _, cp in arrivals}, replicas=replicas)
    events = [(0.0, i, "ask") for i in range(replicas)]
    now, done, seq = 0.0, 0, replicas
    order = itertools.count()

    def admit(until):
        while pending and pending[0][0] <= until:
            at, cp = pending.popleft()
            lines.setdefault(cp, deque()).append((at, next(order)))

    def waiting_lines(at):
        return [Line(cp, len(q), at - q[0][0]) for cp, q in lines.items() if q]

    def view(r: SimReplica, busy):
        return Replica(r.name, r.serving, 1 if busy else 0, r.can_load, job_seconds, load_seconds)

    while done < len(arrivals):
        now, index, kind = heapq.heappop(events)
        admit(now)
        r = farm[index]
        busy = r.busy_until > now + 1e-9
        if not fcfs:
            decision = choose_line(view(r, busy), [view(o, o.busy_until > now) for o in farm if o is not r],
                                   waiting_lines(now), max_wait, tick)
            r.serving = decision.serve
        if busy:
            continue
        if fcfs:
            heads = [(q[0][1], cp) for cp, q in lines.items() if q]
            line = min(heads)[1] if heads else None
        else:
            line = r.serving if r.serving in lines and lines[r.serving] else None
        if line is None:
            # idle: wake at the next arrival, or at the next tick
            wake = min(pending[0][0] if pending else now + tick, now + tick)
            seq += 1
            heapq.heappush(events, (max(wake, now + 1e-6), index, "ask"))
            continue
        arrived, _ = lines[line].popleft()
        start = now
        if r.loaded != line:
            r.loaded, r.loads = line, r.loads + 1
            start += load_seconds
        result.waits[line].append(now - arrived)
        r.busy_until = start + job_seconds
        result.useful += job_seconds
        result.makespan = max(result.makespan, r.busy_until)
        done += 1
        t = now + tick
        while t < r.busy_until:
            heapq.heappush(events, (t, index, "tick"))
            t += tick
        heapq.heappush(events, (r.busy_until, index, "ask"))
    result.loads = sum(r.loads for r in farm)
    return result


def burst(n=400, checkpoints=("a", "b", "c", "rare")):
    return [(0.0, cp) for cp in mix(n, list(checkpoints))]


def stream(n=400, checkpoints=("a", "b", "c", "rare"), replicas=4, job_seconds=0.5, load=0.8):
    gap = job_seconds / (replicas * load)
    return [(i * gap, cp) for i, cp in enumerate(mix(n, list(checkpoints)))]
