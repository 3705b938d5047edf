#!/usr/bin/env python3
"""How fast the library page renders with many presets and images, against a running stack.

    .venv/bin/python bench/library_page.py --url http://localhost:5782 --password ADMIN_PW \
        --database-url postgresql://postgres@127.0.0.1:5432/gaze --presets 300 --images 3000

Inserts `--presets` presets (slug bench_NNNN) and `--images` finished jobs spread over them straight
into the presets and jobs schemas (the image files need not exist: only the page is timed), then times
GET / and one preset page. `--cleanup` removes the bench rows afterwards.
"""
import argparse
import json
import re
import statistics
import time
import uuid

import psycopg
import requests


def seed(database_url, presets, images):
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO presets.presets (slug, name, prompt, checkpoint, width, height, steps, cfg, sampler)"
                " VALUES (%s, %s, 'bench', 'Illustrious/model.safetensors', 512, 512, 20, 6, 'euler')"
                " ON CONFLICT DO NOTHING",
                [(f"bench_{i:04d}", f"Bench {i}") for i in range(presets)])
            rows = []
            for n in range(images):
                slug = f"bench_{n % presets:04d}"
                job_id = str(uuid.uuid4())
                path = f"presets/{slug}/gen_1_{job_id.replace('-', '')}.png"
                result = {"image_url": "/static/uploads/" + path, "relative_path": path, "seed": n,
                          "width": 512, "height": 512}
                rows.append((job_id, slug, json.dumps(result)))
            cur.executemany(
                "INSERT INTO jobs.jobs (id, preset_slug, label, spec, seed, status, result, finished_at)"
                " VALUES (%s, %s, 'bench', '{}', 0, 'done', %s, now())", rows)


def cleanup(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM jobs.jobs WHERE preset_slug LIKE 'bench\\_%'")
        conn.execute("DELETE FROM presets.presets WHERE slug LIKE 'bench\\_%'")


def timed(session, url, n):
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = session.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return times, response.text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://localhost:5782")
    parser.add_argument("--password", required=True)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/gaze")
    parser.add_argument("--presets", type=int, default=300)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cleanup", action="store_true")
    args = parser.parse_args()
    seed(args.database_url, args.presets, args.images)
    session = requests.Session()
    page = session.get(f"{args.url}/login").text
    token = re.search(r'name="login_token" value="([^"]+)"', page).group(1)
    session.post(f"{args.url}/login", data={"login_token": token, "password": args.password, "next": "/"})
    for name, path in (("library /", "/"), ("preset page", "/presets/bench_0001")):
        times, html = timed(session, args.url + path, args.runs)
        lazy = html.count('loading="lazy"')
        print(f"{name:12s} p50 {statistics.median(times) * 1000:6.1f} ms  max {max(times) * 1000:6.1f} ms"
              f"  ({len(html) // 1024} KiB, {lazy} lazy images)")
    if args.cleanup:
        cleanup(args.database_url)


if __name__ == "__main__":
    main()
