"""Peak memory and CPU of the processes a benchmark involves, sampled with psutil.

The host these benchmarks run on is shared, so next to each process's peak resident set size
the monitor records the CPU seconds it used and how busy the whole host was: a slow number
beside a busy host is contention, and ``units x cores / CPU seconds`` estimates what the same
work reaches on an idle host.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from bench.output import log
from recommender.monitor import process_trees
from recommender.settings import Settings

MIB = 1024 * 1024


@lru_cache(maxsize=4)
def stack_pids(stack_json: str) -> dict[str, int]:
    """Pids of the stack's servers (asked once: ``status`` probes each server, ~1 CPU-s)."""
    from recommender.settings import StackSettings
    from recommender.stack import manager

    return {s.name: s.pid for s in manager.status(StackSettings.model_validate_json(stack_json))
            if s.pid}


class RssMonitor:
    """Samples labelled process trees in a background thread: each label's peak resident set
    size and the CPU seconds its processes used while monitored, plus how busy the whole host
    was (the host is shared, so a slow number next to a busy host means contention).

    A tree excludes sub-trees tracked under another label, so the benchmark process does not
    also count the predictor it started. CPU of processes that exit between two samples is
    partly missed (short-lived processes); the long-lived JVMs and workers are what counts.
    """

    def __init__(self, interval_s: float = 1.0, keep_series: bool = False) -> None:
        self.interval_s = interval_s
        # (monotonic time, RSS bytes) per label and sample, for trends over long runs (soak)
        self.series: dict[str, list[tuple[float, int]]] | None = {} if keep_series else None
        self.roots: dict[str, tuple[int, bool]] = {}
        self.peaks: dict[str, int] = {}
        self.peak_total = 0  # the highest sum over every label in one sample
        self.cpu_first: dict[tuple[int, float], float] = {}
        self.cpu_last: dict[tuple[int, float], float] = {}
        self.cpu_owner: dict[tuple[int, float], str] = {}
        self.discover: Callable[[], dict[str, int]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._host0: Any = None
        self._t0 = 0.0
        self._born_after = float("inf")
        self._procs: dict[int, Any] = {}
        self.host: dict[str, float] = {}

    def track(self, label: str, pid: int, children: bool = True) -> None:
        with self._lock:
            self.roots[label] = (pid, children)

    def track_stack(self, settings: Settings) -> None:
        """Kafka, Cassandra and Elasticsearch, by the pids the stack manager knows."""
        import psutil

        key = settings.stack.model_dump_json()
        if not all(psutil.pid_exists(pid) for pid in stack_pids(key).values()):
            stack_pids.cache_clear()  # a server was restarted meanwhile
        for name, pid in stack_pids(key).items():
            self.track(name, pid)

    def sample(self) -> None:
        import psutil

        if self.discover is not None:
            with contextlib.suppress(Exception):
                for label, pid in self.discover().items():
                    self.track(label, pid)
        with self._lock:
            roots = dict(self.roots)
        walked = process_trees([pid for pid, children in roots.values() if children])
        trees = {label: walked[pid] if children else {pid}
                 for label, (pid, children) in roots.items()}
        total = 0
        for label, tree in trees.items():
            private = set(tree)
            for other, other_tree in trees.items():
                other_root = roots[other][0]
                if other != label and other_root in tree and other_root != roots[label][0]:
                    private -= other_tree
            rss = 0
            for pid in private:
                with contextlib.suppress(psutil.Error):
                    proc = self._procs.get(pid)
                    if proc is None or not proc.is_running():
                        proc = self._procs[pid] = psutil.Process(pid)
                    with proc.oneshot():
                        rss += proc.memory_info().rss
                        times = proc.cpu_times()
                    key = (pid, proc.create_time())
                    used = times.user + times.system
                    # born while monitored: all its CPU counts; older: from first sight on
                    self.cpu_first.setdefault(key, 0.0 if key[1] >= self._born_after else used)
                    self.cpu_last[key] = used
                    self.cpu_owner[key] = label
            total += rss
            if rss:
                self.peaks[label] = max(self.peaks.get(label, 0), rss)
                if self.series is not None:
                    self.series.setdefault(label, []).append((time.monotonic(), rss))
        self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RssMonitor:
        import psutil

        self._born_after = time.time()
        self._host0, self._t0 = psutil.cpu_times(), time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        import psutil

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        host1, wall = psutil.cpu_times(), time.monotonic() - self._t0
        idle = (host1.idle - self._host0.idle) + (host1.iowait - self._host0.iowait)
        total = sum(host1) - sum(self._host0)
        steal = getattr(host1, "steal", 0.0) - getattr(self._host0, "steal", 0.0)
        self.host = {"wall_s": round(wall, 2), "cores": os.cpu_count() or 1,
                     "busy_pct": round(100 * (1 - idle / total), 1) if total else 0.0,
                     "busy_cpu_s": round(total - idle, 1),
                     "steal_pct": round(100 * steal / total, 1) if total else 0.0}

    def result(self) -> dict[str, float]:
        """Peak RSS per label in MiB."""
        return {label: round(peak / MIB, 1) for label, peak in sorted(self.peaks.items())}

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) per label while monitored."""
        out: dict[str, float] = {}
        for key, last in self.cpu_last.items():
            label = self.cpu_owner[key]
            out[label] = out.get(label, 0.0) + max(0.0, last - self.cpu_first.get(key, 0.0))
        return {label: round(v, 1) for label, v in sorted(out.items())}

    def ceiling(self, units: int, labels: list[str] | None = None) -> float | None:
        """Units per second an idle host of this many cores could reach if the work is
        CPU-bound: ``units x cores / CPU seconds`` of the involved processes (``labels``,
        default all tracked). An estimate that ignores I/O waits and imperfect parallelism,
        so an upper bound; it is what the numbers would be without other people's jobs."""
        cpu = self.cpu()
        used = sum(v for label, v in cpu.items() if labels is None or label in labels)
        return round(units * (os.cpu_count() or 1) / used) if used > 0 else None

    def cpu_table(self, phase: str = "") -> dict[str, Any]:
        """The CPU seconds per process and the host's busy share, as a report table."""
        rows: list[list[Any]] = [[label, v] for label, v in self.cpu().items()]
        tracked = sum(self.cpu().values())
        if self.host:
            rows.append(["whole host (all processes, incl. other users')",
                         self.host["busy_cpu_s"]])
            rows.append(["of which not tracked here (other jobs on the host)",
                         round(max(0.0, self.host["busy_cpu_s"] - tracked), 1)])
        title = f"CPU seconds while measured{f' ({phase})' if phase else ''}"
        if self.host:
            title += (f" ({self.host['wall_s']} s wall x {self.host['cores']} cores; host "
                      f"{self.host['busy_pct']}% busy, steal {self.host['steal_pct']}%)")
        return {"title": title, "columns": ["process", "CPU s"], "rows": rows}


def wait_for_quiet_stack(settings: Settings, max_cores: float = 0.2, window_s: float = 3.0,
                         timeout_s: float = 120.0, max_host_cores: float = 0.5) -> float:
    """Wait until Kafka, Cassandra and Elasticsearch together use under ``max_cores`` and the
    whole host under ``max_host_cores`` over a window (merges and compactions of what a
    fixture just wrote, or the JVMs of a job that just ended, would otherwise be billed to the
    next measurement); the seconds waited. Gives up after ``timeout_s`` and says so."""
    import psutil

    procs = [psutil.Process(pid) for pid in stack_pids(settings.stack.model_dump_json()).values()]

    def cpu_s() -> tuple[float, float]:
        host = psutil.cpu_times()
        return (sum(sum(p.cpu_times()[:2]) for p in procs),
                sum(host) - host.idle - getattr(host, "iowait", 0.0))

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        stack0, host0 = cpu_s()
        time.sleep(window_s)
        stack1, host1 = cpu_s()
        if (stack1 - stack0) / window_s < max_cores and (host1 - host0) / window_s < max_host_cores:
            return round(time.monotonic() - started, 1)
    log(f"the stack or the host stayed above {max_cores}/{max_host_cores} cores for "
        f"{timeout_s:.0f}s; measuring anyway")
    return round(time.monotonic() - started, 1)
