"""Prometheus metrics at GET /metrics (prometheus_client).

Two kinds of metric, kept apart on purpose:

* Counted in this process, by `HttpMetrics` (a Falcon middleware): requests by method, route template
  (`req.uri_template`, e.g. "/api/v1/job/{job_id}", never the raw path; static files as their prefix
  plus "/{path}", anything else "unmatched") and status, and request latency by method and route.
  gunicorn runs several worker processes and a scrape reaches one of them, so under gunicorn these
  live in prometheus_client's multiprocess mode: every worker writes its values to mmap'ed files in
  PROMETHEUS_MULTIPROC_DIR (set and emptied by gunicorn_conf.py) and a scrape sums the files of all
  workers, dead ones included, so counters stay right across workers and worker restarts.
* Collected at scrape time, by `DependencyCollector`, from the source of truth: jobs by status, the
  job duration histograms, the backlog (in total and per checkpoint) and the generator replicas (their
  workers, model loads and lines) come from one `jobs.metrics()` RPC, the shared work queue's depth from a
  passive queue_declare on the broker. Both are bounded by the probe timeout; when one
  fails the scrape still answers and `gaze_scrape_source_up{source=...}` says 0.
"""
from __future__ import annotations

import logging
import os
import time

import falcon
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from shared import events
from shared.contracts.jobs import JobsClient, replica_state
from services.gateway.errors import ApiError
from services.gateway.ops.auth import metrics_allowed
from services.gateway.ops.health import OUTER_SLACK_SECONDS, describe_error
from services.gateway.ops.probes import Reused, run_bounded

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REPLICA_STATES = ("healthy", "unhealthy", "stale")
SOURCES_CACHE_SECONDS = 5.0   # how old the jobs service's and the work queue's figures in a scrape may be
DURATION_HELP = {
    "queue_wait": ("gaze_job_queue_wait_seconds",
                   "Time from a job's creation to the start of its (last) run, by final outcome"),
    "generation": ("gaze_job_generation_seconds",
                   "Time from a job's (last) start to its completion or failure, by final outcome"),
}


def multiprocess_dir() -> str | None:
    """The directory shared by gunicorn's workers, or None when this process counts on its own.
    prometheus_client picks its value storage when first imported, so ask it rather than the
    environment alone."""
    if getattr(values.ValueClass, "_multiprocess", False):
        return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return None


class HttpMetrics:
    """Falcon middleware: must be the first in the list, so its process_response runs last and sees the
    final status of every request, errors and requests refused by other middleware included."""

    def __init__(self, registry, static_prefixes=()):
        # registry=None under multiprocess mode: values go to the shared files, not to a registry
        self.requests = Counter("gaze_http_requests", "HTTP requests by method, route template and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("gaze_http_request_duration_seconds",
                                 "HTTP request latency by method and route template (until the response"
                                 " is ready to send)", ["method", "route"], registry=registry)
        self.static_prefixes = tuple(prefix.rstrip("/") + "/" for prefix in static_prefixes)

    def route_of(self, req) -> str:
        if req.uri_template:
            return req.uri_template
        for prefix in self.static_prefixes:
            if req.path.startswith(prefix):
                return prefix + "{path}"
        return UNMATCHED

    def process_request(self, req, resp):
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req, resp, resource, req_succeeded):
        started = getattr(req.context, "metrics_started", None)
        method = req.method if req.method in METHODS else "other"
        route = self.route_of(req)
        self.requests.labels(method, route, str(resp.status_code)).inc()
        if started is not None:
            self.latency.labels(method, route).observe(time.perf_counter() - started)


class DependencyCollector:
    """Collected at a scrape (see the module docstring), from an answer at most `cache_seconds` old: one
    jobs-service RPC and one queue inspection per process per interval however often /metrics is
    scraped (concurrent scrapes share one), so an anonymous caller cannot multiply the load on the broker."""

    def __init__(self, probes, status_interval_seconds: float, cache_seconds: float = SOURCES_CACHE_SECONDS):
        self.probes = probes
        self.stale_after = 3 * status_interval_seconds
        self._sources = Reused(self._read_sources, cache_seconds)

    def describe(self):
        return []  # nothing to ask at registration time: collect() does I/O

    def outcomes(self) -> dict:
        return self._sources.get()

    def _read_sources(self) -> dict:
        outcomes = run_bounded({"jobs": lambda: JobsClient(self.probes).metrics(),
                                "broker": lambda: self.probes.queue_depth(events.WORK_QUEUE_NAME)},
                               self.probes.timeout + OUTER_SLACK_SECONDS)
        for source, outcome in outcomes.items():
            if not outcome.ok:
                log.warning("metrics: %s unavailable: %s", source, describe_error(outcome.error, self.probes.timeout))
        return outcomes

    def collect(self):
        outcomes = self.outcomes()
        up = GaugeMetricFamily("gaze_scrape_source_up",
                               "1 when this scrape could read the source (jobs: the jobs service, broker:"
                               " the work queue), else 0 and its metrics are missing", labels=["source"])
        for source, outcome in outcomes.items():
            up.add_metric([source], 1 if outcome.ok else 0)
        yield up
        if outcomes["jobs"].ok:
            yield from self._jobs(outcomes["jobs"].value)
        if outcomes["broker"].ok:
            depth = outcomes["broker"].value
            queue = events.WORK_QUEUE_NAME
            ready = GaugeMetricFamily("gaze_queue_messages_ready",
                                      "Work orders waiting in the shared work queue (not yet handed to a generator);"
                                      " with checkpoint-aware scheduling jobs wait in their checkpoint's queue"
                                      " instead: gaze_backlog_jobs counts every line", labels=["queue"])
            ready.add_metric([queue], depth["messages"])
            yield ready
            consumers = GaugeMetricFamily("gaze_queue_consumers", "Consumers of the queue (generator replicas)",
                                          labels=["queue"])
            consumers.add_metric([queue], depth["consumers"])
            yield consumers

    def _jobs(self, data):
        by_status = GaugeMetricFamily("gaze_jobs", "Jobs in the database by status", labels=["status"])
        for status, count in sorted(data["jobs_by_status"].items()):
            by_status.add_metric([status], count)
        yield by_status
        for metric, (name, help_text) in DURATION_HELP.items():
            family = HistogramMetricFamily(name, help_text, labels=["outcome"])
            for outcome, histogram in sorted(data["durations"].get(metric, {}).items()):
                buckets = [(floatToGoString(float(le)), count) for le, count in histogram["buckets"]]
                buckets.append(("+Inf", histogram["count"]))
                family.add_metric([outcome], buckets, histogram["sum"])
            yield family
        replicas = GaugeMetricFamily(
            "gaze_generator_replicas",
            f"Generator replicas the jobs service has heard from: healthy / unhealthy (as last reported"
            f" within {self.stale_after:g} s) or stale (not heard from within {self.stale_after:g} s)",
            labels=["state"])
        states = [replica_state(replica, self.stale_after) for replica in data["replicas"]]
        for state in REPLICA_STATES:
            replicas.add_metric([state], states.count(state))
        yield replicas
        workers = GaugeMetricFamily(
            "gaze_generator_workers",
            f"Generator replicas heard from within {self.stale_after:g} s, by the state of their worker process",
            labels=["state"])
        fresh = [replica for replica in data["replicas"] if replica["age_seconds"] <= self.stale_after]
        for state in events.REPLICA_STATES:
            workers.add_metric([state], sum(1 for replica in fresh if replica.get("state") == state))
        yield workers
        restarts = CounterMetricFamily(
            "gaze_generator_worker_restarts",
            "Worker processes a replica replaced (crashed, stuck or past a job's time limit) since it started",
            labels=["replica"])
        for replica in fresh:
            restarts.add_metric([replica["replica"]], replica.get("restarts") or 0)
        yield restarts
        yield from self._scheduling(data, fresh)
        if data.get("dead_letters") is not None:    # a jobs service from before issue 16 answers without it
            dead = CounterMetricFamily("gaze_dead_letters",
                                       "Messages RabbitMQ dead-lettered (a queue's delivery limit reached: their"
                                       " consumers died each time), as the jobs service recorded them")
            dead.add_metric([], data["dead_letters"])
            yield dead

    def _scheduling(self, data, fresh):
        """Checkpoint-aware scheduling: what waits in which line, and what the replicas hold, serve and load.
        A jobs service from before it answers without these keys: their metrics are left out, not zero."""
        if data.get("backlog") is not None:
            backlog = GaugeMetricFamily(
                "gaze_backlog_jobs",
                "Jobs waiting for a generator (pending, not reserved by a replica) over every line, however"
                " many checkpoint queues there are: the metric to autoscale generator replicas on")
            backlog.add_metric([], data["backlog"])
            yield backlog
        lines = data.get("lines")
        if lines is not None:
            waiting = GaugeMetricFamily("gaze_checkpoint_backlog_jobs",
                                        "Jobs waiting for a generator, by the checkpoint they need (their line)",
                                        labels=["checkpoint"])
            oldest = GaugeMetricFamily("gaze_checkpoint_oldest_wait_seconds",
                                       "How long the longest-waiting job of each checkpoint's line has waited",
                                       labels=["checkpoint"])
            for line in lines:
                waiting.add_metric([line["checkpoint"]], line.get("waiting") or 0)
                oldest.add_metric([line["checkpoint"]], line.get("oldest_wait_seconds") or 0.0)
            yield waiting
            yield oldest
        loads = CounterMetricFamily(
            "gaze_replica_checkpoint_loads",
            f"Checkpoint loads (its worker changed the model it holds) by each replica heard from within"
            f" {self.stale_after:g} s, since the replica started", labels=["replica"])
        load_seconds = CounterMetricFamily(
            "gaze_replica_checkpoint_load_seconds",
            "Seconds the replica's worker spent loading checkpoints, since the replica started", labels=["replica"])
        holds = GaugeMetricFamily(
            "gaze_replica_checkpoint",
            "1 for the checkpoint each replica's worker has loaded (role=loaded) and the checkpoint whose"
            " line it takes work from (role=serving); none while it holds or serves none",
            labels=["replica", "checkpoint", "role"])
        for replica in fresh:
            loads.add_metric([replica["replica"]], replica.get("loads") or 0)
            load_seconds.add_metric([replica["replica"]], replica.get("load_seconds_total") or 0.0)
            for role, key in (("loaded", "loaded_checkpoint"), ("serving", "serving")):
                checkpoint = replica.get(key)
                if checkpoint:
                    holds.add_metric([replica["replica"], checkpoint, role], 1)
        yield loads
        yield load_seconds
        yield holds


class GatewayMetrics:
    """The gateway's metrics: the middleware that counts requests and what a scrape exposes.
    Create one per process (create_app does): two HttpMetrics in one process would write the same
    multiprocess file entries over each other."""

    def __init__(self, probes, settings, static_prefixes=()):
        self.multiprocess_dir = multiprocess_dir()
        self.own_registry = CollectorRegistry()
        self.http = HttpMetrics(None if self.multiprocess_dir else self.own_registry, static_prefixes)
        self.dependencies = DependencyCollector(probes, settings.status_interval_seconds)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        if self.multiprocess_dir:
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        else:
            registry.register(_Forward(self.own_registry))
        registry.register(self.dependencies)
        return registry

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry()), content_type


class _Forward:
    def __init__(self, registry):
        self.source = registry

    def describe(self):
        return []

    def collect(self):
        return self.source.collect()


class MetricsResource:
    """GET /metrics: no API key. With GAZE_METRICS_TOKEN set it wants `Authorization: Bearer <token>` (401
    without); with none it answers only callers on the loopback (ops/auth.py: metrics_allowed) and is a
    404 for everyone else, as if it were not there: it tells anyone the request volumes, the queue depth
    and how many generators are up, and a scrape reads the jobs service and the broker."""

    def __init__(self, metrics: GatewayMetrics, token: str = ""):
        self.metrics = metrics
        self.token = token

    def on_get(self, req, resp):
        if not metrics_allowed(req, self.token):
            if not self.token:
                raise falcon.HTTPNotFound()
            raise ApiError(falcon.HTTP_401, "metrics need 'Authorization: Bearer <GAZE_METRICS_TOKEN>'",
                           "Authorization", headers={"WWW-Authenticate": 'Bearer realm="gaze-metrics"'})
        resp.cache_control = ["no-store"]
        resp.data, resp.content_type = self.metrics.exposition(req.get_header("Accept"))
