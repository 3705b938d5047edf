#!/usr/bin/env python3
"""The Celery peer of bench/scaling.py: the same simulated GPU jobs through a plain Celery pool.

    .venv/bin/pip install -e '.[bench]'          # celery
    .venv/bin/python bench/celery_peer.py --replicas 4 --jobs 500 --gpu-seconds 0.2

R Celery worker processes (`--pool solo`: one task at a time in the worker process itself, as one GPU;
`--prefetch-multiplier 1`, `acks_late`: Celery's own advice for long tasks) consume from RabbitMQ (a vhost
of their own) a task that does what GAZE's `simulated` backend does: block for exactly T seconds with the
64×64 preview drawn inside it, then write the PNG to a directory. Results go to Redis. Makespan: just
before the first apply_async → the last task's own finish time (the same machine's clock); efficiency =
(N / makespan) / (R / T), as in bench/scaling.py. What Celery does not do here and GAZE does: an HTTP
API, a job row per job in PostgreSQL, a claim RPC, job events and a read model.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402

QUEUE = "gaze_peer"
app = Celery("gaze_peer", broker=os.environ.get("GAZE_PEER_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
             backend=os.environ.get("GAZE_PEER_BACKEND", "redis://127.0.0.1:6379/15"))
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue=QUEUE,
                result_expires=3600, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="gaze_peer.generate")
def generate(spec: dict, out_dir: str) -> dict:
    from services.generator.backends.simulated import SimulatedGpuBackend
    from shared.schemas import GenerationSpec

    started = time.time()
    image = SimulatedGpuBackend(float(os.environ["GAZE_PEER_GPU_SECONDS"])).generate(GenerationSpec(**spec))
    Path(out_dir, f"{uuid.uuid4().hex}.png").write_bytes(image.png)
    return {"started": started, "finished": time.time(), "worker": os.getpid()}


def spec(seed):
    return {"preset_slug": "example_01", "preset_name": "Example", "prompt": "a lighthouse at dusk",
            "negative": "blurry", "checkpoint": "SD15/v1-5-pruned-emaonly.safetensors", "width": 64, "height": 64,
            "steps": 1, "cfg": 6.0, "sampler": "euler", "seed": seed}


def run(replicas: int, jobs: int, gpu_seconds: float) -> dict:
    from bench.stack import BROKER, rabbitmqctl

    vhost = f"gaze_peer_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    broker = f"{BROKER}/{quote(vhost, safe='')}"
    out_dir = tempfile.mkdtemp(prefix="gaze-celery-")
    env = dict(os.environ, GAZE_PEER_BROKER=broker, GAZE_PEER_GPU_SECONDS=str(gpu_seconds),
               PYTHONPATH=str(ROOT))
    app.conf.broker_url = broker
    workers = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker", "--pool", "solo",
                                 "--prefetch-multiplier", "1", "-Q", QUEUE, "-n", f"peer{n}@%h", "--loglevel", "WARNING",
                                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for n in range(replicas)]
    try:
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=1.0) or []) < replicas:
            if time.monotonic() > deadline:
                raise SystemExit("the Celery workers did not all answer a ping")
        for result in [generate.delay(spec(n), out_dir) for n in range(2 * replicas)]:   # warm-up
            result.get(timeout=60)
        first = time.time()
        results = [generate.delay(spec(1000 + n), out_dir) for n in range(jobs)]
        finished = [result.get(timeout=60 + 3 * jobs * gpu_seconds / replicas) for result in results]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        rabbitmqctl("delete_vhost", vhost)
    makespan = max(f["finished"] for f in finished) - first
    per_worker = {}
    for f in finished:
        per_worker[f["worker"]] = per_worker.get(f["worker"], 0) + 1
    return {"replicas": replicas, "jobs": jobs, "makespan": makespan, "throughput": jobs / makespan,
            "efficiency": (jobs / makespan) / (replicas / gpu_seconds), "per_replica": sorted(per_worker.values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[4])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--gpu-seconds", type=float, default=0.2)
    args = parser.parse_args()
    for replicas in args.replicas:
        result = run(replicas, args.jobs, args.gpu_seconds)
        print(f"R={replicas}: makespan {result['makespan']:.2f} s, efficiency {result['efficiency']:.3f}, "
              f"per worker {result['per_replica']}")


if __name__ == "__main__":
    main()
