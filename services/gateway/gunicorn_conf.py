"""gunicorn settings for the gateway, from the same environment as everything else."""
import os
import traceback
from pathlib import Path

from gunicorn import glogging

from shared import logs
from services.gateway import access_log
from shared.config import load as _load_settings

_settings = _load_settings()

bind = _settings.bind
workers = _settings.gateway_workers
# uvicorn workers: requests that wait or stream hold a coroutine, not a thread; all others run in the WSGI
# app on GAZE_GATEWAY_THREADS threads per worker, as under gthread before (services/gateway/hold/)
worker_class = "services.gateway.hold.worker.GatewayWorker"
threads = _settings.gateway_threads
# Each worker builds its own database pool and RPC proxies after the fork.
preload_app = False
accesslog = "-"
# The access log must never carry a key given as ?api_key=: log the path without the query string.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


class GunicornLogger(glogging.Logger):
    """gunicorn's error and access logs as GAZE's structured lines (shared/logs.py, GAZE_LOG_FORMAT).
    An access line's msg is `access_log_format` (no query string), and its fields are the same
    parts plus the job id of /api/v1/job/<id> requests; the query string is never among them."""

    def setup(self, cfg):
        super().setup(cfg)
        line_format = logs.formatter("gateway", _settings.log_format)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(line_format)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        fields = access_log.fields(atoms["m"], atoms["U"] or "", atoms["s"], atoms["B"], atoms["M"], atoms["h"])
        try:
            self.access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms), extra=fields)
        except Exception:  # noqa: BLE001 - as gunicorn's own access(): a bad line must not fail the request
            self.error(traceback.format_exc())


logger_class = GunicornLogger
graceful_timeout = 20
timeout = 60
# gunicorn's runtime control socket is one fixed path per user: two stacks on one machine (a dev stack
# and the test suite's) would fight over it, and nothing here uses it.
control_socket_disable = True

# Prometheus multiprocess mode (see services/gateway/ops/metrics.py and README "Observability"): every worker
# writes its request counters to mmap'ed files in one directory and /metrics sums them over all workers.
# The variable must be set before any worker imports prometheus_client (workers inherit it from this,
# the master); the directory lives under GAZE_RUN_DIR, which `gaze up` sets.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(Path(_settings.run_dir) / "prometheus"))


def on_starting(server):
    """Once, in the master, before any worker starts: empty the metrics directory. Files left by an
    earlier gunicorn would otherwise be summed into this one's counters (Prometheus handles the reset
    of a restarted process's counters; it cannot handle stale ones)."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("*.db"):
        leftover.unlink()


def child_exit(server, worker):
    """A worker is gone: drop its live gauges' files (its counters stay, summed into the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
