"""Background jobs of the all-in-one launcher (``recommender demo``): started detached, with
pid files and logs under one directory, restarted when they die, stopped by pid.

Each job is just a ``recommender <subcommand>`` process, so what the demo runs is exactly
what an operator would run by hand on several machines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from recommender.runtime import pid_alive


@dataclass(frozen=True)
class Job:
    name: str
    args: tuple[str, ...]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "recommender", *self.args]


class Supervisor:
    """Owns the jobs whose pid files live in ``run_dir``."""

    def __init__(self, run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.env = env
        self.restarts: dict[str, int] = {}
        run_dir.mkdir(parents=True, exist_ok=True)

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, job: Job) -> int:
        """Start ``job`` unless it already runs; return its pid."""
        running = self.pid(job.name)
        if running:
            return running
        with open(self.log_file(job.name), "ab") as log:
            proc = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=self.env)
        self.pid_file(job.name).write_text(str(proc.pid))
        return proc.pid

    def keep_alive(self, jobs: list[Job]) -> list[str]:
        """Restart the jobs that died; return their names."""
        restarted = []
        for job in jobs:
            if self.pid(job.name) is None:
                self.restarts[job.name] = self.restarts.get(job.name, 0) + 1
                self.start(job)
                restarted.append(job.name)
        return restarted

    def running(self) -> dict[str, int]:
        names = [p.stem for p in self.run_dir.glob("*.pid")]
        return {n: pid for n in names if (pid := self.pid(n)) is not None}

    def stop_all(self, timeout_s: float = 60.0) -> list[str]:
        """SIGTERM every job (they finish their batch), SIGKILL what is left after timeout."""
        running = self.running()
        for pid in running.values():
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(pid_alive(p) for p in running.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in running.values():
            if pid_alive(pid):
                _signal_group(pid, signal.SIGKILL)
        for name in running:
            self.pid_file(name).unlink(missing_ok=True)
        return list(running)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
