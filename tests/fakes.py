"""Stand-ins for the gateway's collaborators, answered from memory: the RPC transport to the presets and
jobs services (FakeRpc), the API key store (FakeKeys), the admin store (FakeAdmin) and the operations
probes (FakeProbes). `create_app` takes each of them as an argument, so the unit tests drive the real
Falcon app with no broker, database or Redis behind it; the integration tests swap one of them for the
real thing. Each fake is defined here once, with the canned data it answers with."""
from __future__ import annotations

import copy
import uuid

from shared.errors import NotFound

# --- what the public API's fakes answer with --------------------------------------------------------

GOOD_KEY = "gz_good-key"
AUTH = {"X-API-Key": GOOD_KEY}
JSON = {"Content-Type": "application/json"}
SLUG = "example_01"
JOB_ID = "783f0268-ba85-4426-8ca2-6393c844c887"

# internal fields (prompt, checkpoint, ...) included: the API must leave them out of its answer
PRESETS = [
    {"preset_id": "example_01", "slug": "example_01", "name": "Example Preset", "has_cover": True,
     "prompt": "internal prompt", "checkpoint": "Illustrious/model.safetensors", "width": 1024},
    {"preset_id": "second", "slug": "second", "name": "Second", "has_cover": False,
     "negative": "internal negative", "steps": 28},
]
SPEC = {"preset_slug": SLUG, "preset_name": "Example Preset", "prompt": "a", "negative": "b",
        "checkpoint": "Illustrious/model.safetensors", "width": 1024, "height": 1024, "steps": 28,
        "cfg": 6.0, "sampler": "euler_ancestral", "seed": None, "kind": "preview"}
JOB = {"id": JOB_ID, "label": "Preset: Example Preset – preview", "status": "pending", "error": None}


class FakeRpc:
    """The gateway's RPC transport (`call(service, method, *args)`, like services.gateway.stores.rpc.RpcPool),
    answering as the presets and jobs services would.

    An answer comes from the first of: `raises[(service, method)]` (raised), `results[(service, method)]`
    (returned as it is), or this object's method `<service>_<method>(*args)`; a call none of them answers
    fails the test. The methods below answer every call the public API makes: the presets service with
    PRESETS and SPEC, the jobs service from `jobs` (job id -> document, newest first), which jobs.create
    adds to. A test that needs a service to behave more like the real one subclasses and adds methods.

    Every call is recorded in `calls` as (service, method, args). jobs.create's request id (a fresh UUID
    per request) and owner are kept apart, in `request_ids` and `owners`, so that a test compares the
    (spec, count) it cares about."""

    def __init__(self, results=None, raises=None, jobs=(JOB,)):
        self.results = dict(results or {})
        self.raises = dict(raises or {})
        self.jobs = {job["id"]: dict(job) for job in jobs}
        self.calls = []
        self.request_ids = []
        self.owners = []

    def call(self, service, method, *args):
        if (service, method) == ("jobs", "create") and len(args) > 2:
            request_id, owner = (args[2:] + (None,))[:2]
            self.request_ids.append(request_id)
            self.owners.append(owner)
            args = args[:2]
        self.calls.append((service, method, args))
        key = (service, method)
        if key in self.raises:
            raise self.raises[key]
        if key in self.results:
            return self.results[key]
        answer = getattr(self, f"{service}_{method}", None)
        if answer is None:
            raise AssertionError(f"unexpected RPC call {service}.{method}{args!r}")
        return answer(*args)

    def called(self, service, method):
        """The arguments of every call of service.method, in order."""
        return [args for s, m, args in self.calls if (s, m) == (service, method)]

    # --- presets ------------------------------------------------------------------------------------
    def presets_list(self):
        return copy.deepcopy(PRESETS)

    def presets_resolve(self, slug, overrides):
        return dict(SPEC)

    # --- jobs ---------------------------------------------------------------------------------------
    def jobs_create(self, spec, count):
        """`count` pending jobs with fresh ids, put before the older ones in `jobs`."""
        created = {}
        for _ in range(count):
            job_id = str(uuid.uuid4())
            created[job_id] = {"id": job_id, "label": f"Preset: {spec['preset_name']} – preview",
                               "status": "pending", "error": None, "result": None, "preset": spec["preset_slug"],
                               "progress": None}
        self.jobs = {**created, **self.jobs}
        return list(created)

    def jobs_get(self, job_id):
        if job_id not in self.jobs:
            raise NotFound("job", job_id)
        return self.jobs[job_id]

    def jobs_get_many(self, job_ids):
        return [self.jobs[job_id] for job_id in job_ids if job_id in self.jobs]

    def jobs_list(self, limit=50, status=None):
        return [job for job in self.jobs.values() if status in (None, job["status"])][:limit]

    # --- webhooks (the settings page) -----------------------------------------------------------------
    def webhooks_secret(self, key_name):
        return {"key_name": key_name, "secret": "whsec_" + "A" * 32, "created_at": 0.0, "previous_valid_until": None}

    def webhooks_deliveries(self, key_name=None, limit=50):
        return []


class FakeKeys:
    """The API key store (services.gateway.stores.api_keys.ApiKeyStore) as the auth middleware sees it:
    `valid` keys (a list, or {key: name}) verify to their name ("default" when a list), any other to
    None. Every key it was asked about is recorded in `seen`."""

    def __init__(self, valid=(GOOD_KEY,)):
        self.valid = dict(valid) if isinstance(valid, dict) else dict.fromkeys(valid, "default")
        self.seen = []

    def verify(self, key):
        self.seen.append(key)
        return self.valid.get(key)


# --- the web UI's logged-in admin -------------------------------------------------------------------

CSRF = "t"
COOKIES = {"gaze_session": "valid"}


class FakeAdmin:
    """The admin store (services.gateway.stores.admin.AdminStore) as the web UI's login check sees it: the
    session cookie in COOKIES is a logged-in admin whose CSRF token is CSRF; any other cookie, or none, is
    nobody. (The API tests never send the cookie: for them nobody is logged in.)"""

    def __init__(self):
        self.closed = []   # session tokens ended by a logout

    def session(self, token):
        return {"csrf_token": CSRF} if token == COOKIES["gaze_session"] and token not in self.closed else None

    def close_session(self, token):
        self.closed.append(token)


# --- the operations endpoints' view of the broker, database and work queue --------------------------

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
    """A stand-in for services.gateway.ops.probes.Probes: the broker, database and work queue as /readyz and
    /metrics see them. `answers[(service, method)]` is returned, `raises[(service, method)]` raised;
    `database_error` and `queue_error`, when set, are raised by the database and queue probes."""

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
