"""The streaming predictor (a ``recommender predict`` process on private topics, serving a model
trained on ml-latest-small), in three phases on the same process:

1. throughput: pair requests pre-loaded before the predictor starts, drained; the sustained
   rate comes from the predictor's own published state after each micro-batch (first batch
   excluded: it includes loading the model and starting Python workers);
2. latency at a fixed moderate load: ``requested_at`` (set by the sender) to the prediction
   record's Kafka timestamp, for every request;
3. rollover under a steady stream: ``recommender.predict.rollover.rollover`` to a copy of the
   model under a new version name; the longest gap between consecutive prediction timestamps
   while it runs, against the same measure before it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import numpy as np
import orjson

from bench.common import (
    Clock,
    envelope,
    log,
    percentiles,
    table,
    target,
    workspace,
)
from bench.fixtures import ML_SMALL, copy_model, serving_ml_small
from bench.monitor import RssMonitor
from recommender.offsets import topic_end_offsets
from recommender.settings import Settings, as_env
from recommender.streaming import trigger_seconds

TARGET_RPS = 10_000
TARGET_P99_MS = 3_000
MAX_OFFSETS_PER_TRIGGER = 50_000  # a backlog of 3+ micro-batches; the first is excluded


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"throughput_requests": 100_000, "latency_rate": 200, "latency_s": 20,
                "rollover_rate": 100, "rollover_before_s": 10, "rollover_after_s": 10,
                "rollover_timeout_s": 300}
    return {"throughput_requests": 300_000, "latency_rate": 1_000, "latency_s": 60,
            "rollover_rate": 200, "rollover_before_s": 20, "rollover_after_s": 15,
            "rollover_timeout_s": 900}


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from recommender.model.registry import ModelRegistry
    from recommender.predict.rollover import running_instances, stop_instance
    from recommender.topics import ensure_topics

    bench_run = workspace(settings)
    clock = Clock()
    size = sizes(quick)
    private, model, version = serving_ml_small(
        bench_run, "predict", spark={"max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER})
    kafka = private.kafka
    ensure_topics(private, kafka.requests_topic, kafka.requests_dlq_topic, kafka.predictions_topic)
    artifacts = ModelRegistry.from_settings(private.model).load(version)
    pairs = Pairs(artifacts.user_ids, artifacts.item_ids)
    n = size["throughput_requests"]
    log(f"pre-loading {n:,} pair requests into {kafka.requests_topic}")
    send_requests(private, pairs, "tp", n)
    create_group(private)
    bench_run.on_close.append(lambda: [stop_instance(s) for s in running_instances(private)])
    log_file = bench_run.tmp / "predict" / "predictor-old.log"
    started = time.monotonic()
    proc = bench_run.start([sys.executable, "-m", "recommender", "predict", "--instance", "old"],
                           log_file, env=as_env(private))
    monitors: dict[str, RssMonitor] = {}

    def monitor(phase: str) -> RssMonitor:
        rss = monitors[phase] = RssMonitor()
        rss.track("predictor (python, Spark JVM, workers)", proc.pid)
        rss.track("bench process (request sender, consumer)", os.getpid(), children=False)
        rss.track_stack(private)
        rss.discover = lambda: {f"rollover successor predictor ({s.instance})": s.pid
                                for s in running_instances(private) if s.instance != "old"}
        return rss

    with monitor("throughput"):
        throughput = measure_throughput(private, proc, log_file, n, started)
    with monitor("latency"):
        latency = measure_latency(private, pairs, size["latency_rate"], size["latency_s"])
    with monitor("rollover"):
        roll = measure_rollover(private, model, pairs, size, proc)
    predictor_cpu = monitors["throughput"].cpu().get("predictor (python, Spark JVM, workers)")
    throughput["requests_per_predictor_cpu_s"] = (round(n / predictor_cpu)
                                                  if predictor_cpu else None)
    throughput["cpu_bound_ceiling_rps"] = monitors["throughput"].ceiling(
        n, ["predictor (python, Spark JVM, workers)", "cassandra", "kafka"])
    for state in running_instances(private):
        stop_instance(state)
    trigger_s = trigger_seconds(private.spark.trigger_interval)
    lat = latency["latency_ms"]
    return envelope(
        "predict", private, quick, clock,
        dataset={"model": f"explicit ALS on {ML_SMALL}", "users": len(artifacts.user_ids),
                 "movies": len(artifacts.item_ids)},
        config={**size, "max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER,
                "trigger_interval": private.spark.trigger_interval,
                "spark_master": private.spark.master,
                "topic_partitions": kafka.num_partitions},
        metrics={"throughput": throughput, "latency": latency, "rollover": roll},
        targets=[
            target("sustained pair requests/s", throughput["sustained_rps"], TARGET_RPS, ">=",
                   "req/s"),
            target(f"p99 latency at {size['latency_rate']} req/s", lat["p99"], TARGET_P99_MS,
                   "<=", "ms"),
            gap_target(roll, trigger_s),
        ],
        tables=predict_tables(n, size, throughput, latency, roll),
        rss=monitors,
        notes=predict_notes(private, trigger_s),
    )


def predict_tables(n: int, size: dict[str, Any], throughput: dict[str, Any],
                   latency: dict[str, Any], roll: dict[str, Any]) -> list[dict[str, Any]]:
    lat = latency["latency_ms"]
    return [
        table("Throughput (pre-loaded backlog)", ["measure", "value"], [
            ["requests", n], ["answered (records in the predictions topic)",
                              throughput["answered"]],
            ["micro-batches", throughput["batches"]],
            ["sustained requests/s (after the first batch)", throughput["sustained_rps"]],
            ["whole backlog requests/s (process start to last batch)",
             throughput["backlog_rps_incl_start"]],
            ["process start to first batch done (s)", throughput["first_batch_done_s"]],
            ["requests per predictor CPU second (whole phase, JVM start included)",
             throughput["requests_per_predictor_cpu_s"]],
            ["CPU-bound ceiling on an idle host, req/s (estimate: requests x cores / CPU s "
             "of predictor, Cassandra, Kafka; JVM start included)",
             throughput["cpu_bound_ceiling_rps"]]]),
        table("Micro-batches (predictor state)", ["batch", "requests", "done at (s)"],
              throughput["series"]),
        table(f"Latency at {size['latency_rate']} req/s for {size['latency_s']} s "
              "(requested_at -> prediction Kafka timestamp, ms)",
              ["sent", "answered", "p50", "p95", "p99", "max", "mean"],
              [[latency["sent"], latency["answered"], lat["p50"], lat["p95"], lat["p99"],
                lat["max"], lat["mean"]]]),
        table(f"Rollover under {size['rollover_rate']} req/s", ["measure", "value"], [
            ["completed", roll["error"] or "yes"],
            ["rollover wall time (s)", roll["rollover_s"]],
            ["successor caught up after (s)", roll["caught_up_s"]],
            ["longest gap between predictions during rollover (s)",
             roll["max_gap_during_s"]],
            ["longest gap before rollover, steady state (s)", roll["max_gap_before_s"]],
            ["requests sent / answered", f"{roll['sent']} / {roll['answered']}"],
            ["answered twice (overlap)", roll["duplicates"]],
            ["versions after the switch", roll["versions_after"]],
            ["old predictor's exit code (-9: killed after the 120 s stop timeout)",
             roll["old_exit_code"]]]),
    ]


def predict_notes(private: Settings, trigger_s: float) -> list[str]:
    return [
        f"Predictor settings: trigger {private.spark.trigger_interval}, at most "
        f"{MAX_OFFSETS_PER_TRIGGER:,} requests per micro-batch (the default is "
        f"{Settings().spark.max_offsets_per_trigger:,}), Spark master "
        f"{private.spark.master}.",
        "Latency includes the producer's linger (20 ms) and waiting for the next trigger "
        f"(up to {trigger_s:g} s): a micro-batch predictor's floor is the trigger "
        "interval, whatever its speed.",
        "Kafka timestamps are the producer's CreateTime, on the same host clock as "
        "requested_at.",
    ]


def gap_target(roll: dict[str, Any], trigger_s: float) -> dict[str, Any]:
    out = target("longest prediction gap during rollover", roll["max_gap_during_s"],
                 2 * trigger_s, "<=", "s", note=f"2 trigger intervals of {trigger_s:g} s")
    if roll["error"]:  # a rollover that never happened has not met its target
        out.update(met=False, note=f"rollover did not complete: {roll['error'][:200]}")
    return out


class Pairs:
    """Random (user, movie) pair requests over the model's users and movies."""

    def __init__(self, users: np.ndarray, movies: np.ndarray, seed: int = 3) -> None:
        self.users, self.movies = users, movies
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int) -> list[tuple[int, int]]:
        u = self.rng.choice(self.users, n)
        m = self.rng.choice(self.movies, n)
        return list(zip(u.tolist(), m.tolist(), strict=True))


def send_requests(settings: Settings, pairs: Pairs, prefix: str, n: int) -> None:
    from recommender.clients import kafka_producer

    producer = kafka_producer(settings.kafka, linger_ms=50, batch_size=512 * 1024)
    now = int(time.time() * 1000)
    topic = settings.kafka.requests_topic
    for i, (user, movie) in enumerate(pairs.draw(n)):
        producer.send(topic, key=str(user).encode(), value=orjson.dumps(
            {"request_id": f"{prefix}-{i}", "user_id": user, "movie_id": movie,
             "requested_at": now}))
    producer.flush(timeout=300)
    producer.close()


def create_group(settings: Settings, timeout_s: float = 60.0) -> None:
    """Make the predictor group known to its coordinator before the predictor commits to it.

    A brand-new group can get a retriable ``CoordinatorNotAvailable`` from a busy broker
    (seen on this shared host); the predictor only logs a failed commit and tries again after
    its next micro-batch, which would leave the lag unmeasurable for a while. Committing the
    earliest offsets first, with retries, gives the lag a starting point.
    """
    from kafka import TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    from recommender.clients import kafka_admin

    topic = settings.kafka.requests_topic
    offsets = {TopicPartition(topic, p): OffsetAndMetadata(0, "bench", -1)
               for p in topic_end_offsets(settings, topic)}
    deadline = time.monotonic() + timeout_s
    while True:
        admin = kafka_admin(settings.kafka)
        try:
            admin.alter_group_offsets(settings.kafka.predictor_group, offsets)
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log(f"predictor group not ready yet ({exc!r}); retrying")
            time.sleep(1)
        finally:
            admin.close()


def measure_throughput(settings: Settings, proc: Any, log_file: Any, n: int,
                       started: float) -> dict[str, Any]:
    """Poll the predictor's published state until it has answered the backlog."""
    from recommender.predict.rollover import read_state

    series: list[tuple[int, int, float]] = []  # (batches, requests so far, finished at)
    deadline = time.monotonic() + 1800
    t_zero = time.time() - (time.monotonic() - started)  # process start on the wall clock
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the predictor exited with {proc.returncode}:\n"
                               f"{log_file.read_text(errors='replace')[-3000:]}")
        state = read_state(settings, "old")
        if state and state.batches and (not series or state.batches != series[-1][0]):
            series.append((state.batches, state.predictions, state.updated_at))
            log(f"predictor: batch {state.batches}, {state.predictions:,} requests")
        if series and series[-1][1] >= n:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the predictor answered {series[-1][1] if series else 0} of "
                               f"{n} requests in 30 minutes")
        time.sleep(0.2)
    first, last = series[0], series[-1]
    sustained = ((last[1] - first[1]) / (last[2] - first[2])
                 if len(series) > 1 and last[2] > first[2] else None)
    answered = sum(topic_end_offsets(settings, settings.kafka.predictions_topic).values())
    return {"requests": n, "answered": answered, "batches": len(series),
            "sustained_rps": round(sustained) if sustained else None,
            "backlog_rps_incl_start": round(n / (last[2] - t_zero)),
            "first_batch_done_s": round(first[2] - t_zero, 1),
            "series": [[b, p, round(t - t_zero, 1)] for b, p, t in series]}


class Stream:
    """Pair requests at a fixed rate from a thread, each stamped with ``requested_at``."""

    def __init__(self, settings: Settings, pairs: Pairs, prefix: str, rate: float) -> None:
        self.settings, self.pairs, self.prefix, self.rate = settings, pairs, prefix, rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{prefix}", daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from recommender.clients import kafka_producer

        producer = kafka_producer(self.settings.kafka)
        topic = self.settings.kafka.requests_topic
        pool = self.pairs.draw(100_000)
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    user, movie = pool[self.sent % len(pool)]
                    producer.send(topic, key=str(user).encode(), value=orjson.dumps(
                        {"request_id": f"{self.prefix}-{self.sent}", "user_id": user,
                         "movie_id": movie, "requested_at": int(time.time() * 1000)}))
                    self.sent += 1
                time.sleep(0.002)
        finally:
            producer.flush(timeout=60)
            producer.close()


def read_predictions(settings: Settings, start: dict[int, int], prefix: str,
                     expected: int, timeout_s: float = 600) -> list[tuple[str, int, int, Any]]:
    """(request_id, requested_at, Kafka timestamp, model_version) of every prediction after
    ``start`` whose request id has ``prefix``, once ``expected`` distinct ids are answered."""
    from kafka import TopicPartition

    from recommender.clients import kafka_consumer

    topic = settings.kafka.predictions_topic
    consumer = kafka_consumer(settings.kafka, group_id=None)
    parts = [TopicPartition(topic, p) for p in sorted(start)]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, start[tp.partition])
    out: list[tuple[str, int, int, Any]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(seen)} of {expected} '{prefix}' requests were "
                                   f"answered in {timeout_s:.0f}s")
            for records in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                for record in records:
                    doc = orjson.loads(record.value)
                    rid = str(doc.get("request_id"))
                    if rid.startswith(f"{prefix}-"):
                        seen.add(rid)
                        out.append((rid, int(doc.get("requested_at") or 0), record.timestamp,
                                    doc.get("model_version")))
    finally:
        consumer.close()
    return out


def measure_latency(settings: Settings, pairs: Pairs, rate: float,
                    duration_s: float) -> dict[str, Any]:
    topic = settings.kafka.predictions_topic
    start = topic_end_offsets(settings, topic)
    log(f"latency: {rate:g} req/s for {duration_s:g} s")
    with Stream(settings, pairs, "lat", rate) as stream:
        time.sleep(duration_s)
    records = read_predictions(settings, start, "lat", stream.sent)
    latencies = [ts - requested for _, requested, ts, _ in records]
    result = {"rate": rate, "duration_s": duration_s, "sent": stream.sent,
              "answered": len({r[0] for r in records}), "latency_ms": percentiles(latencies)}
    log(f"latency: {result}")
    return result


def measure_rollover(settings: Settings, model: tuple[Settings, str], pairs: Pairs,
                     size: dict[str, Any], old: Any) -> dict[str, Any]:
    from recommender.errors import RecommenderError
    from recommender.predict.rollover import rollover

    target_version = copy_model(model, settings, new_name=True)
    topic = settings.kafka.predictions_topic
    start = topic_end_offsets(settings, topic)
    log(f"rollover to {target_version} under {size['rollover_rate']} req/s")
    with Stream(settings, pairs, "roll", size["rollover_rate"]) as stream:
        stream_started = time.time()
        time.sleep(size["rollover_before_s"])
        roll_started = time.time()
        try:
            # the promotion publishes the movie vectors under the private alias
            report = rollover(settings, target_version, timeout_s=size["rollover_timeout_s"])
            error = None
        except RecommenderError as exc:  # did not catch up in time: the old one still serves
            report, error = None, str(exc)
            log(f"rollover failed: {exc}")
        roll_ended = time.time()
        time.sleep(size["rollover_after_s"])
    records = read_predictions(settings, start, "roll", stream.sent)
    stamps = np.unique(np.array([ts for _, _, ts, _ in records], dtype=np.int64)) / 1000

    def max_gap(lo: float, hi: float) -> float | None:
        """Longest gap between consecutive timestamps, counting the last one before ``lo``
        and the first one after ``hi`` (a stall across the window's edge counts)."""
        inside = stamps[(stamps >= lo) & (stamps <= hi)]
        before, after = stamps[stamps < lo], stamps[stamps > hi]
        window = np.concatenate([before[-1:], inside, after[:1]])
        return round(float(np.diff(window).max()), 2) if len(window) > 1 else None

    settle = 2 * trigger_seconds(settings.spark.trigger_interval)
    after_switch = {v for _, _, ts, v in records if ts / 1000 > roll_ended + settle}
    old_exit = old.poll()
    return {"target_version": target_version, "error": error,
            "rollover_s": round(report.total_s, 1) if report else None,
            "caught_up_s": round(report.caught_up_s, 1) if report else None,
            "predecessors": report.predecessors if report else [],
            "old_exit_code": old_exit,
            "old_stopped_gracefully": old_exit == 0 if old_exit is not None else None,
            "sent": stream.sent, "answered": len({r[0] for r in records}),
            "duplicates": len(records) - len({r[0] for r in records}),
            "max_gap_during_s": max_gap(roll_started, roll_ended),
            "max_gap_before_s": max_gap(stream_started + 5, roll_started),
            "versions_after": sorted(str(v) for v in after_switch),
            "stream_started": stream_started, "rollover_window": [roll_started, roll_ended]}


if __name__ == "__main__":
    from bench.run_all import run_one

    run_one("predict")
