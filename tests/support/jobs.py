"""The pipeline's jobs as an operator runs them: ``recommender ingest``, ``predict`` and
``ship`` processes under the project's own ``Supervisor`` (what ``recommender demo`` uses),
all with one test's settings.

``kill`` is a crash: SIGKILL to the job's whole process group (the Python driver, its Spark
JVM and Python workers), then a fresh start that must resume from checkpoints and
committed offsets. With ``watch()`` a watchdog restarts any job that died on its own, as a
supervisor in production would, and records it with the last lines of its log, so a fault
test can report which faults the jobs rode out and which cost them a restart.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from recommender.runtime import pid_alive, tail
from recommender.settings import Settings, as_env
from recommender.supervisor import Job, Supervisor

INGEST = Job("ingest", ("ingest",))
PREDICT = Job("predict", ("predict",))
SHIP = Job("ship", ("ship",))


@dataclass(frozen=True)
class Death:
    """A job that exited without being asked to, and how its log ended."""

    job: str
    at_s: float
    log_tail: str


class Jobs:
    def __init__(self, settings: Settings, run_dir: Path, jobs: list[Job]) -> None:
        self.supervisor = Supervisor(run_dir, env=as_env(settings))
        self.jobs = {job.name: job for job in jobs}
        self.deaths: list[Death] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self._halt = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        for job in self.jobs.values():
            self.supervisor.start(job)

    def alive(self, name: str) -> bool:
        return self.supervisor.pid(name) is not None

    def log_tail(self, name: str, lines: int = 40) -> str:
        return tail(self.supervisor.log_file(name), lines)

    def kill(self, name: str) -> None:
        """SIGKILL the job's process group, wait until it is gone, start it again."""
        with self.lock:
            pid = self.supervisor.pid(name)
            assert pid is not None, f"{name} was not running:\n{self.log_tail(name)}"
            os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
            self.supervisor.start(self.jobs[name])

    def watch(self, every_s: float = 2.0) -> None:
        """Restart jobs that die on their own from now on, recording each death."""
        def loop() -> None:
            while not self._halt.wait(every_s):
                with self.lock:
                    dead = [n for n in self.jobs if not self.alive(n)]
                    self.deaths += [Death(n, round(time.monotonic() - self.started, 1),
                                          self.log_tail(n, 15)) for n in dead]
                    self.supervisor.keep_alive([self.jobs[n] for n in dead])

        self._watchdog = threading.Thread(target=loop, name="watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        """Stop watching, then SIGTERM every job (each finishes its batch), SIGKILL stragglers."""
        self._halt.set()
        if self._watchdog is not None:
            self._watchdog.join()
        with self.lock:
            self.supervisor.stop_all(timeout_s=120)
