"""Scale: 1,000,000 synthetic users (about 20.8 million ratings) generated into Kafka, streamed
into Cassandra and Elasticsearch by the ingest job, and trained on from Cassandra: the time of
each stage and the peak resident memory of every process together, stack included.

1. generate: ``data_loading.synthetic.generate`` (1,000,000 users, 21 ratings per user on
   average over the ml-latest-small catalogue, seed 7) replayed into a private ratings topic
   by ``data_loading.replay`` as fast as Kafka takes them;
2. ingest: the ingest job as its own process (``python -m bench.jobs ingest --once``: its own
   Spark JVM, ``maxOffsetsPerTrigger`` 200,000) drains the topic into Cassandra and a private
   ratings index, then exits;
3. train: the training pipeline as its own process (``python -m bench.jobs train``, Spark
   driver heap 5 GiB) reads every rating from Cassandra, holds out 20 %, fits explicit ALS,
   evaluates on 10,000 sampled test users and registers the version.

The number of ratings training read from Cassandra must equal the number generated. Results
are written after every stage, so a run cut short still reports what it measured. Run it
with ``make scale`` (about an hour here) or, with 10,000 users in a few minutes,
``python -m bench.run_all --only scale --quick``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    Clock,
    child_env,
    envelope,
    log,
    table,
    target,
    workspace,
)
from bench.fixtures import SYNTHETIC_SEED, ml_small, prepare_keyspace
from bench.monitor import MIB, RssMonitor
from recommender.runtime import tail
from recommender.settings import Settings

FULL_USERS = 1_000_000
QUICK_USERS = 10_000
MEAN_RATINGS = 21  # 20.85 ratings per user once repeats are dropped: >= 20M for 1M users
MAX_OFFSETS_PER_TRIGGER = 200_000
TRAIN_DRIVER_MEMORY = "5g"
PEAK_GOAL_GIB = 12.0
GIB = 1024 * MIB
JOB_TIMEOUT_S = 4 * 3600
STAGES = ("generate", "ingest", "train")
BATCH_LINE = re.compile(r"batch (\d+): (\d+) ratings.* in ([\d.]+)s")


class Stages:
    """Each stage's figures and memory monitor, written out after every stage."""

    def __init__(self, settings: Settings, quick: bool, users: int) -> None:
        self.settings, self.quick, self.users = settings, quick, users
        self.clock = Clock()
        self.metrics: dict[str, Any] = {}
        self.monitors: dict[str, RssMonitor] = {}

    def monitor(self, stage: str, jobs: dict[str, int]) -> RssMonitor:
        rss = self.monitors[stage] = RssMonitor(interval_s=2.0)
        rss.track("bench process (generator, replay producer)", os.getpid(), children=False)
        for label, pid in jobs.items():
            rss.track(label, pid)
        rss.track_stack(self.settings)
        return rss

    def peak_gib(self) -> float | None:
        peaks = [m.peak_total for m in self.monitors.values() if m.peak_total]
        return round(max(peaks) / GIB, 2) if peaks else None

    def result(self) -> dict[str, Any]:
        m = self.metrics
        generated, trained = m.get("generate", {}).get("events"), m.get("train", {}).get("rows")
        stage_rows = [[stage, m[stage].get("wall_s"), m[stage].get("per_s"),
                       round(self.monitors[stage].peak_total / GIB, 2)]
                      for stage in STAGES if stage in m]
        peak = self.peak_gib()
        return envelope(
            "scale", self.settings, self.quick, self.clock,
            dataset={"name": f"synthetic, {self.users:,} users (seed {SYNTHETIC_SEED}, "
                             f"ml-latest-small catalogue)", "ratings": generated},
            config={"users": self.users, "mean_ratings": MEAN_RATINGS,
                    "max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER,
                    "train_driver_memory": TRAIN_DRIVER_MEMORY,
                    "als": {"ranking": self.settings.model.ranking.model_dump(),
                            "rating": self.settings.model.rating.model_dump()},
                    "spark_master": self.settings.spark.master,
                    "topic_partitions": self.settings.kafka.num_partitions},
            metrics={**m, "peak_rss_all_gib": peak,
                     "stages_done": [s for s in STAGES if s in m]},
            targets=[
                target("ratings through ingest and training", trained,
                       20_000_000 if not self.quick else 200_000, ">=", "ratings",
                       note=None if trained == generated else
                       f"training read {trained} of {generated} generated"),
                target("peak RSS of all processes together (stack included)", peak,
                       PEAK_GOAL_GIB, "<=", "GiB")],
            tables=[table("Stages", ["stage", "wall s", "per second", "peak RSS all, GiB"],
                          stage_rows),
                    *([table("Training (pipeline timings, s)", ["step", "seconds"],
                             [[k.removesuffix("_s"), v]
                              for k, v in m["train"]["timings"].items()])]
                      if "train" in m else [])],
            rss=self.monitors,
            notes=["Peak RSS of all processes is the highest sum, over one sample (every 2 s), "
                   "of every tracked process: Kafka, Cassandra, Elasticsearch, this process and "
                   "the job running in that stage.",
                   "The stages run one after another so that each rate is its own: in production "
                   "ingest runs while events arrive."])

    def save(self) -> None:
        name = f"scale{'.quick' if self.quick else ''}.json"
        (RESULTS_DIR / name).write_text(json.dumps(self.result(), indent=2, default=str) + "\n")


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from recommender.topics import ensure_topics

    bench_run = workspace(settings)
    users = QUICK_USERS if quick else FULL_USERS
    private = bench_run.settings(
        "scale", spark={"ingest_max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER})
    dataset = ml_small(private)
    ensure_topics(private, private.kafka.ratings_topic, private.kafka.ratings_dlq_topic)
    prepare_keyspace(private, dataset)
    stages = Stages(private, quick, users)
    try:
        with stages.monitor("generate", {}):
            stages.metrics["generate"] = generate(bench_run, private, dataset, users)
        stages.save()
        stages.metrics["ingest"] = ingest(bench_run, private, stages)
        stages.save()
        stages.metrics["train"] = train(bench_run, private, stages)
    except Exception:  # noqa: BLE001 - the stages that finished are still reported
        return {**stages.result(), "error": traceback.format_exc()}
    log(f"scale: peak RSS of all processes {stages.peak_gib()} GiB")
    return stages.result()


def generate(bench_run: Any, settings: Settings, dataset: Any, users: int) -> dict[str, Any]:
    from data_loading.replay import replay
    from data_loading.synthetic import Catalogue
    from data_loading.synthetic import generate as synthetic

    events = synthetic(Catalogue.from_dataset(dataset), users=users, seed=SYNTHETIC_SEED,
                       mean_ratings=MEAN_RATINGS)
    next_log = [1_000_000]

    def progress(p: Any) -> None:
        if p.acked >= next_log[0]:
            log(f"generate: {p.acked:,} events in Kafka after {p.elapsed_s:.0f} s")
            next_log[0] += 1_000_000

    log(f"generate: {users:,} users into {settings.kafka.ratings_topic}")
    started = time.perf_counter()
    loaded = replay(settings, events, resume=False, source=f"bench-scale-{bench_run.run_id}",
                    progress=progress)
    wall = time.perf_counter() - started
    bench_run.files.append(Path(loaded.progress_file))
    log(f"generate: {loaded.acked:,} events in {wall:.0f} s")
    return {"events": loaded.acked, "wall_s": round(wall, 1),
            "per_s": round(loaded.acked / wall)}


def ingest(bench_run: Any, settings: Settings, stages: Stages) -> dict[str, Any]:
    from recommender.clients import elasticsearch_client

    log_file = bench_run.tmp / "scale" / "ingest.log"
    started = time.perf_counter()
    proc = bench_run.start([sys.executable, "-m", "bench.jobs", "ingest", "--once"],
                           log_file, env=child_env(settings))
    with stages.monitor("ingest", {"ingest job (driver, Spark JVM, Python workers)": proc.pid}):
        code = wait_for(proc, log_file, "ingest")
    wall = time.perf_counter() - started
    batches = [(int(b), int(r), float(s)) for b, r, s in
               BATCH_LINE.findall(log_file.read_text(errors="replace"))]
    rows = sum(r for _, r, _ in batches)
    busy = sum(s for _, _, s in batches)
    es = elasticsearch_client(settings.elasticsearch)
    ratings = f"{settings.elasticsearch.indices.ratings_prefix}*"
    es.indices.refresh(index=ratings)
    indexed = es.count(index=ratings)["count"]
    es.close()
    log(f"ingest: {rows:,} rows in {wall:.0f} s (exit {code}); Elasticsearch {indexed:,}")
    return {"exit_code": code, "rows": rows, "wall_s": round(wall, 1),
            "per_s": round(rows / wall) if wall else None,
            "batches": len(batches), "batch_seconds": round(busy, 1),
            "rows_per_batch_second": round(rows / busy) if busy else None,
            "elasticsearch_docs": indexed}


def train(bench_run: Any, settings: Settings, stages: Stages) -> dict[str, Any]:
    log_file = bench_run.tmp / "scale" / "train.log"
    spark = settings.spark.model_copy(update={"driver_memory": TRAIN_DRIVER_MEMORY})
    env = child_env(settings.model_copy(update={"spark": spark}))
    started = time.perf_counter()
    proc = bench_run.start([sys.executable, "-m", "bench.jobs", "train"], log_file, env=env)
    with stages.monitor("train", {"training job (driver, Spark JVM, Python workers)": proc.pid}):
        code = wait_for(proc, log_file, "train")
    wall = time.perf_counter() - started
    lines = [line for line in log_file.read_text(errors="replace").splitlines()
             if line.startswith('{"version"')]
    if code != 0 or not lines:
        raise RuntimeError(f"training exited with {code}:\n{tail(log_file)}")
    out = json.loads(lines[-1])
    meta = out["metadata"]
    rows = meta["data"].get("rows")
    log(f"train: {out['version']} on {rows:,} ratings in {wall:.0f} s "
        f"(rmse {meta['metrics'].get('rmse')})")
    return {"exit_code": code, "version": out["version"], "wall_s": round(wall, 1),
            "pipeline_wall_s": out["wall_s"], "per_s": round(rows / wall) if rows else None,
            "rows": rows, "users": meta["data"].get("users"), "items": meta["data"].get("items"),
            "timings": meta["timings"], "metrics": meta["metrics"]}


def wait_for(proc: Any, log_file: Path, name: str) -> int:
    """The job's exit code; a job still running after ``JOB_TIMEOUT_S`` is an error."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    last_note = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still running after {JOB_TIMEOUT_S} s:\n{tail(log_file)}")
        if time.monotonic() - last_note > 300:
            log(f"{name}: {tail(log_file, 1)}")
            last_note = time.monotonic()
        time.sleep(2)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log_file)}")
    return proc.returncode


if __name__ == "__main__":
    from bench.run_all import run_one

    run_one("scale")
