"""A three-node RabbitMQ cluster of the test's own on this machine (issue 16): Debian's RabbitMQ scripts
(/usr/lib/rabbitmq/bin, not the /usr/sbin wrappers, which switch to the rabbitmq user when run as root)
started as gaze-rmq-<n>@localhost with their own AMQP and distribution ports, data, logs, config, an empty
plugin list and one Erlang cookie for the three nodes and for the CLI. The machine's RabbitMQ (its node
name, data directory and config) stays untouched; only epmd is shared.

    with RabbitCluster(tmp_path / "rabbit") as cluster:
        cluster.add_vhost("gaze")
        uri = cluster.uri("gaze")        # amqp://...:5701/gaze;amqp://...:5702/gaze;... (kombu failover)
        node = cluster.leader("gaze.generate", "gaze")
        cluster.stop_node(node)          # the node's Erlang VM exits
        cluster.start_node(node)         # back, rejoined and running

Every wait polls its condition with a deadline; leaving the context stops every node (and kills what is
left by its pid) even after a failure, then removes the directory."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.faults.harness import wait_for

NODE_PREFIX = "gaze-rmq-"     # the nodes are gaze-rmq-1@localhost ...

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
HOST = "127.0.0.1"
NODES = 3
FIRST_AMQP_PORT = 5701
FIRST_DIST_PORT = 25701
START_SECONDS = 90          # per wait: a node's boot, a join, the cluster seeing its members run
STOP_SECONDS = 60
CTL_SECONDS = 60


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_ports(first: int, count: int, taken=()) -> list[int]:
    """`count` free ports from `first` up (not in `taken`)."""
    ports, port = [], first
    while len(ports) < count:
        if port not in taken and port_free(port):
            ports.append(port)
        port += 1
        if port > first + 1000:
            raise RuntimeError(f"no {count} free ports from {first}")
    return ports


@dataclass
class Node:
    index: int
    name: str               # gaze-rmq-<n>@localhost
    amqp_port: int
    dist_port: int
    home: Path
    process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.home / "stdout.log"

    def alive(self) -> bool:
        """Whether the node's process group (rabbitmq-server's shell, the Erlang VM it starts) still runs."""
        return self.process is not None and self.process.poll() is None

    def wait_gone(self, timeout: float):
        """Until nothing of the node's process group is left (the VM outlives the shell by a moment)."""
        def gone():
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            return False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        wait_for(gone, timeout, f"{self.name}'s processes to exit", interval=0.1)


def kill_leftover_nodes():
    """SIGKILL the Erlang VMs of nodes an earlier run of this harness left behind (a test killed by its
    time limit skips its clean-up): their names, ports and Erlang distribution would refuse the new nodes
    (duplicate_node_name). Found by the node name in each VM's environment; the machine's own RabbitMQ
    (another name) is never touched."""
    for pid in subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True).stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(entry.startswith(f"RABBITMQ_NODENAME={NODE_PREFIX}".encode()) for entry in environ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


class RabbitCluster:
    """Three RabbitMQ nodes clustered with node 1; a context manager (see the module docstring)."""

    def __init__(self, directory: Path, nodes: int = NODES):
        self.directory = Path(directory)
        self.cookie = uuid.uuid4().hex
        amqp_ports = free_ports(FIRST_AMQP_PORT, nodes)
        # the distribution port must also leave room for the CLI's own range (35672..35682) and never be an
        # AMQP port of ours
        dist_ports = free_ports(FIRST_DIST_PORT, nodes, taken=amqp_ports)
        self.nodes = [Node(i, f"{NODE_PREFIX}{i}@localhost", amqp_ports[i - 1], dist_ports[i - 1],
                           self.directory / f"node{i}") for i in range(1, nodes + 1)]
        self.start_seconds = 0.0      # how long __enter__ took: nodes booted, clustered, all running

    # --- the environment every script runs with ---------------------------------------------------------

    def _write_files(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        home = self.directory / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (self.directory / "enabled_plugins").write_text("[].\n")
        # an env file of our own: the default one (/etc/rabbitmq/rabbitmq-env.conf) names the system node
        (self.directory / "rabbitmq-env.conf").write_text("")
        for node in self.nodes:
            (node.home / "log").mkdir(parents=True, exist_ok=True)
            (node.home / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = {HOST}:{node.amqp_port}\n")

    def _env(self, node: Node | None = None) -> dict:
        env = dict(os.environ,
                   HOME=str(self.directory / "home"),
                   RABBITMQ_CONF_ENV_FILE=str(self.directory / "rabbitmq-env.conf"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(self.directory / "enabled_plugins"),
                   RABBITMQ_CTL_ERL_ARGS=f"-setcookie {self.cookie}",
                   ERL_EPMD_ADDRESS=HOST,
                   # a VM that dies at boot writes its erl_crash.dump here, not into the caller's directory
                   ERL_CRASH_DUMP=str(self.directory / "erl_crash.dump"))
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_NODE_IP_ADDRESS=HOST,
                RABBITMQ_NODE_PORT=str(node.amqp_port),
                RABBITMQ_DIST_PORT=str(node.dist_port),
                RABBITMQ_CONFIG_FILE=str(node.home / "rabbitmq.conf"),
                RABBITMQ_ADVANCED_CONFIG_FILE=str(node.home / "advanced.config"),
                RABBITMQ_MNESIA_BASE=str(node.home / "mnesia"),
                RABBITMQ_MNESIA_DIR=str(node.home / "mnesia" / node.name),
                RABBITMQ_LOG_BASE=str(node.home / "log"),
                RABBITMQ_PID_FILE=str(node.home / "pid"),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                    f"-setcookie {self.cookie} -kernel inet_dist_use_interface {{127,0,0,1}}"))
        return env

    def ctl(self, node: Node | str, *args, check=True, timeout=CTL_SECONDS, tool="rabbitmqctl"):
        """`rabbitmqctl -n <node> <args>` (or rabbitmq-queues, ...) with the cluster's cookie."""
        name = node.name if isinstance(node, Node) else node
        result = subprocess.run([str(RABBITMQ_BIN / tool), "-q", "-n", name, "--erlang-cookie", self.cookie,
                                 *args], capture_output=True, text=True, timeout=timeout, env=self._env(),
                                cwd=self.directory)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} -n {name} {' '.join(args)}: rc {result.returncode}\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def node(self, which: int | str) -> Node:
        """A node by its index (1..3) or its name."""
        for node in self.nodes:
            if which in (node.index, node.name):
                return node
        raise KeyError(which)

    # --- lifecycle ------------------------------------------------------------------------------------

    def _launch(self, node: Node):
        with open(node.log, "ab") as out:
            node.process = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], stdout=out,
                                            stderr=subprocess.STDOUT, env=self._env(node),
                                            cwd=self.directory, start_new_session=True)

    def _await_startup(self, node: Node):
        """Until the node's app runs (`await_startup` blocks until then; retried while the VM is not up yet)."""
        def started():
            if not node.alive():
                raise AssertionError(f"{node.name} exited (rc {node.process.returncode}):\n"
                                     f"{node.log.read_text(errors='replace')[-3000:]}")
            return self.ctl(node, "await_startup", "--timeout", "10", check=False, timeout=30).returncode == 0
        wait_for(started, START_SECONDS, f"{node.name} to start", interval=0.5)

    def running_nodes(self, via: Node | None = None) -> set[str]:
        """The names of the running cluster members, as one node sees them."""
        for node in ([via] if via else self.nodes):
            if not node.alive():
                continue
            result = self.ctl(node, "eval", "rabbit_nodes:all_running().", check=False, timeout=30)
            if result.returncode == 0:
                return set(result.stdout.strip().strip("[]").replace("'", "").split(","))
        return set()

    def start(self):
        started = time.monotonic()
        kill_leftover_nodes()
        self._write_files()
        for node in self.nodes:             # in parallel: each boots standalone, then 2.. join node 1
            self._launch(node)
        for node in self.nodes:
            self._await_startup(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        everyone = {node.name for node in self.nodes}
        wait_for(lambda: self.running_nodes(first) == everyone, START_SECONDS, f"{everyone} to run as one cluster")
        self.start_seconds = round(time.monotonic() - started, 1)
        return self

    def stop_node(self, which, kill: bool = False):
        """Stop a node's Erlang VM: `rabbitmqctl stop` (a clean shutdown: clients get connection.close,
        the peers a goodbye) or, with kill, SIGKILL to its process group (the node dies mid-sentence).
        Either way the VM is gone on return, unlike `stop_app`, which leaves it up, still connected to the
        peers."""
        node = self.node(which)
        if not node.alive():
            return
        if kill:
            os.killpg(node.process.pid, signal.SIGKILL)
        else:
            self.ctl(node, "stop", check=False, timeout=STOP_SECONDS)
        try:
            node.wait_gone(STOP_SECONDS)
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.wait_gone(STOP_SECONDS)

    def start_node(self, which):
        """Start a stopped node again (same name, ports and data: it rejoins the cluster by itself) and wait
        until every node runs as one cluster."""
        node = self.node(which)
        assert not node.alive(), f"{node.name} still runs"
        self._launch(node)
        self._await_startup(node)
        everyone = {n.name for n in self.nodes}
        wait_for(lambda: self.running_nodes(node) == everyone, START_SECONDS, f"{node.name} to rejoin {everyone}")

    def close(self):
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.stop_node(node.index)
        for node in self.nodes:            # whatever is left of a node's process group (epmd is not in it)
            if node.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    # --- what tests ask ---------------------------------------------------------------------------------

    def running(self) -> list[Node]:
        return [node for node in self.nodes if node.alive()]

    def any_running(self) -> Node:
        running = self.running()
        assert running, "no node of the cluster runs"
        return running[0]

    def add_vhost(self, vhost: str):
        node = self.any_running()
        self.ctl(node, "add_vhost", vhost)
        self.ctl(node, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def uri(self, vhost: str = "/") -> str:
        """kombu's failover syntax: every node's AMQP address, `;`-separated."""
        path = quote(vhost, safe="")
        return ";".join(f"amqp://guest:guest@{HOST}:{node.amqp_port}/{path}" for node in self.nodes)

    def queues(self, vhost: str = "/") -> dict:
        """{queue name: {"type": ..., "leader": node name, "messages": n}} of a vhost. A quorum queue's leader
        as the cluster reports it; a classic queue's is the node it lives on (`list_queues --local` of each
        running node), "" while that node is down."""
        def listed(node, *flags):
            return json.loads(self.ctl(node, "list_queues", "-p", vhost, "name", "type", "leader", "messages",
                                       "--formatter", "json", *flags).stdout or "[]")
        queues = {q["name"]: {"type": q.get("type", ""), "leader": q.get("leader") or "",
                              "messages": q.get("messages") or 0}
                  for q in listed(self.any_running())}
        if any(not q["leader"] for q in queues.values()):
            for node in self.running():
                for local in listed(node, "--local"):
                    if local["name"] in queues and not queues[local["name"]]["leader"]:
                        queues[local["name"]]["leader"] = node.name
        return queues

    def leader(self, queue: str, vhost: str = "/") -> str:
        """The node leading a quorum queue (a classic queue: the node it lives on)."""
        return self.queues(vhost)[queue]["leader"]
