"""Fault injection under steady load, checked against a ledger.

The whole pipeline runs as an operator runs it (``recommender ingest``, ``predict`` and
``ship`` processes under the project's supervisor) on private topics and keyspace, while
ratings are replayed and pair prediction requests sent at a steady rate. Faults are
injected one after the other, each only once the pipeline has caught up with everything
acknowledged before it. At the end the ledger (every event id and request id Kafka
acknowledged) is checked: every rating in Cassandra exactly once (and in Elasticsearch),
every request with exactly one prediction in Elasticsearch, and nothing in any dead-letter
topic, since the load holds only valid messages.

``make test`` runs the job crashes (``faults.quick.json``); ``make faults`` runs every fault,
the servers' too (``faults.json``). Server faults need the embedded stack
(``recommender stack up``); it is left running as it was found.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.common import Clock, topic_end_offsets
from bench.fixtures import ml_small, prepare_keyspace
from recommender.clients import cassandra_session
from recommender.settings import Settings
from tests.support.elastic import count, delete_matching, documents
from tests.support.jobs import INGEST, PREDICT, SHIP, Jobs
from tests.support.load import RatingsLoad, RequestsLoad
from tests.support.names import private
from tests.support.results import write_result
from tests.support.servers import down
from tests.support.topics import read_all
from tests.support.waiting import wait_for

RATINGS_PER_S = 50
REQUESTS_PER_S = 20
RECOVERY_TIMEOUT_S = 600
ES_OUTAGE_S = 30
USERS = 600  # requests come from ml-latest-small's users, whom the model knows
MOVIES = 500  # ... for its most rated movies


class Pipeline:
    """The jobs, the two loads and the signals that say whether the pipeline has caught up."""

    def __init__(self, settings: Settings, run_dir: Path, dataset: Any) -> None:
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
        self.jobs = Jobs(settings, run_dir, [INGEST, PREDICT, SHIP])
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
        except AssertionError as exc:
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


Fault = Callable[[Pipeline], None]


def crash(job: str) -> Fault:
    def inject(pipeline: Pipeline) -> None:
        pipeline.jobs.kill(job)
    return inject


def outage(server: str, *, sigkill: bool = False, hold_s: float = 0.0) -> Fault:
    def inject(pipeline: Pipeline) -> None:
        with down(pipeline.settings.stack, server, sigkill=sigkill):
            time.sleep(hold_s)  # the outage itself: the jobs must wait, not drop or crash
    return inject


JOB_FAULTS: dict[str, Fault] = {
    "SIGKILL ingest": crash(INGEST.name),
    "SIGKILL predictor": crash(PREDICT.name),
    "SIGKILL shipper": crash(SHIP.name),
}
SERVER_FAULTS: dict[str, Fault] = {
    "SIGKILL Kafka broker, restart": outage("kafka", sigkill=True),
    f"Elasticsearch stopped {ES_OUTAGE_S} s": outage("elasticsearch", hold_s=ES_OUTAGE_S),
    "Cassandra restart": outage("cassandra"),
}


@dataclass
class Run:
    """What happened, for the results file; ``failure`` names a fault not recovered from."""

    faults: list[dict[str, Any]] = field(default_factory=list)
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
        started = time.monotonic()
        inject(pipeline)
        lifted = time.monotonic()
        record = {"fault": name, "at_s": round(started - pipeline.jobs.started, 1),
                  "injected_for_s": round(lifted - started, 1)}
        try:
            recovered = pipeline.wait_caught_up(f"the pipeline to catch up after {name}")
        except AssertionError as exc:
            run.faults.append({**record, "survived": False})
            run.failure = str(exc)
            break
        run.faults.append({**record, "caught_up_after_s": round(recovered, 1), "survived": True})
    pipeline.ratings.stop()
    pipeline.requests.stop()
    if run.failure is None:
        run.drain_s = round(pipeline.wait_caught_up("the last acknowledged messages"), 1)
    pipeline.jobs.stop()
    return run


def ratings_ledger(pipeline: Pipeline) -> dict[str, int]:
    ledger = set(pipeline.ratings.ledger())
    rows = [r.event_id for r in pipeline.session.execute("SELECT event_id FROM ratings",
                                                         timeout=120)]
    found = set(rows)
    in_es = pipeline.ratings_indexed()
    return {"in_ledger": len(ledger), "in_cassandra": len(rows), "lost": len(ledger - found),
            "duplicates": len(rows) - len(found), "not_in_ledger": len(found - ledger),
            "in_elasticsearch": in_es, "lost_in_elasticsearch": len(ledger) - in_es}


def requests_ledger(pipeline: Pipeline) -> dict[str, int]:
    acked = sorted(pipeline.requests.acked)
    docs = documents(pipeline.settings, acked)
    shipped = pipeline.predictions_shipped()
    produced = Counter(r.key for r in read_all(pipeline.settings,
                                               pipeline.settings.kafka.predictions_topic))
    return {"sent": pipeline.requests.sent, "in_ledger": len(acked),
            "send_failures": len(pipeline.requests.failed),
            "lost": sum(1 for i in acked if docs.get(i, 0) == 0),
            "duplicates": sum(1 for i in acked if docs.get(i, 0) > 1),
            "documents_in_elasticsearch": shipped,
            "documents_not_in_ledger": shipped - sum(docs.values()),
            "answered_more_than_once_in_the_predictions_topic":
                sum(1 for n in produced.values() if n > 1)}


def dead_letters(settings: Settings) -> dict[str, int]:
    kafka = settings.kafka
    return {topic: sum(topic_end_offsets(settings, topic).values()) for topic in (
        kafka.ratings_dlq_topic, kafka.requests_dlq_topic, kafka.predictions_dlq_topic)}


@pytest.fixture
def pipeline(trained: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    settings = private(trained, "faults", own_keyspace=True)
    dataset = ml_small(settings)
    prepare_keyspace(settings, dataset)
    own = Pipeline(settings, tmp_path / "jobs", dataset)
    yield own
    own.jobs.stop()
    own.close()


def run_and_check(pipeline: Pipeline, faults: dict[str, Fault], quick: bool) -> None:
    clock = Clock()
    run = inject_all(pipeline, faults)
    figures: dict[str, Any] = {
        "load": {"ratings_per_s": RATINGS_PER_S, "requests_per_s": REQUESTS_PER_S,
                 "replay_interruptions": pipeline.ratings.interruptions},
        "faults_injected": len(run.faults),
        "faults_survived": sum(f["survived"] for f in run.faults),
        "faults": run.faults, "warmup_s": run.warmup_s, "drain_s": run.drain_s,
        "jobs_died_unasked": [asdict(d) for d in pipeline.jobs.deaths]}
    if run.failure is not None:
        write_result("faults", quick, clock, pipeline.settings, {**figures,
                                                                 "failure": run.failure})
        pytest.fail(run.failure)
    ratings, requests = ratings_ledger(pipeline), requests_ledger(pipeline)
    letters = dead_letters(pipeline.settings)
    write_result("faults", quick, clock, pipeline.settings, {
        **figures, "ratings": ratings, "requests": requests, "dead_letters": letters,
        "lost": ratings["lost"] + requests["lost"],
        "duplicates": ratings["duplicates"] + requests["duplicates"]})
    assert ratings["in_ledger"] > 0 and requests["in_ledger"] > 0, (ratings, requests)
    assert (ratings["lost"], ratings["duplicates"], ratings["not_in_ledger"]) == (0, 0, 0), ratings
    assert ratings["lost_in_elasticsearch"] == 0, ratings
    assert (requests["lost"], requests["duplicates"]) == (0, 0), requests
    assert not any(letters.values()), letters


def test_jobs_crashed_under_load_lose_and_duplicate_nothing(pipeline):
    run_and_check(pipeline, JOB_FAULTS, quick=True)


@pytest.mark.long
def test_every_job_and_server_fault_under_load_loses_and_duplicates_nothing(pipeline):
    run_and_check(pipeline, {**JOB_FAULTS, **SERVER_FAULTS}, quick=False)
