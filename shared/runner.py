"""Runs one GAZE nameko service in this process: `python -m shared.runner jobs`.

Patches eventlet (and picks psycopg's cooperative wait) before anything imports psycopg, builds the
nameko config from the environment once, and hands over to nameko's own runner (graceful stop on
SIGTERM: running workers finish, unacked messages go back to the queue)."""
from __future__ import annotations

import sys

SERVICES = {
    "presets": ("services.presets.service", "PresetsService"),
    "jobs": ("services.jobs.service", "JobsService"),
    "generator": ("services.generator.service", "GeneratorService"),
}
# A GPU runs one job at a time: max_workers is also nameko's prefetch count, so a generator replica
# holds exactly one unacknowledged job and the queue hands the next one to whichever replica is free.
PER_SERVICE = {"generator": {"max_workers": 1}}


def run(name: str) -> None:
    from shared.green import patch

    patch()
    import importlib
    import logging

    from nameko.cli.run import run as nameko_run

    from shared import config

    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kombu").setLevel(logging.WARNING)
    module, cls = SERVICES[name]
    service_cls = getattr(importlib.import_module(module), cls)
    nameko_run([service_cls], config.load().nameko_config(**PER_SERVICE.get(name, {})))


if __name__ == "__main__":
    run(sys.argv[1])
