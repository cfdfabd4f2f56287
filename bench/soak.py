"""Soak: the streaming pipeline under steady load for a long time, watching for leaks and for
consumers that fall behind.

The ingest job, the predictor and the shipper run as their own processes on private names
(ratings documents and predictions in private Elasticsearch indices), serving a model
trained on ml-latest-small, while this process sends 1,000 pair prediction requests/s and
replays synthetic ratings at 200/s. After a warm-up, for ``SOAK_MINUTES`` (default 30), the
resident memory of every process is sampled every 5 s (each Spark job split into its
Python driver, its JVM and its Python workers; the shipper; Kafka, Cassandra,
Elasticsearch; this process), and each consumer's lag every 10 s (the ingest job's from
its checkpoint, the predictor's and the shipper's from their consumer groups). Reported:
each process's RSS slope (MiB/hour, least squares over the measured window and over its
second half) and each consumer's lag over time, with its slope and whether it grew by more
than 10 s of input over the run.

    make soak                          # 30 minutes
    SOAK_MINUTES=3 python -m bench.soak  # a short run, marked as such in the results

Results: ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    REPO,
    RESULTS_DIR,
    Clock,
    base_settings,
    child_env,
    close_workspace,
    envelope,
    log,
    table,
    target,
    workspace,
)
from bench.fixtures import (
    ML_SMALL,
    copy_model,
    ml_small,
    ml_small_keyspace,
    synthetic_events,
    trained_model,
)
from bench.monitor import MIB, RssMonitor
from bench.predict import Pairs, Stream, create_group
from recommender.offsets import checkpoint_offsets, group_offsets, lag, topic_end_offsets
from recommender.runtime import tail, wait_for
from recommender.settings import Settings

FULL_MINUTES = 30.0
REQUESTS_PER_S = 1_000
RATINGS_PER_S = 200
WARMUP_S = 120.0
RSS_EVERY_S = 5.0
LAG_EVERY_S = 10.0
GROWING_AFTER_S = 10.0  # lag that grew by more than this many seconds of input is growing
DRAIN_TIMEOUT_S = 600.0
MAX_OFFSETS_PER_TRIGGER = 50_000


def run(settings: Settings, minutes: float) -> dict[str, Any]:
    """Set up, load, measure for ``minutes`` after the warm-up, drain; the result envelope."""
    from recommender.model.registry import ModelRegistry
    from recommender.topics import ensure_topics

    bench_run = workspace(settings)
    clock = Clock()
    data = ml_small_keyspace(bench_run)
    model = trained_model(bench_run)
    private = bench_run.settings("soak", cassandra={"keyspace": data.cassandra.keyspace},
                                 spark={"max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER})
    kafka = private.kafka
    ensure_topics(private, kafka.ratings_topic, kafka.ratings_dlq_topic, kafka.requests_topic,
                  kafka.requests_dlq_topic, kafka.predictions_topic, kafka.predictions_dlq_topic)
    artifacts = ModelRegistry.from_settings(private.model).load(copy_model(model, private))
    create_group(private)
    jobs = start_jobs(bench_run, private)
    lags = LagSampler(private)
    stop_replay = threading.Event()
    replay_thread = threading.Thread(target=replay_ratings, args=(bench_run, private, stop_replay),
                                     name="replay", daemon=True)
    pairs = Pairs(artifacts.user_ids, artifacts.item_ids)
    try:
        with Stream(private, pairs, "soak", REQUESTS_PER_S) as requests:
            replay_thread.start()
            warmup_s = warm_up(jobs, lags)
            answered_before = sum(topic_end_offsets(private, kafka.predictions_topic).values())
            started = time.monotonic()
            with RssMonitor(interval_s=RSS_EVERY_S, keep_series=True) as rss, lags:
                for name, job_process in jobs.items():
                    rss.track(name, job_process.proc.pid)
                rss.discover = spark_parts(jobs)
                rss.track("bench process (load, python only)", os.getpid(), children=False)
                rss.track_stack(private)
                measure(minutes, jobs, lags)
            answered = sum(topic_end_offsets(private, kafka.predictions_topic).values())
            window_s = time.monotonic() - started
    finally:
        stop_replay.set()
        replay_thread.join(timeout=120)
    drained_s = drain(lags)
    return report(private, clock, minutes, {
        "warmup_s": round(warmup_s, 1), "drained_after_s": drained_s,
        "requests_sent": requests.sent,
        "answered_per_s_measured": round((answered - answered_before) / window_s, 1),
        "rss": rss_trends(rss), "lag": lag_trends(lags),
    }, rss)


@dataclass(frozen=True)
class JobProcess:
    proc: subprocess.Popen
    log_file: Path

    def check(self, name: str) -> None:
        """Raise, with the end of its log, if the job has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"soak: {name} exited with {self.proc.returncode}:\n"
                               f"{tail(self.log_file)}")


def warm_up(jobs: dict[str, JobProcess], lags: LagSampler) -> float:
    """Seconds until every consumer has committed offsets, plus ``WARMUP_S`` under load."""
    def running() -> bool:
        for name, job_process in jobs.items():
            job_process.check(name)
        return lags.ready()

    try:
        first = wait_for(running, "every consumer to commit its first offsets", 900, poll_s=2)
    except TimeoutError as exc:
        logs = "\n".join(f"--- {name}:\n{tail(j.log_file, 15)}" for name, j in jobs.items())
        raise TimeoutError(f"{exc}\n{logs}") from None
    log(f"soak: all consumers running after {first:.0f} s; warming up {WARMUP_S:.0f} s")
    time.sleep(WARMUP_S)
    return first + WARMUP_S


def start_jobs(bench_run: Any, settings: Settings) -> dict[str, JobProcess]:
    """The three jobs as the product's commands, on the settings' private names."""
    env = child_env(settings)
    commands = {
        "ingest: driver (python)": ["-m", "recommender", "ingest"],
        "predictor: driver (python)": ["-m", "recommender", "predict"],
        "shipper (python)": ["-m", "recommender", "ship"],
    }
    out = {}
    for name, args in commands.items():
        log_file = bench_run.tmp / "soak" / f"{job_name(name)}.log"
        process = bench_run.start([sys.executable, *args], log_file, env=env)
        out[name] = JobProcess(process, log_file)
    return out


def job_name(label: str) -> str:
    return label.split()[0].rstrip(":")


def spark_parts(jobs: dict[str, JobProcess]) -> Callable[[], dict[str, int]]:
    """Labels for each Spark job's JVM and its Python worker daemon, looked up at every sample
    (the daemon starts with the first batch, and Spark restarts it if it dies). The job's own
    label then keeps only its Python driver, so a JVM heap still filling towards ``-Xmx`` is
    told apart from Python memory that grows."""
    import psutil

    def discover() -> dict[str, int]:
        out = {}
        for label, job_process in jobs.items():
            for jvm in psutil.Process(job_process.proc.pid).children(recursive=True):
                if jvm.name() != "java":
                    continue
                out[f"{job_name(label)}: Spark JVM"] = jvm.pid
                for child in jvm.children():
                    if "pyspark.daemon" in child.cmdline():
                        out[f"{job_name(label)}: Python workers"] = child.pid
        return out

    return discover


def replay_ratings(bench_run: Any, settings: Settings, stop: threading.Event) -> None:
    """Synthetic ratings over the ml-latest-small catalogue at a fixed rate until ``stop``."""
    from data_loading.replay import replay

    events = synthetic_events(ml_small(settings), 10**8)
    result = replay(settings, itertools.takewhile(lambda _: not stop.is_set(), events),
                    rate=RATINGS_PER_S, resume=False, source=f"soak-{bench_run.run_id}")
    bench_run.files.append(Path(result.progress_file))
    log(f"soak: replayed {result.acked:,} ratings")


def measure(minutes: float, jobs: dict[str, JobProcess], lags: LagSampler) -> None:
    """Wait out the measured window, failing early if a job dies."""
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        for name, job_process in jobs.items():
            job_process.check(name)
        last = lags.series[-1] if lags.series else {}
        left = (deadline - time.monotonic()) / 60
        log(f"soak: {left:.1f} min left; lag {json.dumps(last.get('lag', {}))}")
        time.sleep(min(60.0, max(0.0, deadline - time.monotonic())))


def drain(lags: LagSampler) -> float | None:
    """Seconds until every consumer caught up after the load stopped (None: not in time)."""
    def caught_up() -> bool:
        sample = lags.sample(record=False)
        return sample is not None and not any(sample.values())

    try:
        return round(wait_for(caught_up, "the consumers to catch up", DRAIN_TIMEOUT_S,
                              poll_s=5), 1)
    except TimeoutError:
        return None


class LagSampler:
    """Each consumer's lag, sampled every ``LAG_EVERY_S`` in a background thread while used
    as a context manager."""

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        checkpoint = settings.spark.checkpoint_dir / "ingest"
        self.settings = settings
        self.consumers: dict[str, tuple[str, Callable[[], dict[int, int]]]] = {
            "ingest (ratings)": (kafka.ratings_topic, lambda: checkpoint_offsets(
                checkpoint, kafka.ratings_topic)),
            "predictor (prediction requests)": (kafka.requests_topic, lambda: group_offsets(
                settings, kafka.predictor_group, kafka.requests_topic)),
            "shipper (predictions)": (kafka.predictions_topic, lambda: group_offsets(
                settings, kafka.shipper_group, kafka.predictions_topic)),
        }
        self.rates = {"ingest (ratings)": RATINGS_PER_S,
                      "predictor (prediction requests)": REQUESTS_PER_S,
                      "shipper (predictions)": REQUESTS_PER_S}
        self.series: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lag", daemon=True)

    def sample(self, record: bool = True) -> dict[str, int] | None:
        """Lag per consumer now; None while some consumer has committed nothing yet."""
        out = {}
        for name, (topic, done) in self.consumers.items():
            committed = done()
            if not committed:
                return None
            out[name] = lag(topic_end_offsets(self.settings, topic), committed)
        if record:
            self.series.append({"t_s": round(time.monotonic() - self.t0, 1), "lag": out})
        return out

    def ready(self) -> bool:
        """Has every consumer committed offsets (and do Kafka and the checkpoint answer)?"""
        from kafka.errors import KafkaError

        try:
            return self.sample(record=False) is not None
        except (KafkaError, OSError):
            return False

    def _loop(self) -> None:
        while not self._stop.wait(LAG_EVERY_S):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a missed sample is not a failed run
                log(f"soak: lag sample failed: {exc!r}")

    def __enter__(self) -> LagSampler:
        self.t0 = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def slope(t_s: list[float], values: list[float], per_s: float) -> float | None:
    """Least-squares slope of ``values`` over ``t_s`` seconds, per ``per_s`` seconds."""
    if len(t_s) < 3 or max(t_s) == min(t_s):
        return None
    return float(np.polyfit(np.asarray(t_s), np.asarray(values, dtype=float), 1)[0] * per_s)


def rss_trends(rss: RssMonitor) -> dict[str, dict[str, Any]]:
    """Per process: start, end, peak, the slope over the whole window and over its second
    half (a JVM whose heap is still filling towards ``-Xmx`` has a steep whole-window slope
    that flattens; a leak keeps its slope), and the mean RSS of each minute."""
    out = {}
    for label, points in sorted((rss.series or {}).items()):
        t0 = points[0][0]
        t_s, mib = [t - t0 for t, _ in points], [b / MIB for _, b in points]
        half = len(t_s) // 2
        per_minute: dict[int, list[float]] = {}
        for t, m in zip(t_s, mib, strict=True):
            per_minute.setdefault(int(t // 60), []).append(m)
        out[label] = {"samples": len(points), "start_mib": round(mib[0], 1),
                      "end_mib": round(mib[-1], 1), "peak_mib": round(max(mib), 1),
                      "slope_mib_per_hour": rounded(slope(t_s, mib, 3600)),
                      "second_half_slope_mib_per_hour": rounded(slope(t_s[half:], mib[half:],
                                                                      3600)),
                      "mean_mib_per_minute": [round(sum(v) / len(v), 1)
                                              for _, v in sorted(per_minute.items())]}
    return out


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def lag_trends(lags: LagSampler) -> dict[str, dict[str, Any]]:
    out = {}
    t_s = [s["t_s"] for s in lags.series]
    for name in lags.consumers:
        values = [s["lag"][name] for s in lags.series]
        per_min = slope(t_s, values, 60)
        window_min = (t_s[-1] - t_s[0]) / 60 if len(t_s) > 1 else 0.0
        grew_by = per_min * window_min if per_min is not None else None
        out[name] = {"first": values[0], "last": values[-1], "max": max(values),
                     "mean": round(float(np.mean(values)), 1),
                     "slope_per_min": None if per_min is None else round(per_min, 1),
                     "growing": None if grew_by is None else
                     grew_by > GROWING_AFTER_S * lags.rates[name],
                     "series": [[s["t_s"], s["lag"][name]] for s in lags.series]}
    return out


def report(settings: Settings, clock: Clock, minutes: float, metrics: dict[str, Any],
           rss: RssMonitor) -> dict[str, Any]:
    short = minutes < FULL_MINUTES
    notes = [f"RSS sampled every {RSS_EVERY_S:g} s, lag every {LAG_EVERY_S:g} s, over the "
             f"{minutes:g} measured minutes after {metrics['warmup_s']:.0f} s of load "
             "(start-up and warm-up excluded from the slopes).",
             f"Lag is 'growing' when its fitted increase over the window exceeds "
             f"{GROWING_AFTER_S:g} s of that consumer's input rate.",
             f"Predictor: at most {MAX_OFFSETS_PER_TRIGGER:,} requests per micro-batch, "
             f"trigger {settings.spark.trigger_interval}, Spark master {settings.spark.master}."]
    if short:
        notes.insert(0, f"SHORT RUN: {minutes:g} minutes instead of {FULL_MINUTES:g}. Slopes "
                     "over a few minutes are dominated by JVM heaps still growing towards "
                     "their steady size; they show the harness works, not that nothing leaks.")
    rss_rows = [[label, t["start_mib"], t["end_mib"], t["peak_mib"], t["slope_mib_per_hour"],
                 t["second_half_slope_mib_per_hour"]] for label, t in metrics["rss"].items()]
    lag_rows = [[name, t["first"], t["last"], t["max"], t["mean"], t["slope_per_min"],
                 t["growing"]] for name, t in metrics["lag"].items()]
    return envelope(
        "soak", settings, short, clock,
        dataset={"model": f"explicit ALS on {ML_SMALL}", "requests_per_s": REQUESTS_PER_S,
                 "ratings_per_s": RATINGS_PER_S},
        config={"minutes": minutes, "short_run": short, "warmup_s": WARMUP_S,
                "max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER,
                "trigger_interval": settings.spark.trigger_interval},
        metrics={"short_run": short, "minutes": minutes, **metrics},
        targets=[target("predictions/s over the measured window",
                        metrics["answered_per_s_measured"], REQUESTS_PER_S, ">=", "req/s")],
        tables=[table("Resident memory (MiB) over the measured window",
                      ["process", "start", "end", "peak", "slope MiB/hour",
                       "second half slope MiB/hour"], rss_rows),
                table("Consumer lag (messages) over the measured window",
                      ["consumer", "first", "last", "max", "mean", "slope /min", "growing"],
                      lag_rows)],
        rss=rss, notes=notes)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench.soak",
                            description=__doc__.split("\n")[0]).parse_args(argv)
    from recommender.stack import manager

    logging.getLogger("kafka").setLevel(logging.ERROR)
    minutes = float(os.environ.get("SOAK_MINUTES", FULL_MINUTES))
    settings = base_settings()
    manager.up(settings.stack, on_event=log)
    workspace(settings)
    try:
        result = run(settings, minutes)
    finally:
        close_workspace()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "soak.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
