"""The cluster vs single-node comparison's arithmetic (``bench.cluster_compare``): reading a
figure out of a benchmark result, the ratio and the slowdown, and the CPU grouped by node."""

from __future__ import annotations

from bench.cluster_compare import (
    CLUSTER,
    FIGURES,
    SINGLE,
    Figure,
    compare,
    cpu_per_node,
    describe_cpu,
    dig,
    node_kind,
    ratio,
    slowdown,
)
from bench.serve import LIVE


def test_dig_follows_keys_and_picks_list_items_by_fields() -> None:
    result = {"metrics": {"api": [{"name": LIVE, "mode": "fixed", "achieved_rps": 200},
                                  {"name": LIVE, "mode": "closed", "achieved_rps": 950}]}}
    assert dig(result, ("metrics", "api", {"name": LIVE, "mode": "closed"},
                        "achieved_rps")) == 950
    assert dig(result, ("metrics", "missing", "x")) is None
    assert dig({}, ("metrics", "api", {"mode": "closed"}, "achieved_rps")) is None
    assert dig({"metrics": 3}, ("metrics", "deeper")) is None


def test_ratio_is_cluster_over_single_and_none_when_unmeasured() -> None:
    assert ratio(1000, 250) == 0.25
    assert ratio(None, 250) is None
    assert ratio(1000, None) is None
    assert ratio(0, 5) is None


def test_slowdown_reads_the_same_for_throughput_and_latency() -> None:
    assert slowdown(1000, 500, higher_is_better=True) == "2.0x slower"
    assert slowdown(100, 200, higher_is_better=False) == "2.0x slower"
    assert slowdown(100, 50, higher_is_better=False) == "2.0x faster"
    assert slowdown(None, 50, higher_is_better=True) == "-"
    assert slowdown(100, 0, higher_is_better=True) == "-"


def test_node_kind_knows_servers_and_nothing_else() -> None:
    assert node_kind("kafka") == "kafka"
    assert node_kind("kafka-3") == "kafka"
    assert node_kind("spark-worker-2") == "spark-worker"
    assert node_kind("spark-master-1") == "spark-master"
    assert node_kind("predictor (python, Spark JVM, workers)") is None
    assert node_kind("API") is None


def test_cpu_per_node_groups_nodes_of_a_kind_in_order_servers_first() -> None:
    cpu = {"kafka-2": 2.04, "kafka-1": 1.0, "API": 9.0, "cassandra-1": 4.0,
           "spark-worker-1": 20.0, "spark-worker-2": 18.5}
    grouped = cpu_per_node(cpu)
    assert grouped == {"cassandra": [4.0], "kafka": [1.0, 2.0],
                       "spark-worker": [20.0, 18.5], "API": [9.0]}
    assert list(grouped)[-1] == "API"
    assert describe_cpu({"kafka-1": 1.0, "kafka-2": 2.0}) == "kafka 1 + 2 (total 3.0)"
    assert describe_cpu(None) == "-"


def test_compare_takes_values_and_the_measured_phase_cpu_of_both_stacks() -> None:
    figure = Figure("ingest", "drain", ("metrics", "rows_per_s"), "rows/s", True, "all")
    single = {"metrics": {"rows_per_s": 20_000}, "cpu_s": {"all": {"kafka": 1.0}}}
    cluster = {"metrics": {"rows_per_s": 5_000},
               "cpu_s": {"all": {"kafka-1": 1.0, "kafka-2": 1.5}}}
    row = compare(figure, single, cluster)
    assert (row[SINGLE], row[CLUSTER], row["ratio"]) == (20_000, 5_000, 0.25)
    assert row["cluster_is"] == "4.0x slower"
    assert row["cpu_s_per_node"] == {SINGLE: {"kafka": [1.0]}, CLUSTER: {"kafka": [1.0, 1.5]}}
    failed = compare(figure, {"error": "boom"}, cluster)
    assert failed[SINGLE] is None and failed["ratio"] is None
    assert failed["cpu_s_per_node"][SINGLE] == {}


def test_every_figure_names_a_benchmark_that_is_run() -> None:
    from bench.cluster_compare import BENCHMARKS

    assert {f.benchmark for f in FIGURES} == set(BENCHMARKS)
