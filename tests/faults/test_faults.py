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
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fixtures import ml_small, prepare_keyspace
from recommender.settings import Settings
from tests.support.jobs import INGEST, PREDICT, SHIP
from tests.support.ledger import Fault, Pipeline, run_and_check
from tests.support.names import private
from tests.support.servers import down

ES_OUTAGE_S = 30



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


@pytest.fixture
def pipeline(trained: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    settings = private(trained, "faults", own_keyspace=True)
    dataset = ml_small(settings)
    prepare_keyspace(settings, dataset)
    own = Pipeline(settings, tmp_path / "jobs", dataset)
    yield own
    own.jobs.stop()
    own.close()


def test_jobs_crashed_under_load_lose_and_duplicate_nothing(pipeline):
    run_and_check(pipeline, JOB_FAULTS, result="faults", quick=True)


@pytest.mark.long
def test_every_job_and_server_fault_under_load_loses_and_duplicates_nothing(pipeline):
    run_and_check(pipeline, {**JOB_FAULTS, **SERVER_FAULTS}, result="faults", quick=False)
