"""A stand-in for services.gateway.ops.probes.Probes: the broker, database and work queue as /readyz and
/metrics see them, answered from memory. Every unit test that builds the app passes one."""
from __future__ import annotations

import copy

BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def histogram(*observations):
    return {"buckets": [[le, sum(1 for o in observations if o <= le)] for le in BUCKETS],
            "count": len(observations), "sum": float(sum(observations))}


REPLICAS = [
    {"replica": "node-generator-0", "backend": "preview", "healthy": True, "detail": "ok", "age_seconds": 3.0,
     "state": "busy", "worker_pid": 101, "restarts": 0},
    {"replica": "node-generator-1", "backend": "comfyui", "healthy": False,
     "detail": "worker restarting: the worker process exited unexpectedly (killed by SIGSEGV)", "age_seconds": 5.0,
     "state": "restarting", "worker_pid": None, "restarts": 2},
    {"replica": "old-node-generator-0", "backend": "preview", "healthy": True, "detail": "ok",
     "age_seconds": 86400.0, "state": "idle", "worker_pid": 7, "restarts": 0},
]

JOBS_METRICS = {
    "jobs_by_status": {"pending": 4, "processing": 1, "done": 17, "failed": 2},
    "durations": {
        "queue_wait": {"done": histogram(0.05, 0.3, 12.0), "failed": histogram()},
        "generation": {"done": histogram(0.2, 0.2, 1.5), "failed": histogram(700.0)},
    },
    "replicas": REPLICAS,
}


class FakeProbes:
    """`answers[(service, method)]` is returned, `raises[(service, method)]` raised; `database_error` and
    `queue_error`, when set, are raised by the database and queue probes."""

    def __init__(self, answers=None, raises=None, database_error=None, queue=None, queue_error=None,
                 timeout=2.0):
        self.answers = {("jobs", "replicas"): copy.deepcopy(REPLICAS),
                        ("jobs", "metrics"): copy.deepcopy(JOBS_METRICS)}
        self.answers.update(answers or {})
        self.raises = dict(raises or {})
        self.database_error = database_error
        self.queue = queue if queue is not None else {"messages": 7, "consumers": 2}
        self.queue_error = queue_error
        self.timeout = timeout
        self.calls = []

    def call(self, service, method, *args):
        self.calls.append((service, method, args))
        if (service, method) in self.raises:
            raise self.raises[(service, method)]
        return self.answers[(service, method)]

    def ping_database(self):
        self.calls.append(("database", "SELECT 1", ()))
        if self.database_error:
            raise self.database_error

    def queue_depth(self, queue_name):
        self.calls.append(("broker", "queue_depth", (queue_name,)))
        if self.queue_error:
            raise self.queue_error
        return dict(self.queue)
