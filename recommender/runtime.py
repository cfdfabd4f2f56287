"""Process, JVM, jar and waiting helpers every layer may use (jobs, registry, stack,
benchmarks, tests).

They started in the embedded stack, but the Spark jobs need the same Maven classpath and the
registry and the rollover need the same liveness check; here none of them depends on
``stack/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from recommender.errors import StackError
from recommender.settings import StackSettings

STACK_DIR = Path(__file__).resolve().parents[1] / "stack"


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


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 300,
             poll_s: float = 1.0) -> float:
    """Poll a real signal (a count, a topic, a process) until it holds, never a fixed sleep;
    the seconds it took. ``TimeoutError`` naming ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - started
