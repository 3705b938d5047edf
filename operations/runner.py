"""Runs one GAZE nameko service in this process: `python -m operations.runner jobs`.

Patches eventlet (and picks psycopg's cooperative wait) before anything imports psycopg, builds the
nameko config from the environment once, and hands over to nameko's own runner (graceful stop on
SIGTERM: running workers finish, unacked messages go back to the queue)."""
from __future__ import annotations

import sys

# A GPU runs one job at a time (BackendRunner serialises them), but a replica holds
# GAZE_GENERATOR_PREFETCH unacknowledged jobs (nameko's max_workers is also its prefetch count): with 2,
# the next job is delivered and claimed while the current one generates, so the GPU does not wait a
# broker round trip plus a claim between jobs. 1 = strictly one job per replica at a time.
def per_service(name, settings):
    return {"max_workers": settings.generator_prefetch} if name == "generator" else {}


def run(name: str) -> None:
    import signal

    from shared.green import dump_green_threads_on, patch

    patch()
    dump_green_threads_on(signal.SIGUSR2)
    from nameko.cli.run import run as nameko_run

    from shared import config, logs
    from operations.registry import NAMEKO_SERVICES, SERVICES

    if name not in NAMEKO_SERVICES:
        raise SystemExit(f"unknown service {name!r}; choose one of {', '.join(NAMEKO_SERVICES)}")
    settings = config.load()
    logs.configure(name, settings)   # structured lines (GAZE_LOG_FORMAT), nameko's and kombu's included
    service_cls = SERVICES[name].nameko_class()
    nameko_run([service_cls], settings.nameko_config(**per_service(name, settings)))


if __name__ == "__main__":
    run(sys.argv[1])
