"""Machinery shared by the embedded services: service processes, config templates, waiting.

Each service module (``kafka``, ``cassandra``, ``elasticsearch``, ``spark``) only says what
differs: its artifacts, its config files, its command line and how to ask it whether it is
ready. Everything about pids, logs, ports and waiting lives here, once.

A cluster (``stack.nodes`` > 1) runs node ``n`` of every kind on its own loopback address,
127.0.0.n, as ccm does for Cassandra: the same ports on each, its own home, data and logs.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from recommender.errors import StackError
from recommender.runtime import (  # noqa: F401  (re-exported for stack/ modules)
    STACK_DIR,
    find_java,
    java_major,
    maven_classpath,
    pid_alive,
    pinned_version,
    tail,
)
from recommender.settings import StackSettings

TEMPLATES = STACK_DIR / "templates"
UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class ServiceStatus:
    """What ``stack status --json`` reports for one server process."""

    name: str
    kind: str
    node: int
    role: str
    up: bool
    version: str
    host: str
    port: int
    pid: int | None
    data_dir: str
    log_file: str


def node_host(node: int) -> str:
    """Node ``n`` of a kind listens on 127.0.0.n (all of 127.0.0.0/8 is loopback on Linux)."""
    return f"127.0.0.{node}"


def render(*templates: str, **values: object) -> str:
    """``stack/templates/<name>`` files, placeholders filled in, one after the other (a
    service's shared config, then its plain or secure part)."""
    return "".join(Template((TEMPLATES / name).read_text()).substitute(values)
                   for name in templates)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Service(ABC):
    """One embedded server process: the subclass supplies artifacts, config and readiness.

    ``node`` numbers the servers of one kind from 1; a single-node stack has node 1 only,
    named after its kind (``kafka``), a cluster's are ``kafka-1``, ``kafka-2`` ..."""

    kind: str
    version: str
    role: str
    memory_overhead_mb = 300  # resident memory beyond the heap, for the pre-start check

    def __init__(self, settings: StackSettings, node: int = 1) -> None:
        self.settings = settings
        self.node = node
        self.name = self.kind if settings.nodes == 1 else f"{self.kind}-{node}"
        self.host = node_host(node)
        self.home = settings.state_dir / self.name
        self.data_dir = self.home / "data"
        self.log_file = self.home / "logs" / f"{self.name}.out"
        self.pid_file = self.home / f"{self.name}.pid"

    @property
    @abstractmethod
    def port(self) -> int:
        """The client port."""

    @property
    def ports(self) -> list[int]:
        """Every port the service binds; all must be free before it starts."""
        return [self.port]

    @property
    def peers(self) -> list[str]:
        """The hosts of every node of this kind, this one included."""
        return [node_host(n) for n in range(1, self.settings.nodes + 1)]

    @property
    @abstractmethod
    def heap(self) -> str:
        """The JVM heap (``-Xmx``) this server runs with."""

    def memory_mb(self) -> int:
        """Resident memory to expect: heap plus the JVM's and the server's own overhead."""
        return megabytes(self.heap) + self.memory_overhead_mb

    @property
    def run_as(self) -> str | None:
        """A user to drop to when started as root (Elasticsearch refuses root)."""
        return None

    @abstractmethod
    def prepare(self, java: Path) -> None:
        """Fetch artifacts and write config files; idempotent."""

    @abstractmethod
    def command(self, java: Path) -> tuple[list[str], dict[str, str]]:
        """The command line and extra environment that start the server in the foreground."""

    @abstractmethod
    def ready(self) -> bool:
        """Does the server really answer (a protocol-level request, not just an open port)?"""

    def server_version(self) -> str:
        return self.version

    # --- lifecycle, shared by every service -------------------------------------------------

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def status(self) -> ServiceStatus:
        pid = self.pid()
        up = self.safe_ready()
        return ServiceStatus(
            name=self.name, kind=self.kind, node=self.node, role=self.role, up=up,
            version=self.server_version() if up else self.version,
            host=self.host, port=self.port, pid=pid, data_dir=str(self.data_dir),
            log_file=str(self.log_file),
        )

    def safe_ready(self) -> bool:
        try:
            return self.ready()
        except Exception:  # noqa: BLE001 - any failure to answer means "not ready"
            return False

    def busy_ports(self) -> list[int]:
        return [p for p in self.ports if port_in_use(self.host, p)]

    def start(self, java: Path) -> int:
        self.prepare(java)
        cmd, env = self.command(java)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        user = self.run_as if os.geteuid() == 0 else None
        identity: dict = {}
        if user:
            self.chown_home(user)
            entry = pwd.getpwnam(user)
            identity = {"user": entry.pw_uid, "group": entry.pw_gid,
                        "extra_groups": os.getgrouplist(user, entry.pw_gid)}
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.home, env={**os.environ, **env}, start_new_session=True, **identity,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def chown_home(self, user: str) -> None:
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(self.home):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid,
                         follow_symlinks=False)
        os.chown(self.home, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.safe_ready():
                return
            pid = self.pid()
            if pid is None:
                raise StackError(
                    f"{self.name} exited during startup. Last lines of {self.log_file}:\n"
                    f"{tail(self.log_file)}"
                )
            time.sleep(1.0)
        raise StackError(
            f"{self.name} did not answer within {self.settings.startup_timeout_s:.0f}s. "
            f"Last lines of {self.log_file}:\n{tail(self.log_file)}"
        )

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM the process group we started (by pid), SIGKILL after ``timeout``."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        # The JVM's main thread exits before its last threads release their sockets: wait for
        # the ports too, so that a `down` followed by an `up` finds them free.
        while self.busy_ports() and time.monotonic() < deadline + 10:
            time.sleep(0.2)
        self.pid_file.unlink(missing_ok=True)
        return True

    def as_json(self) -> str:
        return json.dumps(asdict(self.status()))


def megabytes(size: str) -> int:
    """A JVM size (``512m``, ``1G``, ``768M``) in MiB."""
    units = {"k": 1 / 1024, "m": 1, "g": 1024}
    return int(float(size[:-1]) * units[size[-1].lower()]) if size[-1].isalpha() else \
        int(size) // (1 << 20)
