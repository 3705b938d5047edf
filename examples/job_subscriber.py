#!/usr/bin/env python3
"""An outside program reacting to GAZE job events: no GAZE code needed, only an AMQP client (kombu).

    python examples/job_subscriber.py                      # print every job event as it happens
    python examples/job_subscriber.py --queue my-app.jobs  # durable queue: no event lost while down
    python examples/job_subscriber.py --max-events 3       # stop after three events

Generators publish on the topic exchange `generator.events` with the event name as routing key
(job_started, job_progress, job_completed, job_failed) and a JSON body; see the README.
"""
import argparse
import os
import sys

from kombu import Connection, Exchange, Queue, binding

EVENTS = Exchange("generator.events", type="topic", durable=True)
ROUTING_KEYS = ("job_started", "job_progress", "job_completed", "job_failed")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-uri", default=os.environ.get("GAZE_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--queue", help="a durable queue name (default: a private queue that lives while we run)")
    parser.add_argument("--events", nargs="+", default=list(ROUTING_KEYS), choices=ROUTING_KEYS)
    parser.add_argument("--max-events", type=int, default=0, help="exit after this many events (0: never)")
    args = parser.parse_args()

    bindings = [binding(EVENTS, routing_key=key) for key in args.events]
    if args.queue:
        queue = Queue(args.queue, bindings=bindings, durable=True)
    else:
        queue = Queue(bindings=bindings, exclusive=True, auto_delete=True)
    seen = 0

    def on_event(body, message):
        nonlocal seen
        event = message.delivery_info["routing_key"]
        if event == "job_completed":
            line = f"{event} {body['job_id']} /static/uploads/{body['relative_path']} seed={body['seed']}"
        elif event == "job_failed":
            line = f"{event} {body['job_id']} error={body['error']!r}"
        elif event == "job_progress":
            line = f"{event} {body['job_id']} {body['value']}/{body['max']}"
        else:
            line = f"{event} {body['job_id']} on {body['replica']}"
        print(line, flush=True)
        message.ack()
        seen += 1

    with Connection(args.amqp_uri) as conn:
        with conn.Consumer(queue, callbacks=[on_event], accept=["json"]):
            print(f"listening on {EVENTS.name} for {', '.join(args.events)}", file=sys.stderr, flush=True)
            while not args.max_events or seen < args.max_events:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    continue
                except KeyboardInterrupt:
                    break


if __name__ == "__main__":
    main()
