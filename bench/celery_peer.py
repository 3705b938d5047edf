#!/usr/bin/env python3
"""The Celery peer of bench/scaling.py: the same simulated GPU jobs through a plain Celery pool.

    .venv/bin/pip install -e '.[bench]'          # celery
    .venv/bin/python bench/celery_peer.py --replicas 4 --jobs 500 --gpu-seconds 0.2

R Celery workers (`--pool prefork --concurrency 1`: one child process runs the tasks, one at a time, as
one GPU; `--prefetch-multiplier 1`, `acks_late`: Celery's own advice for long tasks) consume from RabbitMQ (a vhost
of their own) a task that does what GAZE's `simulated` backend does: block for exactly T seconds with the
64×64 preview drawn inside it, then write the PNG to a directory. Results go to Redis. Makespan: just
before the first apply_async → the last task's own finish time (the same machine's clock); efficiency =
(N / makespan) / (R / T), as in bench/scaling.py. What Celery does not do here and GAZE does: an HTTP
API, a job row per job in PostgreSQL, a claim RPC, job events and a read model.

`--pool solo` (the task run in the consumer process itself; GAZE_PEER_POOL=solo) spread the work badly
here: with 4 workers one took 12 of 200 tasks (efficiency 0.78, one-off observation), so prefork it is.
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
    # a client app of its own per run: the module's app would keep pooled connections to a deleted vhost
    client = Celery("gaze_peer_client", broker=broker, backend=app.conf.result_backend)
    client.conf.update(task_default_queue=QUEUE, result_expires=3600)

    def submit(seed):
        return client.send_task("gaze_peer.generate", args=(spec(seed), out_dir))

    workers = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker", "--pool", os.environ.get("GAZE_PEER_POOL", "prefork"), "--concurrency", "1",
                                 "--prefetch-multiplier", "1", "-Q", QUEUE, "-n", f"peer{n}@%h", "--loglevel", "WARNING",
                                 "--without-gossip", "--without-mingle"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for n in range(replicas)]
    try:
        deadline = time.monotonic() + 60
        while len(client.control.ping(timeout=1.0) or []) < replicas:
            if time.monotonic() > deadline:
                raise SystemExit("the Celery workers did not all answer a ping")
        # warm-up until every worker has run a task: a ping is answered before a worker consumes tasks
        seen, deadline = set(), time.monotonic() + 60
        while len(seen) < replicas:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(seen)} of {replicas} Celery workers took a task")
            seen |= {result.get(timeout=60)["worker"] for result in [submit(n) for n in range(2 * replicas)]}
        first = time.time()
        results = [submit(1000 + n) for n in range(jobs)]
        submitted = time.time()
        finished = [result.get(timeout=60 + 3 * jobs * gpu_seconds / replicas) for result in results]
    finally:
        client.close()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        rabbitmqctl("delete_vhost", vhost)
    makespan = max(f["finished"] for f in finished) - first
    per_worker, gaps = {}, []
    for f in finished:
        per_worker[f["worker"]] = per_worker.get(f["worker"], 0) + 1
    for pid in per_worker:
        runs = sorted((f for f in finished if f["worker"] == pid), key=lambda f: f["started"])
        gaps += [b["started"] - a["finished"] for a, b in zip(runs, runs[1:])]
    gaps.sort()
    return {"replicas": replicas, "jobs": jobs, "makespan": makespan, "throughput": jobs / makespan,
            "efficiency": (jobs / makespan) / (replicas / gpu_seconds), "per_replica": sorted(per_worker.values()),
            "submit_seconds": submitted - first, "gap_ms_p50": gaps[len(gaps) // 2] * 1000 if gaps else 0.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[4])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--gpu-seconds", type=float, default=0.2)
    args = parser.parse_args()
    for replicas in args.replicas:
        result = run(replicas, args.jobs, args.gpu_seconds)
        print(f"R={replicas}: makespan {result['makespan']:.2f} s, efficiency {result['efficiency']:.3f}, "
              f"per worker {result['per_replica']}, gap p50 {result['gap_ms_p50']:.1f} ms, "
              f"submitting took {result['submit_seconds']:.2f} s")


if __name__ == "__main__":
    main()
