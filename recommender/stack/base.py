"""Machinery shared by the embedded services: Java lookup, Maven classpaths, processes.

Each service module (``kafka``, ``cassandra``, ``elasticsearch``) only says what differs:
its artifacts, its config files, its command line and how to ask it whether it is ready.
Everything about pids, logs, ports and waiting lives here, once.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from recommender.errors import StackError
from recommender.settings import StackSettings

STACK_DIR = Path(__file__).resolve().parents[2] / "stack"
TEMPLATES = STACK_DIR / "templates"
UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class ServiceStatus:
    """What ``stack status --json`` reports for one service."""

    name: str
    up: bool
    version: str
    host: str
    port: int
    pid: int | None
    data_dir: str
    log_file: str


def find_java(settings: StackSettings) -> Path:
    """A JDK 17 ``java``: the one every service supports (Cassandra 5 runs on 11/17 only)."""
    candidates = [settings.java_home] if settings.java_home else []
    candidates += [Path(p) for p in filter(None, [os.environ.get("JAVA_HOME")])]
    candidates += sorted(Path("/usr/lib/jvm").glob("*17*")) if Path("/usr/lib/jvm").exists() else []
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path).resolve().parents[1])
    for home in candidates:
        java = Path(home) / "bin" / "java"
        if java.exists() and java_major(java) == 17:
            return java
    raise StackError(
        "A JDK 17 is required (Cassandra 5.0 runs only on Java 11/17; Kafka 4 needs 17+). "
        "Install it (Debian: apt-get install openjdk-17-jdk-headless) or set "
        "RECOMMENDER_STACK__JAVA_HOME to its directory."
    )


def java_major(java: Path) -> int | None:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 else major


def maven_classpath(artifact_set: str, cache_dir: Path) -> list[Path]:
    """The runtime jars of ``stack/<artifact_set>/pom.xml``, resolved once and cached.

    Later runs read the cached list and need neither Maven nor the network, as long as the
    jars are still in the local Maven repository.
    """
    cached = cache_dir / "classpath" / f"{artifact_set}.txt"
    if cached.exists():
        jars = [Path(p) for p in cached.read_text().strip().split(os.pathsep) if p]
        if jars and all(j.exists() for j in jars):
            return jars
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(
            "Maven is required once to fetch the service jars from Maven Central "
            "(Debian: apt-get install maven)."
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    pom = STACK_DIR / artifact_set / "pom.xml"
    cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath",
           f"-Dmdep.outputFile={cached}", "-Dmdep.includeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stdout[-2000:] + result.stderr[-2000:]
        raise StackError(f"Maven could not resolve {pom}:\n{output}")
    return [Path(p) for p in cached.read_text().strip().split(os.pathsep) if p]


def pinned_version(artifact_set: str, artifact_id: str) -> str:
    """The version ``stack/<artifact_set>/pom.xml`` pins, so the pom stays the one source."""
    pom = (STACK_DIR / artifact_set / "pom.xml").read_text()
    match = re.search(rf"<artifactId>{re.escape(artifact_id)}</artifactId><version>([^<]+)", pom)
    if not match:
        raise StackError(f"{artifact_id} has no pinned version in stack/{artifact_set}/pom.xml")
    return match.group(1)


def render(*templates: str, **values: object) -> str:
    """``stack/templates/<name>`` files, placeholders filled in, one after the other (a
    service's shared config, then its plain or secure part)."""
    return "".join(Template((TEMPLATES / name).read_text()).substitute(values)
                   for name in templates)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Service(ABC):
    """One embedded server process: the subclass supplies artifacts, config and readiness."""

    name: str
    version: str
    host = "127.0.0.1"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
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
            name=self.name, up=up, version=self.server_version() if up else self.version,
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
