"""What every benchmark shares: private names and their cleanup, machine facts and versions,
peak memory of the processes involved, targets and the result envelope.

Private names: a run owns Kafka topics ``bench-<name>-<run>-*``, Cassandra keyspaces
``bench_<name>_<run>``, Elasticsearch indices ``bench-<name>-<run>-*``, consumer groups, Spark
checkpoints and model registries under one temp directory. ``Workspace.close`` removes all of
them, so a benchmark never reads or writes a demo's data and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.monitor import RssMonitor
from bench.output import log
from recommender.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def base_settings() -> Settings:
    """The process settings (env, TOML, defaults), with the shared MovieLens copy beside the
    checkout as the data directory when none is configured, and no Spark progress bars."""
    settings = Settings()
    spark = settings.spark
    settings = settings.model_copy(update={"spark": spark.model_copy(update={
        "extra_conf": {"spark.ui.showConsoleProgress": "false", **spark.extra_conf}})})
    if settings.data.data_dir is None and (DEFAULT_DATA_DIR / "ml-latest-small").is_dir():
        settings = settings.model_copy(update={
            "data": settings.data.model_copy(update={"data_dir": DEFAULT_DATA_DIR})})
    return settings


# --- private names and cleanup ------------------------------------------------------------


class Workspace:
    """One benchmark run's private names, scratch directory, Spark session and processes.

    ``shared`` carries fixtures between benchmarks of one run (the ml-latest-small keyspace,
    a trained model), so ``run_all`` loads and trains once; a benchmark run alone makes its own.
    """

    def __init__(self, base: Settings) -> None:
        self.base = base
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.run_id}-"))
        self.topics: list[str] = []
        self.keyspaces: list[str] = []
        self.files: list[Path] = []
        self.processes: list[subprocess.Popen] = []
        self.on_close: list[Callable[[], None]] = []
        self.shared: dict[str, Any] = {}
        self._spark: SparkSession | None = None
        self.global_aliases = self._global_aliases()

    def _global_aliases(self) -> dict[str, list[str]] | None:
        """What the shared aliases point at (a demo's data): checked again at ``close``."""
        from recommender.clients import elasticsearch_client

        names = self.base.elasticsearch.indices
        try:
            es = elasticsearch_client(self.base.elasticsearch)
            try:
                aliases = f"{names.movie_vectors},{names.predictions_alias}"
                found = es.indices.get_alias(name=aliases,
                                             ignore_unavailable=True)
            finally:
                es.close()
        except Exception:  # noqa: BLE001 - only a safety check; ES may be down
            return None
        out: dict[str, list[str]] = {}
        for index, body in dict(found).items():
            for alias in body.get("aliases", {}):
                out.setdefault(alias, []).append(index)
        return {alias: sorted(indices) for alias, indices in sorted(out.items())}

    def prefix(self, name: str) -> str:
        return f"bench-{name}-{self.run_id}"

    def settings(self, name: str, **sections: dict[str, Any]) -> Settings:
        """``base`` with private topics, consumer groups, keyspace, Elasticsearch names,
        checkpoints and registry; ``sections`` updates further fields, e.g.
        ``spark={"max_offsets_per_trigger": 1}``."""
        prefix = self.prefix(name)
        topics = {"ratings_topic": f"{prefix}-ratings",
                  "ratings_dlq_topic": f"{prefix}-ratings-dlq",
                  "requests_topic": f"{prefix}-requests",
                  "requests_dlq_topic": f"{prefix}-requests-dlq",
                  "predictions_topic": f"{prefix}-predictions",
                  "predictions_dlq_topic": f"{prefix}-predictions-dlq"}
        self.topics += [t for t in topics.values() if t not in self.topics]
        keyspace = f"bench_{name}_{self.run_id}".replace("-", "_")
        if keyspace not in self.keyspaces:
            self.keyspaces.append(keyspace)
        root = self.tmp / name
        updates: dict[str, dict[str, Any]] = {
            "kafka": {**topics, "predictor_group": f"{prefix}-predictor",
                      "shipper_group": f"{prefix}-shipper"},
            "cassandra": {"keyspace": keyspace},
            "elasticsearch": {"index_prefix": f"{prefix}-"},  # removed by _delete_es
            "spark": {"checkpoint_dir": root / "checkpoints"},
            "model": {"models_dir": root / "models"},
        }
        for section, fields in sections.items():
            updates[section] = {**updates.get(section, {}), **fields}
        return self.base.model_copy(update={
            section: getattr(self.base, section).model_copy(update=fields)
            for section, fields in updates.items()})

    def topic(self, name: str, role: str) -> str:
        """A further private topic name (registered for deletion)."""
        topic = f"{self.prefix(name)}-{role}"
        if topic not in self.topics:
            self.topics.append(topic)
        return topic

    def spark(self) -> SparkSession:
        """One SparkSession per run, started before any timing (the JVM start is not measured)."""
        if self._spark is None:
            from recommender.clients import spark_session

            log("starting the Spark session (not measured)")
            self._spark = spark_session(self.base, app_name="recommender-bench")
        return self._spark

    def start(self, cmd: list[str], log_file: Path, env: dict[str, str] | None = None,
              ) -> subprocess.Popen:
        """A child process in its own session (so it and its JVM stop together at close)."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        """Stop what this run started and delete every private topic, keyspace and index."""
        for hook in reversed(self.on_close):
            _quietly(hook)
        for proc in self.processes:
            _quietly(lambda p=proc: stop_process(p))
        if self._spark is not None:
            _quietly(self._spark.stop)
            self._spark = None
        after = self._global_aliases()
        if self.global_aliases is not None and after is not None and after != self.global_aliases:
            log(f"WARNING: shared Elasticsearch aliases changed during the run (by this run or "
                f"by another process): {self.global_aliases} -> {after}")
        _quietly(self._delete_topics)
        _quietly(self._drop_keyspaces)
        _quietly(self._delete_es)
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _delete_topics(self) -> None:
        from data_loading.replay import forget_progress
        from recommender.topics import delete_topics

        for topic in self.topics:
            forget_progress(self.base, topic)
        deleted = delete_topics(self.base, *self.topics)
        log(f"cleanup: deleted {len(deleted)} topics and their replay progress files")

    def _drop_keyspaces(self) -> None:
        from recommender.cassandra_schema import drop_keyspaces

        drop_keyspaces(self.base, *self.keyspaces)
        log(f"cleanup: dropped keyspaces {', '.join(self.keyspaces) or 'none'}")

    def _delete_es(self) -> None:
        indices = delete_indices(self.base, f"bench-*-{self.run_id}*")
        log(f"cleanup: deleted {len(indices)} Elasticsearch indices")


def delete_indices(settings: Settings, pattern: str) -> list[str]:
    """Delete the indices and index templates matching ``pattern``; the indices deleted."""
    from recommender.clients import elasticsearch_client

    es = elasticsearch_client(settings.elasticsearch)
    try:
        indices = list(es.indices.get(index=pattern, expand_wildcards="all",
                                      ignore_unavailable=True, allow_no_indices=True))
        if indices:  # destructive wildcards are refused: delete by name
            es.indices.delete(index=",".join(indices))
        templates = es.options(ignore_status=404).indices.get_index_template(name=pattern)
        for template in templates.get("index_templates", []):
            es.indices.delete_index_template(name=template["name"])
        return indices
    finally:
        es.close()


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - cleanup goes on; the reason is printed
        log(f"cleanup step failed: {exc!r}")


def stop_process(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM the child's process group (it was started in its own session), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


_current: Workspace | None = None


def child_env(settings: Settings | None = None) -> dict[str, str]:
    """The environment of a child process that runs ``python -m bench.<module>``: this
    checkout on ``PYTHONPATH`` and, given ``settings``, exactly those settings."""
    from recommender.settings import as_env

    env = as_env(settings) if settings is not None else dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def workspace(settings: Settings | None = None) -> Workspace:
    """The run's workspace, created on first use; ``close_workspace`` ends it."""
    global _current
    if _current is None:
        _current = Workspace(settings or base_settings())
    return _current


def begin(settings: Settings, name: str, **overrides: Any) -> tuple[Workspace, Clock, Settings]:
    """A benchmark's first step: the run's workspace, its clock (started now) and the private
    settings of benchmark ``name`` (``Workspace.settings``)."""
    bench_run = workspace(settings)
    return bench_run, Clock(), bench_run.settings(name, **overrides)


def close_workspace() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None


# --- machine, versions ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def machine() -> dict[str, Any]:
    import psutil

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model or platform.processor() or None,
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
    }


@lru_cache(maxsize=1)
def _versions(settings_json: str) -> dict[str, Any]:
    settings = Settings.model_validate_json(settings_json)
    out: dict[str, Any] = {"python": platform.python_version()}
    with contextlib.suppress(Exception):
        from recommender.runtime import find_java

        java = find_java(settings.stack)
        text = subprocess.run([str(java), "-version"], capture_output=True, text=True,
                              timeout=30).stderr
        match = re.search(r'version "([^"]+)"', text)
        out["java"] = match.group(1) if match else text.splitlines()[0]
    with contextlib.suppress(Exception):
        import pyspark

        out["spark"] = pyspark.__version__
    with contextlib.suppress(Exception):
        from recommender.stack import manager

        for status in manager.status(settings.stack):
            out[status.name] = status.version
    with contextlib.suppress(Exception):  # what actually answers, when it differs from the pin
        from recommender.clients import elasticsearch_client

        es = elasticsearch_client(settings.elasticsearch)
        out["elasticsearch"] = es.info()["version"]["number"]
        es.close()
    with contextlib.suppress(Exception):
        from recommender.clients import cassandra_session

        session = cassandra_session(settings.cassandra)
        out["cassandra"] = session.execute("SELECT release_version FROM system.local").one()[0]
        session.cluster.shutdown()
    for dist in ("kafka-python", "confluent-kafka", "cassandra-driver", "elasticsearch",
                 "numpy", "implicit", "fastapi", "uvicorn", "httpx", "psutil"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[f"py:{dist}"] = importlib.metadata.version(dist)
    return out


def commit() -> tuple[str | None, bool | None]:
    """The git commit the code runs from, and whether the code differs from it (results,
    manuals and screenshots the runs write do not count)."""
    from recommender.train.pipeline import code_version

    code = code_version()
    sha = code["git_sha"]
    return (sha.removesuffix("-dirty") if sha else None), code["dirty"]


def provenance(clock: Clock, settings: Settings) -> dict[str, Any]:
    """What a results file needs to be tied to its code: the commit taken when the run
    started, ``dirty`` when the code differed from it at the start or at the end (edited
    mid-run), and the effective settings (secrets masked)."""
    sha, dirty = commit()
    return {"commit": clock.commit, "dirty": bool(clock.dirty or dirty or sha != clock.commit),
            "settings": settings.model_dump(mode="json")}


def versions(settings: Settings) -> dict[str, Any]:
    """Java, Python, Spark, the servers (as they answer) and the Python clients; asked once
    per set of endpoints (private names do not matter)."""
    endpoints = Settings().model_copy(update={
        "stack": settings.stack, "elasticsearch": settings.elasticsearch,
        "cassandra": settings.cassandra.model_copy(update={"keyspace": "system"})})
    return dict(_versions(endpoints.model_dump_json()))


# --- numbers, targets, envelope -------------------------------------------------------------


def percentiles(values: Any) -> dict[str, float | int | None]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"n": int(arr.size), "p50": round(float(p50), 2), "p95": round(float(p95), 2),
            "p99": round(float(p99), 2), "max": round(float(arr.max()), 2),
            "mean": round(float(arr.mean()), 2)}


def target(name: str, value: float | None, goal: float, op: str = ">=", unit: str = "",
           note: str | None = None) -> dict[str, Any]:
    """One target from the issues: ``value op goal``; ``met`` is None when not measured."""
    checks = {">=": lambda v: v >= goal, "<=": lambda v: v <= goal, "==": lambda v: v == goal}
    if op not in checks:
        raise ValueError(f"op must be one of {', '.join(checks)}, not {op!r}")
    met = None if value is None else bool(checks[op](value))
    ratio = None if value is None or not goal else round(value / goal, 3)
    return {"name": name, "value": None if value is None else round(float(value), 4),
            "op": op, "goal": goal, "unit": unit, "met": met, "ratio": ratio, "note": note}


def table(title: str, columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": rows}


class Clock:
    """Wall time of a benchmark and the machine load around it (others share this host)."""

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.t0 = time.monotonic()
        self.load_before = [round(x, 2) for x in os.getloadavg()]
        self.commit, self.dirty = commit()


def envelope(name: str, settings: Settings, quick: bool, clock: Clock, *,
             dataset: dict[str, Any], config: dict[str, Any], metrics: dict[str, Any],
             targets: list[dict[str, Any]], tables: list[dict[str, Any]],
             rss: dict[str, float] | RssMonitor | dict[str, RssMonitor],
             notes: list[str] | None = None) -> dict[str, Any]:
    """The JSON a benchmark returns; ``bench.report`` renders it. Given a monitor (or one per
    named phase), its peak RSS, CPU seconds and host load are included."""
    cpu: dict[str, Any] = {}
    if isinstance(rss, RssMonitor):
        rss = {"": rss}
    if rss and all(isinstance(m, RssMonitor) for m in rss.values()):
        phases: dict[str, RssMonitor] = rss  # type: ignore[assignment]
        cpu = {"cpu_s": {phase or "all": m.cpu() for phase, m in phases.items()},
               "host": {phase or "all": m.host for phase, m in phases.items()}}
        tables = [*tables, *(m.cpu_table(phase) for phase, m in phases.items())]
        peaks: dict[str, float] = {}
        for m in phases.values():  # a peak is the highest of any phase
            for label, mib in m.result().items():
                peaks[label] = max(peaks.get(label, 0.0), mib)
        rss = dict(sorted(peaks.items()))
    return {
        "benchmark": name, "quick": quick, **provenance(clock, settings),
        "started_at": clock.started_at,
        "duration_s": round(time.monotonic() - clock.t0, 1),
        "load_average": {"before": clock.load_before,
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "machine": machine(), "versions": versions(settings), "dataset": dataset,
        "config": config, "metrics": metrics, "targets": targets, "tables": tables,
        "peak_rss_mib": rss, **cpu, "notes": notes or [],
    }


def warm_until_steady(run_round: Callable[[], float | None], *, higher_is_better: bool,
                      max_rounds: int, min_gain: float = 0.05,
                      patience: int = 1) -> list[float | None]:
    """Warm-up rounds until ``patience`` rounds in a row no longer beat the best earlier round
    by ``min_gain`` (at least two rounds, at most ``max_rounds``); each round's figure, in order.

    A JVM that has just started, Elasticsearch's above all, runs its hot paths slower for
    minutes: the same shipper indexed 6,669 documents/s in the first 80,000 documents after
    Elasticsearch started and 38,643 on that node some three million documents later. A fixed
    warm-up is either too short (the measurement includes the climb) or wastes time; this one
    stops when the climb has. A ``patience`` above one rides out a noisy round mid-climb.
    """
    figures: list[float | None] = []
    flat = 0
    while len(figures) < max_rounds and flat < patience:
        figure = run_round()
        earlier = [f for f in figures if f is not None]
        figures.append(figure)
        if figure is None or not earlier:
            continue
        best = max(earlier) if higher_is_better else min(earlier)
        gained = (figure > best * (1 + min_gain) if higher_is_better
                  else figure < best * (1 - min_gain))
        flat = 0 if gained else flat + 1
    return figures


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - start
