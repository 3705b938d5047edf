"""Readiness and liveness of a nameko service's pod (presets, jobs, webhooks) in Kubernetes: exit 0 when the
pod holds an established TCP connection to a broker port of GAZE_AMQP_URI, else 1 with the reason.

These services open no port of their own. What tells the truth about one is its broker connection: nameko
takes its RPCs and events over it, so a service without one serves nothing, and a wedged process loses it
for good (the broker closes a connection that misses its heartbeats, GAZE_HEARTBEAT, and a process that
does not run cannot open a new one). The pod has its own network namespace, so /proc/net/tcp and tcp6 list
this pod's sockets only. Run inside the image (deploy/Dockerfile copies deploy/ to /app/deploy):
    python /app/deploy/k8s/probes/broker_connected.py
"""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

ESTABLISHED = "01"                  # the state column of /proc/net/tcp
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
AMQP_PORT, AMQPS_PORT = 5672, 5671


def broker_ports(amqp_uri: str) -> set[int]:
    """The port of every broker address in the URI (kombu's failover syntax: addresses separated by ';')."""
    ports = set()
    for address in filter(None, (part.strip() for part in amqp_uri.split(";"))):
        parts = urlsplit(address)
        ports.add(parts.port or (AMQPS_PORT if parts.scheme == "amqps" else AMQP_PORT))
    return ports


def established_remote_ports(tables) -> set[int]:
    """The remote ports of the established TCP connections in `tables` (/proc/net/tcp and tcp6: this network
    namespace's)."""
    ports = set()
    for table in tables:
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:   # no IPv6 in this namespace
            continue
        for row in rows:
            columns = row.split()
            if columns[3] == ESTABLISHED:
                ports.add(int(columns[2].rsplit(":", 1)[1], 16))
    return ports


def main() -> int:
    from shared.config import load

    wanted = broker_ports(load().amqp_uri)
    if wanted & established_remote_ports(TCP_TABLES):
        return 0
    print(f"no established connection to the broker (port {', '.join(map(str, sorted(wanted)))})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
