"""Liveness and readiness: GET /healthz and GET /readyz (no API key, JSON, never a 500).

/healthz answers from the process alone: if gunicorn's worker can run this responder, it is alive.
/readyz asks what a request needs: the broker (an RPC round trip to the jobs service, which also
returns the generator replicas), the database (SELECT 1 through the gateway's pool) and at least one
generator replica that reported a healthy backend within three status intervals. All checks run at
once and the whole answer is bounded by the probe timeout (see probes.py). `?generators=optional` leaves
the last one out of the verdict (still reported): an orchestrator that starts generators only when work
waits (deploy/k8s) must not hold back the gateway that work arrives through.

Anonymous callers learn only {check: {"ok": bool}} (and the status code): the details name replicas,
hosts and errors, so they need `Authorization: Bearer <GAZE_METRICS_TOKEN>`. The answer is reused for
READINESS_CACHE_SECONDS per process, and concurrent callers share one probe: however often /readyz is
called, it costs the broker and the database at most one round trip each per process per interval.
"""
from __future__ import annotations

import falcon
from nameko.exceptions import RpcTimeout

from services.gateway.ops.auth import bearer_ok
from services.gateway.ops.probes import ProbeTimeout, Reused, run_bounded
from services.gateway.stores.rpc import ServiceUnavailable
from shared.contracts.jobs import JobsClient, replica_state

RETRY_AFTER_SECONDS = "5"
MAX_DETAIL = 200
# the outer limit: a little above the probes' own time limits, so theirs normally fire first and name
# the cause precisely
OUTER_SLACK_SECONDS = 0.5
READINESS_CACHE_SECONDS = 2.0


def describe_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, RpcTimeout):
        text = f"the jobs service did not answer within {timeout:g} s"
    elif isinstance(exc, ServiceUnavailable):
        # the health page is for token holders and the admin: the cause, not only the public sentence
        text = getattr(exc, "detail", None) or str(exc)
    elif isinstance(exc, ProbeTimeout):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"


class Readiness:
    def __init__(self, probes, status_interval_seconds: float, cache_seconds: float = READINESS_CACHE_SECONDS):
        self.probes = probes
        self.stale_after = 3 * status_interval_seconds
        self._answer = Reused(self._check_or_report_the_bug, cache_seconds)

    def current(self) -> tuple[bool, dict]:
        """check()'s answer, at most `cache_seconds` old; callers arriving during a check wait for it."""
        return self._answer.get()

    def _check_or_report_the_bug(self) -> tuple[bool, dict]:
        try:
            return self.check()
        except Exception as exc:  # a bug in the checks themselves: still an honest 503, never a 500
            return False, {"readiness": _failed(describe_error(exc, self.probes.timeout))}

    def check(self) -> tuple[bool, dict]:
        timeout = self.probes.timeout
        outcomes = run_bounded({"broker": lambda: JobsClient(self.probes).replicas(),
                                "database": self.probes.ping_database},
                               timeout + OUTER_SLACK_SECONDS)
        broker, database = outcomes["broker"], outcomes["database"]
        checks = {
            "broker": (_ok(f"jobs service answered in {broker.seconds * 1000:.0f} ms") if broker.ok
                       else _failed(describe_error(broker.error, timeout))),
            "database": (_ok(f"SELECT 1 in {database.seconds * 1000:.0f} ms") if database.ok
                         else _failed(describe_error(database.error, timeout))),
            "generators": (self._generators(broker.value) if broker.ok
                           else _failed("unknown: the jobs service, which tracks the replicas, did not answer")),
        }
        return all(check["ok"] for check in checks.values()), checks

    def _generators(self, replicas) -> dict:
        window = f"{self.stale_after:g} s"
        if not replicas:
            return _failed("no generator replica has reported yet")
        states = [(replica, replica_state(replica, self.stale_after)) for replica in replicas]
        healthy = sum(state == "healthy" for _, state in states)
        if healthy:
            return _ok(f"{healthy} of {len(replicas)} replica(s) healthy and heard from within {window}")
        problems = [f"{r['replica']} unhealthy ({r['detail']})" if state == "unhealthy"
                    else f"{r['replica']} last heard {r['age_seconds']:.0f} s ago" for r, state in states]
        text = f"no replica healthy and heard from within {window}: " + "; ".join(problems)
        return _failed(text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…")


def _ok(detail):
    return {"ok": True, "detail": detail}


def _failed(detail):
    return {"ok": False, "detail": detail}


class HealthResource:
    """Liveness: no I/O, no key."""

    def on_get(self, req, resp):
        resp.media = {"status": "ok"}


class ReadinessResource:
    def __init__(self, readiness: Readiness, token: str = ""):
        self.readiness = readiness
        self.token = token   # GAZE_METRICS_TOKEN: who may read the details

    def on_get(self, req, resp):
        resp.cache_control = ["no-store"]
        _, checks = self.readiness.current()
        # ?generators=optional: ready when this gateway can serve (broker, database) whether a generator runs
        # or not; the generators check is still reported. Kubernetes' readiness probe asks this way
        # (deploy/k8s): with generators scaled to zero none runs until a job arrives, through a ready gateway.
        optional = {"generators"} if req.get_param("generators") == "optional" else set()
        ready = all(check["ok"] for name, check in checks.items() if name not in optional)
        if bearer_ok(req, self.token):
            resp.media = {"status": "ready" if ready else "not ready", "checks": checks}
        else:
            resp.media = {name: {"ok": check["ok"]} for name, check in checks.items()}
        if not ready:
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", RETRY_AFTER_SECONDS)
