"""The pipeline under steady load, and the ledger it is checked against after faults.

``Pipeline`` runs the jobs as an operator runs them (``recommender ingest``, ``predict``,
``ship`` and, when asked, ``serve`` processes under the project's supervisor) on private
names while ratings are replayed and pair prediction requests sent at a steady rate.
``inject_all`` injects faults one after the other, each once the pipeline caught up with
the previous one. The ledger functions then check every acknowledged rating and request,
layer by layer. The single-node fault suite (``tests/faults``) and the cluster's node-loss
suite (``tests/cluster``) share it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.common import Clock, table, target
from recommender.clients import cassandra_session, elasticsearch_client
from recommender.offsets import topic_end_offsets
from recommender.runtime import wait_for
from recommender.settings import Settings
from recommender.supervisor import Job
from tests.support.elastic import count, delete_matching
from tests.support.jobs import INGEST, PREDICT, SHIP, Jobs
from tests.support.load import RatingsLoad, RequestsLoad
from tests.support.results import write_result
from tests.support.topics import read_all

RATINGS_PER_S = 50
REQUESTS_PER_S = 20
RECOVERY_TIMEOUT_S = 600
USERS = 600  # requests come from ml-latest-small's users, whom the model knows
MOVIES = 500  # ... for its most rated movies

class Pipeline:
    """The jobs, the two loads and the signals that say whether the pipeline has caught up."""

    def __init__(self, settings: Settings, run_dir: Path, dataset: Any,
                 jobs: tuple[Job, ...] = (INGEST, PREDICT, SHIP)) -> None:
        self.settings = settings
        self.names = settings.elasticsearch.indices
        run = uuid.uuid4().hex[:8]
        self.source, self.prefix = f"faults-{run}", f"faults-{run}"
        movies = dataset.ratings_frame["movie_id"].value_counts().index[:MOVIES].tolist()
        self.ratings = RatingsLoad(settings, dataset, rate=RATINGS_PER_S,
                                   first_user=1_000_000_000 + int(run, 16) % 10**8,
                                   source=self.source)
        self.requests = RequestsLoad(settings, rate=REQUESTS_PER_S,
                                     users=list(range(1, USERS + 1)),
                                     movies=[int(m) for m in movies], prefix=self.prefix)
        self.jobs = Jobs(settings, run_dir, list(jobs))
        self.session = cassandra_session(settings.cassandra, keyspace=settings.cassandra.keyspace)

    def ratings_landed(self) -> int:
        """Rows in the private keyspace (-1 while Cassandra does not answer)."""
        try:
            return self.session.execute("SELECT COUNT(*) FROM ratings", timeout=60).one()[0]
        except Exception:  # noqa: BLE001 - down or restarting: not caught up yet
            return -1

    def ratings_indexed(self) -> int:
        """This run's rating documents in Elasticsearch (-1 while it does not answer)."""
        try:
            return count(self.settings, f"{self.names.ratings_prefix}*",
                         {"term": {"source": self.source}})
        except Exception:  # noqa: BLE001 - down or restarting: not caught up yet
            return -1

    def predictions_shipped(self) -> int:
        """Prediction documents of this run in Elasticsearch (-1 while it does not answer)."""
        try:
            return count(self.settings, self.names.predictions_alias,
                         {"prefix": {"request_id": f"{self.prefix}-"}})
        except Exception:  # noqa: BLE001 - down or restarting: not caught up yet
            return -1

    def wait_caught_up(self, what: str) -> float:
        """Seconds until everything acknowledged now has reached Cassandra and Elasticsearch
        (ingest writes a batch to Cassandra first, so both sinks are waited for)."""
        ratings, requests = self.ratings.acked(), len(self.requests.acked)

        def caught_up() -> bool:
            return (self.ratings_landed() >= ratings and self.ratings_indexed() >= ratings
                    and self.predictions_shipped() >= requests)

        try:
            return wait_for(caught_up, what, RECOVERY_TIMEOUT_S, poll_s=2)
        except TimeoutError as exc:
            logs = "\n".join(f"--- {n}:\n{self.jobs.log_tail(n)}" for n in self.jobs.jobs)
            raise AssertionError(
                f"{exc}: Cassandra {self.ratings_landed()}/{ratings} ratings, Elasticsearch "
                f"{self.ratings_indexed()}/{ratings} ratings and "
                f"{self.predictions_shipped()}/{requests} predictions\n{logs}") from None

    def close(self) -> None:
        for load in (self.ratings, self.requests):
            load.halt.set()
        self.session.cluster.shutdown()
        self.ratings.close()
        delete_matching(self.settings, f"{self.names.ratings_prefix}*",
                        {"term": {"source": self.source}})
        delete_matching(self.settings, self.names.predictions_alias,
                        {"prefix": {"request_id": f"{self.prefix}-"}})


# A fault injects itself and may return figures of its own (the cluster's node losses
# report the API's availability and the time to recover), added to its record.
Fault = Callable[[Pipeline], dict[str, Any] | None]

@dataclass
class Run:
    """What happened, for the results file; ``failure`` names a fault not recovered from."""

    faults: list[dict[str, Any]] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(default_factory=list)  # per fault, epoch ms
    warmup_s: float = 0.0
    drain_s: float | None = None
    failure: str | None = None


def inject_all(pipeline: Pipeline, faults: dict[str, Fault]) -> Run:
    """Start everything, inject each fault once the pipeline caught up with the previous one,
    stop the load and wait for the last acknowledged messages; stop at the first fault the
    pipeline does not recover from."""
    run = Run()
    pipeline.jobs.start()
    pipeline.ratings.start()
    pipeline.requests.start()
    run.warmup_s = round(wait_for(
        lambda: pipeline.ratings_landed() > 0 and pipeline.predictions_shipped() > 0,
        "the first ratings and predictions to flow", RECOVERY_TIMEOUT_S, poll_s=2), 1)
    pipeline.jobs.watch()
    for name, inject in faults.items():
        started, started_ms = time.monotonic(), int(time.time() * 1000)
        measured = inject(pipeline) or {}
        lifted = time.monotonic()
        record = {"fault": name, "at_s": round(started - pipeline.jobs.started, 1),
                  "injected_for_s": round(lifted - started, 1), **measured}
        try:
            recovered = pipeline.wait_caught_up(f"the pipeline to catch up after {name}")
        except AssertionError as exc:
            run.faults.append({**record, "survived": False})
            run.failure = str(exc)
            break
        run.faults.append({**record, "caught_up_after_s": round(recovered, 1), "survived": True})
        run.windows.append((started_ms - int(LEAD_S * 1000), int(time.time() * 1000)))
    pipeline.ratings.stop()
    pipeline.requests.stop()
    if run.failure is None:
        run.drain_s = round(pipeline.wait_caught_up("the last acknowledged messages"), 1)
    pipeline.jobs.stop()
    return run


# --- the ledger, layer by layer ----------------------------------------------------------------
#
# Readers must see every acknowledged item exactly once: Cassandra rows, Elasticsearch
# documents, the API's answer to ``GET /prediction-requests/{id}``. Underneath, delivery is
# at-least-once around a crash, so an item may travel twice: a producer retries a send whose
# acknowledgement the broker kill swallowed (a second copy in the topic), or a job killed
# between its sink's acknowledgement and its checkpoint or commit runs that batch again (a
# second answer in the predictions topic, a second indexing of the same document id, which
# Elasticsearch counts in ``_version``). Those re-deliveries are counted where they happen
# and bounded: only items the load sent while a fault was in force, from ``LEAD_S`` before it
# (a batch read but not yet committed) until the pipeline caught up, can travel twice.

LEAD_S = 30.0  # the oldest uncommitted work a fault can catch: a micro-batch and its commit
API_SAMPLE = 300  # acknowledged requests read back through GET /prediction-requests/{id}


def redelivery_bound(run: Run, rate: float) -> int:
    """At most every item sent inside a fault window, once more."""
    return int(sum(rate * (LEAD_S + f["injected_for_s"] + f.get("caught_up_after_s", 0.0))
                   for f in run.faults))


def copies(ids: list[str]) -> tuple[set[str], int]:
    """The distinct ids, and how many items beyond one per id."""
    distinct = set(ids)
    return distinct, len(ids) - len(distinct)


def extras(ids: list[str]) -> Counter[str]:
    """Per id, the items beyond its first."""
    return Counter({i: n - 1 for i, n in Counter(ids).items() if n > 1})


@dataclass
class Trail:
    """The items behind a ledger's counts (lost ids, extra copies per id) and when each was
    first sent (its topic timestamp), so the counts can be told per fault: an item belongs
    to the fault whose window (``Run.windows``) its sending falls in."""

    sent_ms: dict[str, int] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    duplicates: Counter[str] = field(default_factory=Counter)
    redeliveries: Counter[str] = field(default_factory=Counter)

    def within(self, start_ms: int, end_ms: int) -> dict[str, int]:
        """Lost items, duplicates a reader sees and re-deliveries of items sent inside
        ``[start_ms, end_ms]``."""
        def inside(item: str) -> bool:
            return start_ms <= self.sent_ms.get(item, -1) <= end_ms

        return {"lost": sum(map(inside, self.lost)),
                "duplicates_visible": sum(n for i, n in self.duplicates.items() if inside(i)),
                "redeliveries": sum(n for i, n in self.redeliveries.items() if inside(i))}

    @property
    def lost_unsent(self) -> int:
        """Lost items no topic holds, whose sending time is therefore unknown."""
        return len(self.lost - self.sent_ms.keys())


def es_copies(settings: Settings, index: str, query: dict[str, Any],
              field_name: str) -> list[tuple[str, int]]:
    """The ``field_name`` and ``_version`` of every matching document (a value twice: two
    documents a reader sees; a version above 1: indexings Elasticsearch collapsed by id)."""
    from elasticsearch import helpers

    es = elasticsearch_client(settings.elasticsearch, request_timeout=300)
    try:
        es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
        hits = list(helpers.scan(es, index=index, query={"query": query}, version=True,
                                 _source=[field_name], ignore_unavailable=True,
                                 allow_no_indices=True))
    finally:
        es.close()
    return [(h["_source"][field_name], h["_version"]) for h in hits]


def topic_ids(settings: Settings, topic: str, field_name: str) -> list[tuple[str, int]]:
    """The ``field_name`` and timestamp (ms) of every record of ``topic``."""
    return [(orjson.loads(r.value)[field_name], r.timestamp) for r in read_all(settings, topic)]


def first_sent(*records: list[tuple[str, int]]) -> dict[str, int]:
    sent: dict[str, int] = {}
    for item, at_ms in (r for batch in records for r in batch):
        sent[item] = min(at_ms, sent.get(item, at_ms))
    return sent


def ratings_ledger(pipeline: Pipeline, bound: int) -> tuple[dict[str, Any], Trail]:
    settings = pipeline.settings
    ledger = set(pipeline.ratings.ledger())
    topic = topic_ids(settings, settings.kafka.ratings_topic, "event_id")
    rows = [r.event_id for r in pipeline.session.execute("SELECT event_id FROM ratings",
                                                         timeout=120)]
    docs = es_copies(settings, f"{pipeline.names.ratings_prefix}*",
                     {"term": {"source": pipeline.source}}, "event_id")
    in_topic, in_cassandra, in_es = {i for i, _ in topic}, set(rows), {i for i, _ in docs}
    trail = Trail(first_sent(topic), (ledger - in_topic) | (ledger - in_cassandra)
                  | (ledger - in_es), extras(rows) + extras([i for i, _ in docs]),
                  extras([i for i, _ in topic]) + Counter({i: v - 1 for i, v in docs if v > 1}))
    return {
        "acknowledged": len(ledger), "redelivery_bound": bound,
        "topic": {"lost": len(ledger - in_topic), "redeliveries": len(topic) - len(in_topic)},
        "cassandra": {"rows": len(rows), "lost": len(ledger - in_cassandra),
                      "not_acknowledged": len(in_cassandra - ledger),
                      "duplicates_visible": len(rows) - len(in_cassandra)},
        "elasticsearch": {"documents": len(docs), "lost": len(ledger - in_es),
                          "not_acknowledged": len(in_es - ledger),
                          "duplicates_visible": len(docs) - len(in_es),
                          "redeliveries": sum(v - 1 for _, v in docs)},
    }, trail


def requests_ledger(pipeline: Pipeline, bound: int) -> tuple[dict[str, Any], Trail]:
    settings, kafka = pipeline.settings, pipeline.settings.kafka
    acked = pipeline.requests.acked
    topic = topic_ids(settings, kafka.requests_topic, "request_id")
    answers = topic_ids(settings, kafka.predictions_topic, "request_id")
    docs = es_copies(settings, pipeline.names.predictions_alias,
                     {"prefix": {"request_id": f"{pipeline.prefix}-"}}, "request_id")
    in_topic, answered, in_es = ({i for i, _ in found} for found in (topic, answers, docs))
    api, api_lost, api_twice = api_answers(settings, sorted(acked)[:API_SAMPLE])
    trail = Trail(first_sent(topic), (acked - in_topic) | (acked - answered) | (acked - in_es)
                  | api_lost, extras([i for i, _ in docs]) + api_twice,
                  extras([i for i, _ in topic]) + extras([i for i, _ in answers])
                  + Counter({i: v - 1 for i, v in docs if v > 1}))
    return {
        "sent": pipeline.requests.sent, "acknowledged": len(acked),
        "send_failures": len(pipeline.requests.failed), "redelivery_bound": bound,
        "requests_topic": {"lost": len(acked - in_topic),
                           "redeliveries": len(topic) - len(in_topic)},
        "predictions_topic": {"unanswered": len(acked - answered),
                              "answered_more_than_once": len(answers) - len(answered)},
        "elasticsearch": {"documents": len(docs), "lost": len(acked - in_es),
                          "not_acknowledged": len(in_es - acked),
                          "duplicates_visible": len(docs) - len(in_es),
                          "redeliveries": sum(v - 1 for _, v in docs)},
        "api": api,
    }, trail


def api_answers(settings: Settings, request_ids: list[str],
                ) -> tuple[dict[str, int], set[str], Counter[str]]:
    """What a website polling ``GET /prediction-requests/{id}`` sees: one answer per pair.
    The counts, the requests without an answer, and the answers beyond one per request."""
    from fastapi.testclient import TestClient

    from recommender.serve.main import create_app

    answers: dict[str, int] = {}
    with TestClient(create_app(settings)) as client:
        for request_id in request_ids:
            response = client.get(f"/prediction-requests/{request_id}")
            answers[request_id] = len(response.json()["predictions"]) \
                if response.status_code == 200 else 0
    lost = {i for i, n in answers.items() if n == 0}
    twice = Counter({i: n - 1 for i, n in answers.items() if n > 1})
    return {"read": len(request_ids), "lost": len(lost), "duplicates_visible": len(twice)}, \
        lost, twice


def unasked_deaths(pipeline: Pipeline) -> list[str]:
    """Each job that exited although no fault killed it: its name, when, how its log ended."""
    return [f"{d.job} died at {d.at_s} s without being killed; its log ended:\n"
            f"{d.log_tail[-2000:]}" for d in pipeline.jobs.deaths]


def dead_letters(settings: Settings) -> dict[str, int]:
    kafka = settings.kafka
    return {topic: sum(topic_end_offsets(settings, topic).values()) for topic in (
        kafka.ratings_dlq_topic, kafka.requests_dlq_topic, kafka.predictions_dlq_topic)}


def lost(ledger: dict[str, Any]) -> int:
    return sum(layer.get("lost", 0) + layer.get("unanswered", 0)
               for layer in ledger.values() if isinstance(layer, dict))


def visible_duplicates(ledger: dict[str, Any]) -> int:
    return sum(layer.get("duplicates_visible", 0)
               for layer in ledger.values() if isinstance(layer, dict))


def redeliveries(ledger: dict[str, Any]) -> int:
    return sum(layer.get("redeliveries", 0) + layer.get("answered_more_than_once", 0)
               for layer in ledger.values() if isinstance(layer, dict))


def ledger_targets(ratings: dict[str, Any], requests: dict[str, Any],
                   deaths: list[str]) -> list[dict[str, Any]]:
    return [
        target("ratings and requests lost, at any layer", lost(ratings) + lost(requests), 0,
               "=="),
        target("duplicates a reader sees (Cassandra, Elasticsearch, API)",
               visible_duplicates(ratings) + visible_duplicates(requests), 0, "=="),
        target("rating re-deliveries (topic copies, re-indexings)", redeliveries(ratings),
               ratings["redelivery_bound"], "<=", note="collapsed by idempotent ids"),
        target("request re-deliveries (topic copies, second answers, re-indexings)",
               redeliveries(requests), requests["redelivery_bound"], "<=",
               note="collapsed by idempotent ids"),
        target("jobs that died unasked", len(deaths), 0, "=="),
    ]


LEDGER_DOC = (
    "The pipeline's jobs (ingest, predictor, shipper) run under load on private names while "
    "each fault is injected once the pipeline caught up with the previous one. The ledger "
    "holds every rating and request Kafka acknowledged. Readers must see each exactly once; "
    "re-deliveries (a producer's retried send, a killed job's rerun batch, a second "
    "indexing of the same id) are counted per layer and must stay within what was sent "
    "during the fault windows, from 30 s before a fault until the pipeline caught up; a job "
    "that dies unasked fails the run. Each fault's record holds its own share (ledger): the "
    "items sent inside its window, by their topic timestamps, that were lost, seen twice or "
    "delivered again; lost_untimed counts lost items no topic holds.")


def faults_table(run: Run) -> dict[str, Any]:
    """One row per fault, with its share of the ledger (ratings + requests) once counted."""
    counts = ("lost", "duplicates_visible", "redeliveries")

    def share(fault: dict[str, Any], count: str) -> int | str:
        ledger = fault.get("ledger")
        return sum(kind[count] for kind in ledger.values()) if ledger else "-"

    return table("Faults, one after the other", ["fault", "at (s)", "lasted (s)",
                                                  "caught up after (s)", "survived", "lost",
                                                  "duplicates a reader sees", "re-deliveries"],
                 [[f["fault"], f["at_s"], f["injected_for_s"], f.get("caught_up_after_s"),
                   f["survived"], *(share(f, c) for c in counts)] for f in run.faults])


def ledger_table(ratings: dict[str, Any], requests: dict[str, Any]) -> dict[str, Any]:
    rows = [[kind, layer, counts.get("lost", counts.get("unanswered", 0)),
             counts.get("duplicates_visible", "-"),
             counts.get("redeliveries", counts.get("answered_more_than_once", "-"))]
            for kind, ledger in (("ratings", ratings), ("requests", requests))
            for layer, counts in ledger.items() if isinstance(counts, dict)]
    return table("The ledger, layer by layer (acknowledged items only)",
                 ["items", "layer", "lost", "duplicates a reader sees", "re-deliveries"], rows)


def per_fault(run: Run, ratings: Trail, requests: Trail) -> None:
    """Each fault's own share of the ledger: the ratings and requests sent inside its window
    (from ``LEAD_S`` before it until the pipeline caught up) that were lost, seen twice or
    delivered again; lost items no topic holds cannot be timed and count only in the
    totals."""
    for fault, (start_ms, end_ms) in zip(run.faults, run.windows, strict=True):
        fault["ledger"] = {"ratings": ratings.within(start_ms, end_ms),
                           "requests": requests.within(start_ms, end_ms)}


def run_and_check(pipeline: Pipeline, faults: dict[str, Fault], *, result: str, quick: bool,
                  more_targets: Callable[[Run], list[dict[str, Any]]] = lambda _: [],
                  more_tables: Callable[[Run], list[dict[str, Any]]] = lambda _: []) -> None:
    """Inject ``faults``, write the results file ``result``, then assert the ledger: nothing
    lost, no duplicate a reader sees, re-deliveries within their bound, no job dead unasked,
    no dead letter, and ``more_targets`` of the run met (``more_tables`` are reported, after
    them)."""
    clock = Clock()
    run = inject_all(pipeline, faults)
    deaths = unasked_deaths(pipeline)
    figures: dict[str, Any] = {
        "load": {"ratings_per_s": RATINGS_PER_S, "requests_per_s": REQUESTS_PER_S,
                 "replay_interruptions": pipeline.ratings.interruptions},
        "faults_injected": len(run.faults),
        "faults_survived": sum(f["survived"] for f in run.faults),
        "faults": run.faults, "warmup_s": run.warmup_s, "drain_s": run.drain_s,
        "jobs_died_unasked": [asdict(d) for d in pipeline.jobs.deaths]}
    if run.failure is not None:
        write_result(result, quick, clock, pipeline.settings, {**figures,
                                                                 "failure": run.failure})
        pytest.fail(run.failure)
    ratings, ratings_trail = ratings_ledger(pipeline, redelivery_bound(run, RATINGS_PER_S))
    requests, requests_trail = requests_ledger(pipeline, redelivery_bound(run, REQUESTS_PER_S))
    per_fault(run, ratings_trail, requests_trail)
    letters = dead_letters(pipeline.settings)
    targets = ledger_targets(ratings, requests, deaths) + more_targets(run)
    write_result(result, quick, clock, pipeline.settings, {
        **figures, "ratings": ratings, "requests": requests, "dead_letters": letters,
        "lost": lost(ratings) + lost(requests),
        "lost_untimed": ratings_trail.lost_unsent + requests_trail.lost_unsent,
        "duplicates_visible": visible_duplicates(ratings) + visible_duplicates(requests),
        "redeliveries": redeliveries(ratings) + redeliveries(requests),
        "targets": targets, "tables": [faults_table(run), *more_tables(run),
                                      ledger_table(ratings, requests)],
        "doc": LEDGER_DOC})
    assert ratings["acknowledged"] > 0 and requests["acknowledged"] > 0, (ratings, requests)
    assert not deaths, "\n\n".join(deaths)
    missed = [t for t in targets if not t["met"]]
    assert not missed, (missed, ratings, requests)
    assert not any(letters.values()), letters
