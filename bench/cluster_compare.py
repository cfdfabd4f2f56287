"""The cluster against the single-node stack, side by side in one run: the ingest, predictor
and serving benchmarks (``bench.ingest``, ``bench.predict``, ``bench.serve``, unchanged) run
first on the single-node stack (``local[*]``, replication 1, consistency ONE, no index
replica), then on the local cluster (``recommender stack up --nodes 3``: Kafka replication 3
with 2 in sync and acks=all, Cassandra replication 3 at LOCAL_QUORUM, one Elasticsearch
replica, Spark standalone with executors in two workers), each with its own private names.

    python -m bench.cluster_compare [--quick]   # -> bench/results/cluster_compare[.quick].json

Per headline figure: both values, the ratio cluster / single-node and the CPU seconds of
every node (each Kafka, Cassandra and Elasticsearch node, the Spark master and workers with
their executors, the driver processes) while the benchmark measured it, from the
benchmark's own psutil monitor. Around each phase a monitor of every node and of this
process's tree (predictor, API, load generator) gives the phase's CPU per node and the peak
resident memory of the servers and the whole pipeline together. Each stack is started if
it is not running and stopped again if this run started it, so the cluster phase does not
share the machine with an idle single-node stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench import common
from bench.monitor import MIB, RssMonitor, wait_for_quiet_stack
from bench.run_all import configure_logging, describe, failed
from bench.serve import LIVE
from recommender.settings import Settings, StackSettings

NAME = "cluster_compare"
BENCHMARKS = ("ingest", "predict", "serve")
SINGLE, CLUSTER = "single-node", "cluster"
NODES = 3
MEMORY_BUDGET_MIB = 16 * 1024  # the cluster plus the whole pipeline must fit in 16 GiB
SERVER_KINDS = ("kafka", "cassandra", "elasticsearch", "spark-master", "spark-worker")
KEPT = ("benchmark", "quick", "commit", "dirty", "started_at", "duration_s", "error",
        "metrics", "targets", "peak_rss_mib", "cpu_s", "host")  # of each benchmark's result


@dataclass(frozen=True)
class Figure:
    """One headline figure of a benchmark result: where it is (``path``; a dict step picks
    the list item whose fields match) and which measured phase its CPU seconds come from."""

    benchmark: str
    name: str
    path: tuple[Any, ...]
    unit: str
    higher_is_better: bool
    phase: str


FIGURES = (
    Figure("ingest", "ingest drain", ("metrics", "rows_per_s"), "rows/s", True, "all"),
    Figure("predict", "predictor, sustained", ("metrics", "throughput", "sustained_rps"),
           "req/s", True, "throughput"),
    Figure("predict", "predictor p99 latency at a fixed rate",
           ("metrics", "latency", "latency_ms", "p99"), "ms", False, "latency"),
    Figure("serve", "shipper into Elasticsearch", ("metrics", "shipper", "documents_per_s"),
           "docs/s", True, "shipper"),
    Figure("serve", f"API {LIVE}, closed loop",
           ("metrics", "api", {"name": LIVE, "mode": "closed"}, "achieved_rps"),
           "req/s", True, "API"),
    Figure("serve", f"API {LIVE} p99 at 200 req/s",
           ("metrics", "api", {"name": LIVE, "mode": "fixed"}, "latency_ms", "p99"),
           "ms", False, "API"),
)


# --- pure: reading results and comparing them --------------------------------------------


def dig(value: Any, path: tuple[Any, ...]) -> Any:
    """``value`` followed along ``path`` (keys, or dicts that pick the matching list item);
    None where a step is missing (a failed benchmark has no metrics)."""
    for step in path:
        if isinstance(step, dict):
            value = next((item for item in value or [] if isinstance(item, dict)
                          and all(item.get(k) == v for k, v in step.items())), None)
        elif isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def ratio(single: float | None, cluster: float | None) -> float | None:
    """cluster / single-node, None when either is missing or the single-node one is 0."""
    if single is None or cluster is None or not single:
        return None
    return round(cluster / single, 3)


def slowdown(single: float | None, cluster: float | None, higher_is_better: bool) -> str:
    """How many times slower the cluster is, in words a reader does not have to invert: a
    throughput that halves and a latency that doubles both read "2.0x slower"."""
    r = ratio(single, cluster)
    if r is None or r == 0:
        return "-"
    factor = 1 / r if higher_is_better else r
    return f"{factor:.1f}x slower" if factor >= 1 else f"{1 / factor:.1f}x faster"


def node_kind(label: str) -> str | None:
    """The server kind of a monitor label (``kafka``, ``kafka-2``, ``spark-worker-1``), None
    for a process that is not a server (a driver, the API, the load generator)."""
    match = re.fullmatch(r"(.+?)(?:-\d+)?", label)
    kind = match.group(1) if match else label
    return kind if kind in SERVER_KINDS else None


def cpu_per_node(cpu: dict[str, float]) -> dict[str, list[float]]:
    """CPU seconds grouped by server kind, one value per node in node order; every other
    process under its own label. What the comparison shows: is the work spread over the
    nodes, and which kind pays for the replicas."""
    out: dict[str, list[float]] = {}
    for label in sorted(cpu, key=lambda lb: (node_kind(lb) is None, lb)):
        out.setdefault(node_kind(label) or label, []).append(round(cpu[label], 1))
    return out


def describe_cpu(cpu: dict[str, float] | None) -> str:
    """``cpu_per_node`` in one table cell: ``kafka 1.0 + 1.2 + 0.9 | cassandra ...``."""
    if not cpu:
        return "-"
    parts = [f"{label} {' + '.join(f'{v:g}' for v in values)}"
             for label, values in cpu_per_node(cpu).items()]
    return f"{' | '.join(parts)} (total {sum(cpu.values()):.1f})"


def compare(figure: Figure, single: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """One figure on both stacks: values, ratio, slowdown and the CPU of each node while the
    benchmark measured it (``cpu_s`` of the figure's phase)."""
    values = {topology: dig(result, figure.path)
              for topology, result in ((SINGLE, single), (CLUSTER, cluster))}
    cpu = {topology: dig(result, ("cpu_s", figure.phase))
           for topology, result in ((SINGLE, single), (CLUSTER, cluster))}
    return {"benchmark": figure.benchmark, "figure": figure.name, "unit": figure.unit,
            "higher_is_better": figure.higher_is_better, SINGLE: values[SINGLE],
            CLUSTER: values[CLUSTER], "ratio": ratio(values[SINGLE], values[CLUSTER]),
            "cluster_is": slowdown(values[SINGLE], values[CLUSTER], figure.higher_is_better),
            "cpu_s": cpu, "cpu_s_per_node": {t: cpu_per_node(c or {}) for t, c in cpu.items()}}


def comparison_tables(rows: list[dict[str, Any]], peaks: dict[str, float]
                      ) -> list[dict[str, Any]]:
    """The side-by-side table, the CPU per node of each figure's measured phase, and the
    peak memory of each phase."""
    return [
        common.table("Cluster vs single-node, same run (ratio: cluster / single-node)",
                     ["benchmark", "figure", "single-node", "cluster", "ratio", "cluster is",
                      "CPU s per node, cluster (while measured)"],
                     [[r["benchmark"], f"{r['figure']} ({r['unit']})", r[SINGLE], r[CLUSTER],
                       r["ratio"], r["cluster_is"], describe_cpu(r["cpu_s"][CLUSTER])]
                      for r in rows]),
        common.table("CPU s per process, single-node (while measured)",
                     ["benchmark", "figure", "CPU s per process"],
                     [[r["benchmark"], r["figure"], describe_cpu(r["cpu_s"][SINGLE])]
                      for r in rows]),
        common.table("Peak resident memory, servers + the whole pipeline (sum of every "
                     "tracked process in one sample)", ["stack", "peak MiB", "peak GiB"],
                     [[t, mib, round(mib / 1024, 2)] for t, mib in peaks.items()]),
    ]


# --- running the benchmarks on one stack ---------------------------------------------------


def cluster_settings(base: Settings) -> Settings:
    """``base`` pointed at the local cluster as ``recommender stack env --nodes 3`` would:
    every node, replication 3, quorum consistency, one index replica, ``spark://``."""
    from recommender.stack.connect import as_account

    stack = StackSettings.model_validate({**base.stack.model_dump(exclude_unset=True),
                                          "nodes": NODES})
    return as_account(base.model_copy(update={"stack": stack}), stack, None)


@contextlib.contextmanager
def stack_running(stack: StackSettings) -> Iterator[None]:
    """The stack up for the block; stopped afterwards if this started it (a stack someone
    else runs is reused and left running)."""
    from recommender.stack import manager

    # pid files, not ``manager.status``: probing twelve stopped servers takes minutes
    already_up = all(svc.pid() is not None for svc in manager.services(stack))
    manager.up(stack, on_event=common.log)
    try:
        yield
    finally:
        if not already_up:
            common.log(f"stopping the {stack.nodes}-node stack this run started")
            manager.down(stack, on_event=common.log)


def run_benchmark(name: str, settings: Settings, quick: bool) -> dict[str, Any]:
    """One benchmark's ``run`` as ``bench.run_all`` calls it; a failure is recorded with its
    traceback and the next benchmark still runs."""
    import importlib

    clock = common.Clock()
    try:
        result = importlib.import_module(f"bench.{name}").run(settings, quick)
    except Exception:  # noqa: BLE001 - recorded; the comparison shows the gap
        result = failed(name, quick, clock, traceback.format_exc(), settings)
    if result.get("error"):
        common.log(f"{name} failed:\n{result['error'][-3000:]}")
    return {k: result[k] for k in KEPT if k in result}


def run_phase(topology: str, settings: Settings, quick: bool
              ) -> tuple[dict[str, dict[str, Any]], RssMonitor]:
    """Every benchmark on one stack, in one workspace (the benchmarks share its fixtures:
    ingest's keyspace, one trained model), under a monitor of every node and of this
    process's tree; the results by benchmark and the monitor."""
    common.close_workspace()
    results: dict[str, dict[str, Any]] = {}
    with stack_running(settings.stack), RssMonitor(interval_s=2.0) as phase:
        phase.track_stack(settings)
        phase.track("benchmark processes (drivers, predictor, API, load generator)",
                    os.getpid())
        common.versions(settings)  # asked while the servers answer (cached for the envelope)
        common.log(f"{topology}: waited {wait_for_quiet_stack(settings):.0f}s for a quiet stack")
        common.workspace(settings)
        try:
            for name in BENCHMARKS:
                common.log(f"=== {topology}: {name} ({'quick' if quick else 'full'}) ===")
                results[name] = run_benchmark(name, settings, quick)
        finally:
            common.close_workspace()  # private names dropped while the servers answer
    return results, phase


def run(base: Settings, quick: bool) -> dict[str, Any]:
    """Both phases, then the comparison in the standard envelope."""
    clock = common.Clock()
    topologies = {SINGLE: base, CLUSTER: cluster_settings(base)}
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    monitors: dict[str, RssMonitor] = {}
    for topology, settings in topologies.items():
        runs[topology], monitors[topology] = run_phase(topology, settings, quick)
    rows = [compare(f, runs[SINGLE].get(f.benchmark, {}), runs[CLUSTER].get(f.benchmark, {}))
            for f in FIGURES]
    peaks = {t: round(m.peak_total / MIB, 1) for t, m in monitors.items()}
    errors = [f"{t}/{n}: {r['error'].strip().splitlines()[-1]}"
              for t, by in runs.items() for n, r in by.items() if r.get("error")]
    result = common.envelope(
        NAME, topologies[CLUSTER], quick, clock,
        dataset={"benchmarks": ", ".join(BENCHMARKS), "nodes": NODES},
        config={t: stack_config(s) for t, s in topologies.items()},
        metrics={"figures": rows, "peak_rss_total_mib": peaks, "runs": runs},
        targets=[common.target("peak RSS of the cluster and the whole pipeline",
                               peaks[CLUSTER], MEMORY_BUDGET_MIB, "<=", "MiB")],
        tables=comparison_tables(rows, peaks), rss=monitors, notes=NOTES)
    if errors:
        result["error"] = "\n".join(errors)
    return result


def stack_config(settings: Settings) -> dict[str, Any]:
    """What differs between the two stacks, for the reader of the results file."""
    return {"nodes": settings.stack.nodes, "spark_master": settings.spark.master,
            "spark_cores_max": settings.spark.cores_max,
            "kafka_replication_factor": settings.kafka.replication_factor,
            "kafka_min_insync_replicas": settings.kafka.min_insync_replicas,
            "cassandra_replication_factor": settings.cassandra.replication_factor,
            "cassandra_consistency_level": settings.cassandra.consistency_level,
            "elasticsearch_replicas": settings.elasticsearch.number_of_replicas}


NOTES = [
    "Both phases run the unchanged ingest, predict and serve benchmarks (their own warm-ups, "
    "quiet-stack waits and private names) in one process, one after the other; "
    "metrics.runs keeps each benchmark's metrics, targets and CPU per phase.",
    "CPU s per node are those of the figure's measured phase (the benchmark's own monitor): "
    "Spark workers include their executors and the Python workers those start; the driver "
    "of ingest is this process, the predictor and the API are processes of their own.",
    "One 2-core machine runs all nine server JVMs, the Spark master and workers, the "
    "executors and the drivers: the cluster's figures are those of a contended host, not of "
    "three machines. What they show is the cost of replication and quorum work per unit of "
    "throughput, and that the same code runs on spark:// by configuration alone.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the benchmarks' quick sizes (an hour on 2 shared cores)")
    args = parser.parse_args(argv)
    configure_logging()
    started = time.monotonic()
    result = run(common.base_settings(), args.quick)
    result["doc"] = describe(__doc__)
    path = common.RESULTS_DIR / f"{NAME}{'.quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    common.log(f"wrote {path.relative_to(common.REPO)} after {time.monotonic() - started:.0f}s")
    for row in result["metrics"]["figures"]:
        common.log(f"{row['figure']}: {row[SINGLE]} -> {row[CLUSTER]} {row['unit']} "
                   f"({row['cluster_is']})")
    return 1 if result.get("error") else 0


if __name__ == "__main__":
    raise SystemExit(main())
