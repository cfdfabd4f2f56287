"""One server of each kind down, and the service keeps working: node loss under steady load
on the local cluster, checked against the ledger.

The pipeline runs on the cluster as an operator runs it (ingest, predictor, shipper and API
processes; Spark on the standalone master) on private names while ratings are replayed,
pair prediction requests sent and the API read at a steady rate. One fault after the
other, a node is SIGKILLed, left down for ``DOWN_S``, started again and waited for until
its cluster is whole (Kafka ISR back to 3, Cassandra's hints delivered, Elasticsearch
green, the worker registered). Per fault the run records the API's availability and p99
while the node was out, the longest gap between predictions and between ingested ratings,
and the time to recover; at the end every acknowledged rating and request is checked
layer by layer (``tests.support.ledger``).

Last, ``make cluster`` takes two Cassandra nodes down at once (``quorum_loss``): reads at
QUORUM cannot be answered, so the API must answer 503 with the reason, the jobs must wait
and retry without losing anything, and one node back must bring the service back.

``make test`` runs the smoke test (a Cassandra node, then the Kafka broker leading the
busiest partition); ``make cluster`` runs every node loss and writes ``cluster.json``.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from bench.common import table, target
from bench.fixtures import ml_small, prepare_keyspace
from recommender.clients import elasticsearch_client, kafka_admin
from recommender.offsets import topic_end_offsets
from recommender.runtime import find_java, wait_for
from recommender.settings import Settings
from recommender.stack import manager
from recommender.stack.base import Service
from recommender.stack.elasticsearch import ElasticsearchService
from recommender.stack.kafka import KafkaService
from recommender.supervisor import Job
from tests.support.jobs import INGEST, PREDICT, SHIP
from tests.support.ledger import USERS, Fault, Pipeline, Run, run_and_check
from tests.support.names import private
from tests.support.servers import kill, start
from tests.support.topics import read_all

DOWN_S = 20.0  # how long a killed node stays down while the load runs
QUORUM_DOWN_S = 60.0  # how long two Cassandra nodes stay down at once
QUORUM_SETTLE_S = 20.0  # until the surviving node has convicted the other two (gossip)
MIN_QUORUM_503_SHARE = 0.99  # of the reads after QUORUM_SETTLE_S, answered 503 with a reason
HEAL_TIMEOUT_S = 600.0
API_READS_PER_S = 20
MIN_AVAILABILITY = 0.999
MAX_BROKER_GAP_S = 30.0  # a broker or worker loss: leader election and task retries
MAX_STORE_GAP_S = 10.0  # a Cassandra or Elasticsearch node: the normal batch rhythm


class ApiReader(threading.Thread):
    """A website reading ``/users/{id}/recommendations`` at a steady rate: every answer's
    time, status and latency, so any window can be judged afterwards."""

    def __init__(self, base_url: str) -> None:
        super().__init__(name="api-reader", daemon=True)
        self.base_url = base_url
        self.halt = threading.Event()
        self.answers: list[tuple[float, int, float]] = []  # (monotonic, status, latency s)

    def run(self) -> None:
        rng = random.Random(5)
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.halt.is_set():
                tick = time.monotonic()
                try:
                    status = client.get(f"/users/{rng.randint(1, USERS)}/recommendations"
                                        ).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((tick, status, time.monotonic() - tick))
                self.halt.wait(max(0.0, 1 / API_READS_PER_S - (time.monotonic() - tick)))

    def statuses(self, start: float, end: float) -> dict[int, int]:
        """How many reads made in [start, end] got each status (0: no answer)."""
        return dict(Counter(status for t, status, _ in self.answers if start <= t <= end))

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Availability (2xx share) and p99 latency of the reads made in [start, end]."""
        inside = [(status, latency) for t, status, latency in self.answers
                  if start <= t <= end]
        if not inside:
            return {"reads": 0, "availability": None, "p99_ms": None}
        ok = sum(200 <= status < 300 for status, _ in inside)
        p99 = float(np.percentile([latency for _, latency in inside], 99)) * 1000
        return {"reads": len(inside), "failed": len(inside) - ok,
                "availability": round(ok / len(inside), 5), "p99_ms": round(p99, 1)}


@dataclass
class Cluster:
    """The pipeline on the cluster, the API reader, and the stack's own service objects."""

    pipeline: Pipeline
    reader: ApiReader
    java: Path
    services: list[Service] = field(default_factory=list)

    def node(self, kind: str, number: int) -> Service:
        return next(s for s in self.services if s.kind == kind and s.node == number)

    def nodes(self, kind: str) -> list[Service]:
        return [s for s in self.services if s.kind == kind]


# --- which node to kill ---------------------------------------------------------------

Pick = Callable[[Cluster], list[Service]]


def busiest_partition_leader(cluster: Cluster) -> list[Service]:
    """The broker leading the ratings topic's partition that holds the most records."""
    settings = cluster.pipeline.settings
    topic = settings.kafka.ratings_topic
    admin = kafka_admin(settings.kafka)
    try:
        partitions = admin.describe_topics([topic])[0]["partitions"]
    finally:
        admin.close()
    ends = topic_end_offsets(settings, topic)
    busiest = max(partitions, key=lambda p: ends[p["partition_index"]])
    return [cluster.node("kafka", busiest["leader_id"])]


def active_controller(cluster: Cluster) -> list[Service]:
    kafka = cluster.nodes("kafka")[0]
    assert isinstance(kafka, KafkaService)
    leader = kafka.quorum_leader(cluster.java)
    assert leader is not None, "no KRaft quorum leader"
    return [cluster.node("kafka", leader)]


def elected_master(cluster: Cluster) -> list[Service]:
    es = cluster.nodes("elasticsearch")[0]
    assert isinstance(es, ElasticsearchService)
    master = es.elected_master()
    assert master is not None
    return [cluster.node("elasticsearch", master)]


def numbered(kind: str, number: int) -> Pick:
    return lambda cluster: [cluster.node(kind, number)]


def one_of_each(cluster: Cluster) -> list[Service]:
    """A node of every kind at once: a broker, a Cassandra and an Elasticsearch node that
    are not the ones killed before, and a worker."""
    return [cluster.node("kafka", 3), cluster.node("cassandra", 3),
            cluster.node("elasticsearch", 2), cluster.node("spark-worker", 1)]


# --- is the cluster whole again --------------------------------------------------------

def kafka_whole(cluster: Cluster) -> bool:
    """Every partition of the run's topics has all 3 replicas in sync."""
    settings = cluster.pipeline.settings
    k = settings.kafka
    admin = kafka_admin(k, request_timeout_ms=5000)
    try:
        topics = admin.describe_topics([k.ratings_topic, k.requests_topic, k.predictions_topic])
    finally:
        admin.close()
    return all(len(p["isr_nodes"]) == len(p["replica_nodes"]) == 3
               for t in topics for p in t["partitions"])


def cassandra_whole(cluster: Cluster) -> bool:
    """Every node answers, and none holds hints still to deliver to a node that was down."""
    return all(node.safe_ready() and not any((node.data_dir / "hints").glob("*.hints"))
               for node in cluster.nodes("cassandra"))


def elasticsearch_whole(cluster: Cluster) -> bool:
    es = elasticsearch_client(cluster.pipeline.settings.elasticsearch, request_timeout=10)
    try:
        health = es.cluster.health()
    finally:
        es.close()
    return health["status"] == "green" and health["number_of_nodes"] == 3


WHOLE: dict[str, Callable[[Cluster], bool]] = {
    "kafka": kafka_whole, "cassandra": cassandra_whole, "elasticsearch": elasticsearch_whole,
    "spark-worker": lambda cluster: all(w.safe_ready() for w in cluster.nodes("spark-worker")),
}


def node_loss(pick: Pick, cluster: Cluster) -> Fault:
    """SIGKILL the picked nodes, keep them down ``DOWN_S`` under load, start them again and
    wait until their clusters are whole; the API's figures while they were out."""
    def inject(_: Pipeline) -> dict[str, Any]:
        victims = pick(cluster)
        started, started_ms = time.monotonic(), int(time.time() * 1000)
        for node in victims:
            kill(node)
        time.sleep(DOWN_S)
        for node in victims:
            start(node.settings, node)
        restarted = time.monotonic()
        kinds = sorted({node.kind for node in victims})
        wait_for(lambda: all(safe(WHOLE[kind], cluster) for kind in kinds),
                 f"{', '.join(n.name for n in victims)} to rejoin", HEAL_TIMEOUT_S, poll_s=2)
        healed = time.monotonic()
        return {"nodes": [n.name for n in victims], "kinds": kinds,
                "killed_at_ms": started_ms, "down_s": round(restarted - started, 1),
                "recovered_after_restart_s": round(healed - restarted, 1),
                "api": cluster.reader.window(started, healed),
                "until_ms": int(time.time() * 1000)}
    return inject


QUORUM_LOSS = "SIGKILL two Cassandra nodes at once (quorum lost)"


def quorum_loss(cluster: Cluster) -> Fault:
    """SIGKILL Cassandra nodes 2 and 3 under load for ``QUORUM_DOWN_S``: what the API answers
    meanwhile (statuses, and the reason one read gives), then start node 2 and time until
    the API answers 2xx again, then node 3 and wait until the cluster is whole."""
    def inject(_: Pipeline) -> dict[str, Any]:
        victims = [cluster.node("cassandra", 2), cluster.node("cassandra", 3)]
        started, started_ms = time.monotonic(), int(time.time() * 1000)
        for node in victims:
            kill(node)
        time.sleep(QUORUM_SETTLE_S)
        reason = api_error(cluster.reader.base_url)
        time.sleep(QUORUM_DOWN_S - QUORUM_SETTLE_S)
        lost_until = time.monotonic()
        start(victims[0].settings, victims[0])
        wait_for(lambda: api_error(cluster.reader.base_url) is None,
                 "the API to answer again with two Cassandra nodes up", HEAL_TIMEOUT_S, poll_s=2)
        answering = time.monotonic()
        start(victims[1].settings, victims[1])
        wait_for(lambda: safe(cassandra_whole, cluster), "Cassandra to be whole again",
                 HEAL_TIMEOUT_S, poll_s=2)
        return {"nodes": [n.name for n in victims], "kinds": ["cassandra"],
                "killed_at_ms": started_ms, "down_s": round(lost_until - started, 1),
                "quorum_lost": {"statuses": cluster.reader.statuses(
                    started + QUORUM_SETTLE_S, lost_until), "reason": reason},
                "api_answering_after_restart_s": round(answering - lost_until, 1),
                "recovered_after_restart_s": round(time.monotonic() - lost_until, 1),
                "until_ms": int(time.time() * 1000)}
    return inject


def api_error(base_url: str) -> dict[str, Any] | None:
    """What one recommendations read answers when it is not 2xx (None when it is)."""
    response = httpx.get(f"{base_url}/users/1/recommendations", timeout=30)
    if response.is_success:
        return None
    return {"status": response.status_code, "detail": response.json().get("detail")}


def quorum_targets(run: Run) -> list[dict[str, Any]]:
    """While the quorum was lost, reads were answered 503 with a reason that names the
    consistency level; the jobs' survival and the ledger are ``run_and_check``'s."""
    fault = next(f for f in run.faults if f["fault"] == QUORUM_LOSS)
    statuses = {int(k): n for k, n in fault["quorum_lost"]["statuses"].items()}
    reason = fault["quorum_lost"]["reason"] or {}
    return [target(f"{QUORUM_LOSS}: reads answered 503", statuses.get(503, 0)
                   / max(1, sum(statuses.values())), MIN_QUORUM_503_SHARE, ">=",
                   note=f"statuses {statuses}"),
            target(f"{QUORUM_LOSS}: the 503 names the consistency level",
                   float("consistency_level" in str(reason.get("detail"))), 1.0, ">=",
                   note=str(reason))]


def safe(check: Callable[[Cluster], bool], cluster: Cluster) -> bool:
    try:
        return check(cluster)
    except Exception:  # noqa: BLE001 - a node still starting answers with errors
        return False


# --- gaps in the flow ------------------------------------------------------------------

def longest_gap_s(times_ms: list[int], start_ms: int, end_ms: int) -> float:
    """The longest stretch of [start_ms, end_ms] without an event."""
    inside = sorted(t for t in times_ms if start_ms <= t <= end_ms)
    edges = [start_ms, *inside, end_ms]
    return round(max(b - a for a, b in pairwise(edges)) / 1000, 1)


def flow_times(pipeline: Pipeline) -> dict[str, list[int]]:
    """When each prediction was produced (Kafka timestamps) and each rating ingested."""
    from elasticsearch import helpers

    settings = pipeline.settings
    predictions = [r.timestamp for r in read_all(settings, settings.kafka.predictions_topic)]
    es = elasticsearch_client(settings.elasticsearch, request_timeout=300)
    try:
        docs = helpers.scan(es, index=f"{pipeline.names.ratings_prefix}*",
                            query={"query": {"term": {"source": pipeline.source}}},
                            _source=["ingested_at"], ignore_unavailable=True)
        ingested = [int(d["_source"]["ingested_at"]) for d in docs]
    finally:
        es.close()
    return {"predictions": predictions, "ingested ratings": ingested}


def node_loss_targets(pipeline: Pipeline, run: Run) -> list[dict[str, Any]]:
    """Per fault: the API's availability while the node was out, and the longest gap in the
    predictions and the ingested ratings (also written into the fault's record)."""
    times = flow_times(pipeline)
    targets = []
    for fault in run.faults:
        if "api" not in fault:
            continue
        window = (fault["killed_at_ms"], fault["until_ms"])
        stores_only = set(fault["kinds"]) <= {"cassandra", "elasticsearch"}
        bound = MAX_STORE_GAP_S if stores_only else MAX_BROKER_GAP_S
        fault["longest_gap_s"] = {what: longest_gap_s(t, *window) for what, t in times.items()}
        availability = fault["api"]["availability"]
        targets.append(target(f"{fault['fault']}: API reads answered 2xx",
                              availability if availability is not None else 0.0,
                              MIN_AVAILABILITY, ">=", note=f"p99 {fault['api']['p99_ms']} ms"))
        for what, gap in fault["longest_gap_s"].items():
            targets.append(target(f"{fault['fault']}: longest gap in {what} (s)", gap, bound,
                                  "<="))
    return targets


# --- the runs ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cluster(cluster_trained: Settings, tmp_path: Path) -> Iterator[Cluster]:
    settings = private(cluster_trained, "cluster", own_keyspace=True)
    dataset = ml_small(settings)
    prepare_keyspace(settings, dataset)
    port = free_port()
    serve = Job("serve", ("serve", "--host", "127.0.0.1", "--port", str(port)))
    pipeline = Pipeline(settings, tmp_path / "jobs", dataset, jobs=(INGEST, PREDICT, SHIP, serve))
    reader = ApiReader(f"http://127.0.0.1:{port}")
    own = Cluster(pipeline, reader, find_java(settings.stack), manager.services(settings.stack))
    yield own
    reader.halt.set()
    pipeline.jobs.stop()
    pipeline.close()


SMOKE_LOSSES: dict[str, Pick] = {
    "SIGKILL Cassandra node 2": numbered("cassandra", 2),
    "SIGKILL the Kafka broker leading the busiest partition": busiest_partition_leader,
}
ALL_LOSSES: dict[str, Pick] = {
    "SIGKILL the Kafka broker leading the busiest partition": busiest_partition_leader,
    "SIGKILL the active KRaft controller": active_controller,
    "SIGKILL Cassandra node 2": numbered("cassandra", 2),
    "SIGKILL the elected Elasticsearch master": elected_master,
    "SIGKILL Spark worker 2": numbered("spark-worker", 2),
    "SIGKILL one node of every kind at once": one_of_each,
}


def run_on_cluster(cluster: Cluster, losses: dict[str, Pick], quick: bool,
                   gaps_are_targets: bool) -> None:
    """Every node loss, then (the full run) the quorum loss; the smoke test holds the API to
    its availability only."""
    faults = {name: node_loss(pick, cluster) for name, pick in losses.items()}
    if not quick:
        faults[QUORUM_LOSS] = quorum_loss(cluster)
    cluster.reader.start()  # the API starts with the jobs; only reads during faults count

    def more(run: Run) -> list[dict[str, Any]]:
        targets = node_loss_targets(cluster.pipeline, run)
        if gaps_are_targets:
            return targets + quorum_targets(run)
        # the smoke test reports the gaps and holds the API to its availability only
        return [t for t in targets if "API reads" in t["name"]]

    def tables(run: Run) -> list[dict[str, Any]]:
        return [losses_table(run)] + ([] if quick else [quorum_table(run)])

    run_and_check(cluster.pipeline, faults, result="cluster", quick=quick, more_targets=more,
                  more_tables=tables)


def losses_table(run: Run) -> dict[str, Any]:
    """Per node loss: the API while the node was out, the longest gaps, the recovery."""
    rows = [[f["fault"], ", ".join(f["nodes"]), f["api"]["availability"], f["api"]["p99_ms"],
             f["longest_gap_s"]["predictions"], f["longest_gap_s"]["ingested ratings"],
             f["down_s"], f["recovered_after_restart_s"], f.get("caught_up_after_s")]
            for f in run.faults if "api" in f]
    return table("Node losses under load", [
        "fault", "nodes", "API 2xx share", "API p99 (ms)", "longest prediction gap (s)",
        "longest ingest gap (s)", "down until answering again (s)",
        "cluster whole after restart (s)", "pipeline caught up after (s)"], rows)


def quorum_table(run: Run) -> dict[str, Any]:
    """The quorum loss: what the API answered while it lasted, and how it came back."""
    rows = [[f["fault"], ", ".join(f["nodes"]), f["down_s"],
             ", ".join(f"{n} x {status}" for status, n in f["quorum_lost"]["statuses"].items()),
             (f["quorum_lost"]["reason"] or {}).get("detail"), f["api_answering_after_restart_s"],
             f["recovered_after_restart_s"], f.get("caught_up_after_s")]
            for f in run.faults if "quorum_lost" in f]
    return table("Quorum lost (two Cassandra nodes down)", [
        "fault", "nodes", "down (s)", "API answers (count x status)", "the 503's reason",
        "API answering after one restart (s)", "cluster whole after restart (s)",
        "pipeline caught up after (s)"], rows)


def test_the_cluster_reports_every_node_healthy(cluster_stack):
    statuses = manager.status(cluster_stack)
    kinds = [(s.kind, s.up) for s in statuses]
    assert kinds == [("kafka", True)] * 3 + [("cassandra", True)] * 3 + \
        [("elasticsearch", True)] * 3 + [("spark-master", True)] + \
        [("spark-worker", True)] * 2, orjson.dumps([s.__dict__ for s in statuses])
    assert {s.host for s in statuses if s.kind == "cassandra"} == \
        {"127.0.0.1", "127.0.0.2", "127.0.0.3"}


def test_a_cassandra_node_and_a_broker_lost_under_load_lose_nothing(cluster):
    run_on_cluster(cluster, SMOKE_LOSSES, quick=True, gaps_are_targets=False)


@pytest.mark.long
def test_one_node_of_each_kind_lost_under_load_keeps_the_service_working(cluster):
    run_on_cluster(cluster, ALL_LOSSES, quick=False, gaps_are_targets=True)
