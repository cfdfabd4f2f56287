"""Replay throughput: ml-latest-small into a fresh 4-partition topic from one process, side by
side with Kafka's own ``ProducerPerformance`` on the same broker, message size and producer
settings (acks=all, linger 20 ms, 256 KiB batches, lz4).

``ProducerPerformance`` runs twice: with ``--record-size`` (the average JSON size of a
``RatingEvent``; its payload is random letters, which lz4 compresses differently from JSON) and
with ``--payload-file`` holding the real JSON events, so the ratio is read against both.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    begin,
    envelope,
    log,
    table,
    target,
)
from bench.fixtures import ML_SMALL, ml_small
from bench.monitor import RssMonitor, wait_for_quiet_stack
from data_loading.replay import replay
from recommender.clients import BULK_PRODUCER_TUNING
from recommender.offsets import topic_end_offsets
from recommender.settings import Settings
from recommender.topics import ensure_topics

TARGET_EVENTS_PER_S = 100_000
PARTITIONS = 4
PERF_RECORDS = 200_000
PERF_PROPS = ["acks=all", "linger.ms=20", "batch.size=262144", "compression.type=lz4"]
PERF_LINE = re.compile(
    r"(?P<records>\d+) records sent, (?P<rps>[\d.]+) records/sec \((?P<mbps>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99.9th")


REPLAY_NOTES = [
    "process CPU s is user+system time of the replay process (librdkafka's "
    "threads included): records per CPU second is what one uncontended core would "
    "reach, the wall-clock rate also reflects other load on the host.",
    "replay() times itself from the first send to the last acknowledgement "
    "(producer bootstrap excluded); events are built from the pandas frame on the fly.",
    "ProducerPerformance's records/s is its own final summary line; its JVM start is "
    "not included in its number.",
    "Each replay run starts once the stack uses under 0.2 cores and the host under "
    "0.5 (config.seconds_waited_for_a_quiet_host).",
]


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    bench_run, clock, private = begin(settings, "replay", kafka={"num_partitions": PARTITIONS})
    dataset = ml_small(private)
    events = dataset.ratings()
    payloads = [orjson.dumps(e) for e in events]
    avg_size = sum(map(len, payloads)) / len(payloads)
    payload_file = bench_run.tmp / "replay-payloads.jsonl"
    payload_file.write_bytes(b"\n".join(payloads))
    repeats = 2 if quick else 5
    runs: list[dict[str, Any]] = []
    waited: list[float] = []
    with RssMonitor(interval_s=0.2) as rss:
        rss.track("replay process (python)", os.getpid(), children=False)
        rss.track_stack(private)
        for i in range(repeats):
            topic = bench_run.topic("replay", f"run{i}")
            ensure_topics(private, topic, partitions=PARTITIONS)
            waited.append(wait_for_quiet_stack(private))
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            result = replay(private, events, topic, resume=False)
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            bench_run.files.append(Path(result.progress_file))
            in_topic = sum(topic_end_offsets(private, topic).values())
            runs.append({"run": i + 1, "events": result.acked, "seconds": round(result.seconds, 3),
                         "events_per_s": round(result.events_per_s), "in_topic": in_topic,
                         "cpu_s": round(cpu_s, 2),
                         "events_per_cpu_s": round(result.acked / cpu_s) if cpu_s else None})
            log(f"replay run {i + 1}: {result.acked:,} events in {result.seconds:.2f}s "
                f"= {result.events_per_s:,.0f}/s ({in_topic:,} in the topic)")
        perf_size = producer_performance(bench_run, private, rss, "random", ["--record-size",
                                                                             str(round(avg_size))])
        perf_json = producer_performance(bench_run, private, rss, "json", [
            "--payload-file", str(payload_file), "--payload-delimiter", "\n"])
    median = statistics.median(r["events_per_s"] for r in runs)
    best = max(r["events_per_s"] for r in runs)
    ratio = round(median / perf_size["records_per_s"], 3) if perf_size else None
    ratio_json = round(median / perf_json["records_per_s"], 3) if perf_json else None
    complete = all(r["in_topic"] == r["events"] == len(events) for r in runs)
    rows = [[f"replay run {r['run']}", f"{r['events_per_s']:,}", r["seconds"], r["events"],
             r["cpu_s"], r["events_per_cpu_s"]] for r in runs]
    for label, perf in (("ProducerPerformance --record-size", perf_size),
                        ("ProducerPerformance --payload-file (real JSON)", perf_json)):
        if perf:
            rows.append([label, f"{perf['records_per_s']:,.0f}", perf["seconds"], perf["records"],
                         None, None])
    return envelope(
        "replay", private, quick, clock,
        dataset={"name": ML_SMALL, "events": len(events), "avg_message_bytes": round(avg_size, 1),
                 "partitions": PARTITIONS},
        config={"repeats": repeats, "seconds_waited_for_a_quiet_host": waited,
                "producer": {"library": "confluent-kafka (librdkafka)",
                             **BULK_PRODUCER_TUNING},
                "producer_performance": {"records": PERF_RECORDS, "props": PERF_PROPS}},
        metrics={"events_per_s_median": median, "events_per_s_best": best, "runs": runs,
                 "all_events_in_topic": complete, "producer_performance": perf_size,
                 "producer_performance_json_payload": perf_json,
                 "ratio_replay_to_producer_performance": ratio,
                 "ratio_replay_to_producer_performance_json": ratio_json},
        targets=[target("replay events/s from one process (median)", median,
                        TARGET_EVENTS_PER_S, ">=", "events/s")],
        tables=[table("Throughput", ["producer", "records/s", "seconds", "records",
                                     "process CPU s", "records per CPU s"], rows),
                table("Ratio replay (median) / ProducerPerformance", ["payload", "ratio"],
                      [["random letters, --record-size", ratio],
                       ["real RatingEvent JSON, --payload-file", ratio_json]])],
        rss=rss,
        notes=REPLAY_NOTES,
    )


def producer_performance(bench_run: Any, settings: Settings, rss: RssMonitor, label: str,
                         payload_args: list[str]) -> dict[str, Any] | None:
    """Kafka's producer benchmark into a fresh topic; its final summary line, parsed."""
    from recommender.runtime import find_java, maven_classpath
    from recommender.topics import ensure_topics

    topic = bench_run.topic("replay", f"perf-{label}")
    ensure_topics(settings, topic, partitions=PARTITIONS)
    classpath = os.pathsep.join(str(p) for p in maven_classpath("kafka", settings.stack.cache_dir))
    cmd = [str(find_java(settings.stack)), "-Xmx256m", "-cp", classpath,
           "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
           "--num-records", str(PERF_RECORDS), *payload_args, "--throughput", "-1",
           "--producer-props", f"bootstrap.servers={settings.kafka.bootstrap_servers}",
           *PERF_PROPS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rss.track(f"ProducerPerformance JVM ({label})", proc.pid)
    out, _ = proc.communicate(timeout=600)
    matches = [m for m in map(PERF_LINE.search, out.splitlines()) if m]
    if proc.returncode != 0 or not matches:
        log(f"ProducerPerformance ({label}) failed ({proc.returncode}): {out[-1500:]}")
        return None
    m = matches[-1]
    records, rps = int(m["records"]), float(m["rps"])
    log(f"ProducerPerformance ({label}): {m.group(0)}")
    return {"records": records, "records_per_s": rps, "mb_per_s": float(m["mbps"]),
            "seconds": round(records / rps, 3) if rps else None,
            "latency_ms": {"avg": float(m["avg"]), "max": float(m["max"]), "p50": int(m["p50"]),
                           "p95": int(m["p95"]), "p99": int(m["p99"]), "p99.9": int(m["p999"])},
            "summary_line": m.group(0)}


if __name__ == "__main__":
    from bench.run_all import run_one

    run_one("replay")
