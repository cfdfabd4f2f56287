"""Fuzzing the input topics with the ingest and predictor jobs running.

Random and mutated messages go into the ratings topic and as many into the
prediction-requests topic (10,000 each in ``make faults``, 2,000 in ``make test``) while both
streaming jobs run: the same ``start_ingest`` and ``Predictor`` the CLI runs, in this
process, ratings documents in private Elasticsearch indices. Once each job has committed
past the last message, every message must be accounted for: dead-lettered with a reason and
its original bytes, or processed (its Cassandra row written, its prediction produced), and
both jobs must still be running. Figures go to ``bench/results/fuzz.json``
(``fuzz.quick.json``); the seed is in them and in any failure message, and ``FUZZ_SEED``
replays a run.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from bench.common import Clock
from bench.fixtures import install_index_templates, ml_small, prepare_keyspace
from recommender.clients import cassandra_session, kafka_producer
from recommender.contracts import PredictionRequest, RatingEvent
from recommender.ingest_job import start_ingest
from recommender.offsets import checkpoint_offsets, group_offsets, lag, topic_end_offsets
from recommender.predict.job import Predictor
from recommender.runtime import wait_for
from recommender.settings import Settings
from tests.support.fuzzing import Fuzzer, Message, rating_row, request_id
from tests.support.names import private, remember
from tests.support.results import write_result
from tests.support.topics import read_all

MESSAGES = 10_000  # per topic, in make faults (fuzz.json)
QUICK_MESSAGES = 2_000  # per topic, in make test (fuzz.quick.json)
DRAIN_TIMEOUT_S = 900
TAGS = ["funny", "atmospheric", "twist ending", "Pixar", "  padded  "]
HALF_STARS = [x / 2 for x in range(1, 11)]


def rating_events(first_user: int, movies: list[int], source: str
                  ) -> Callable[[int, random.Random], dict[str, Any]]:
    """Valid events as the contract writes them, one user each (so each has its own row)."""
    def valid(i: int, rng: random.Random) -> dict[str, Any]:
        user, movie = first_user + i, rng.choice(movies)
        at = rng.randrange(789_652_009_000, 1_700_000_000_000)
        if rng.random() < 0.2:
            return asdict(RatingEvent(f"{source}:{user}:{movie}:{at}:tag", user, movie, None,
                                      at, "tag", rng.choice(TAGS), source))
        return asdict(RatingEvent(f"{source}:{user}:{movie}:{at}", user, movie,
                                  rng.choice(HALF_STARS), at, "rating", None, source))
    return valid


def prediction_requests(prefix: str, movies: list[int]
                        ) -> Callable[[int, random.Random], dict[str, Any]]:
    """Valid pair and top-k requests as the API publishes them, for known and new users."""
    def valid(i: int, rng: random.Random) -> dict[str, Any]:
        user = rng.randrange(1, 611) if rng.random() < 0.9 else rng.randrange(10**6, 2 * 10**6)
        target: dict[str, Any] = ({"movie_id": rng.choice(movies)} if rng.random() < 0.6 else
                                  {"k": rng.randrange(1, 21),
                                   "exclude": rng.sample(movies, rng.randrange(0, 5))})
        return asdict(PredictionRequest(request_id=f"{prefix}-{i}", user_id=user,
                                        requested_at=int(time.time() * 1000), **target))
    return valid


Sent = dict[tuple[int, int], Message]  # (partition, offset) -> message


def send(settings: Settings, topic: str, messages: Iterator[Message]) -> Sent:
    """Produce every message; where Kafka put each one."""
    producer = kafka_producer(settings.kafka, max_request_size=2 * 1024 * 1024)
    try:
        futures = [(producer.send(topic, key=m.key, value=m.value), m) for m in messages]
        producer.flush(timeout=300)
        placed = [(f.get(timeout=60), m) for f, m in futures]
    finally:
        producer.close()
    return {(meta.partition, meta.offset): m for meta, m in placed}


@dataclass
class Account:
    """Where every fuzzed message of one topic ended up."""

    sent: int
    dead_lettered: int = 0
    processed: int = 0
    unaccounted: list[str] = field(default_factory=list)
    letters_without_reason: int = 0
    letters_with_other_bytes: int = 0
    letters_for_unknown_offsets: int = 0
    reasons: Counter = field(default_factory=Counter)
    recipes: Counter = field(default_factory=Counter)

    def figures(self) -> dict[str, Any]:
        return {"fuzzed": self.sent, "processed": self.processed,
                "dead_lettered": self.dead_lettered, "unaccounted": len(self.unaccounted),
                "unaccounted_examples": self.unaccounted[:5],
                "letters_without_reason": self.letters_without_reason,
                "letters_with_other_bytes": self.letters_with_other_bytes,
                "letters_for_unknown_offsets": self.letters_for_unknown_offsets,
                "dead_letter_reasons": dict(self.reasons.most_common(20)),
                "messages_by_recipe": dict(self.recipes.most_common())}


def account(settings: Settings, sent: Sent, dlq_topic: str,
            processed: Callable[[Message], bool]) -> Account:
    """Dead letters matched to their source offsets; every other message checked against
    what the job must have produced from it."""
    out = Account(sent=len(sent), recipes=Counter(m.recipe.split("+")[0] for m in sent.values()))
    dead: set[tuple[int, int]] = set()
    for record in read_all(settings, dlq_topic):
        letter = json.loads(record.value)
        where = (letter["partition"], letter["offset"])
        if where not in sent:
            out.letters_for_unknown_offsets += 1
            continue
        dead.add(where)
        reason = letter["reason"] or ""
        out.letters_without_reason += not reason
        out.letters_with_other_bytes += (base64.b64decode(letter["raw_base64"])
                                         != (sent[where].value or b""))
        out.reasons[reason.split(":")[0][:80]] += 1
    out.dead_lettered = len(dead)
    for where, message in sent.items():
        if where in dead:
            continue
        if processed(message):
            out.processed += 1
        else:
            out.unaccounted.append(f"{message.recipe}: {(message.value or b'')[:300]!r}")
    return out


def cause(error: BaseException) -> str:
    """The root cause of a streaming query's failure, from its long Java/Python report."""
    text = str(error)
    causes = (re.findall(r"Caused by: ([^\n]+)", text)
              or re.findall(r"(?m)^\w[\w.]*(?:Error|Exception): .+$", text))
    return (causes[-1] if causes else text.splitlines()[0])[:500]


def stored_rows(settings: Settings) -> set[tuple[int, int]]:
    """(user_id, movie_id) of every rating and tag the ingest job wrote to the keyspace."""
    session = cassandra_session(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        return {(r.user_id, r.movie_id) for table in ("ratings", "tags")
                for r in session.execute(f"SELECT user_id, movie_id FROM {table}", timeout=120)}
    finally:
        session.cluster.shutdown()


def answered_ids(settings: Settings) -> set[str]:
    return {json.loads(r.value)["request_id"]
            for r in read_all(settings, settings.kafka.predictions_topic)}


@pytest.fixture
def fuzz_settings(trained: Settings) -> Iterator[Settings]:
    """Private topics and keyspace (with the movie catalogue) on the trained model."""
    settings = private(trained, "fuzz", own_keyspace=True)
    prepare_keyspace(settings, ml_small(settings))
    yield settings


def test_fuzzed_messages_are_processed_or_dead_lettered_and_the_jobs_stay_up(
        spark, fuzz_settings):
    fuzz(spark, fuzz_settings, QUICK_MESSAGES, quick=True)


@pytest.mark.long
def test_ten_thousand_fuzzed_messages_per_topic_are_processed_or_dead_lettered(
        spark, fuzz_settings):
    fuzz(spark, fuzz_settings, MESSAGES, quick=False)


def fuzz(spark: Any, settings: Settings, messages: int, quick: bool) -> None:
    """Send ``messages`` fuzzed messages to each input topic with both jobs running, account
    for every one, write the figures, then assert."""
    kafka = settings.kafka
    clock = Clock()
    seed = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    run = uuid.uuid4().hex[:8]
    movies = [m.movie_id for m in ml_small(settings).movies()[:2000]]
    settings = remember(settings.model_copy(update={"elasticsearch": settings.elasticsearch
                                 .model_copy(update={"index_prefix": f"it-fuzz-{run}-"})}))
    install_index_templates(settings)
    ingest = start_ingest(spark, settings, query_name=f"ingest-fuzz-{run}")
    predict = Predictor(spark, settings).start()
    try:
        ratings = send(settings, kafka.ratings_topic, Fuzzer(rating_events(
            1_500_000_000 + int(run, 16) % 10**8, movies, f"fuzz-{run}"), seed)
            .messages(messages))
        requests = send(settings, kafka.requests_topic, Fuzzer(prediction_requests(
            f"fuzz-{run}", movies), seed + 1).messages(messages))
        checkpoint = settings.spark.checkpoint_dir / f"ingest-fuzz-{run}"

        def settled() -> bool:
            """Each job has committed past the last message, or has died."""
            return ((not ingest.isActive or not lag(
                topic_end_offsets(settings, kafka.ratings_topic),
                checkpoint_offsets(checkpoint, kafka.ratings_topic)))
                and (not predict.isActive or not lag(
                    topic_end_offsets(settings, kafka.requests_topic),
                    group_offsets(settings, kafka.predictor_group, kafka.requests_topic))))

        wait_for(settled, f"both jobs to commit past the fuzzed messages (seed {seed})",
                 DRAIN_TIMEOUT_S, poll_s=3)
        jobs = {"ingest": ingest, "predictor": predict}
        alive = {name: query.isActive for name, query in jobs.items()}
        crashes = {name: cause(query.exception()) for name, query in jobs.items()
                   if query.exception() is not None}
    finally:
        ingest.stop()
        predict.stop()
    rows = stored_rows(settings)
    answered = answered_ids(settings)
    topics = {
        "ratings": account(settings, ratings, kafka.ratings_dlq_topic,
                           lambda m: rating_row(m.value) in rows),
        "requests": account(settings, requests, kafka.requests_dlq_topic,
                            lambda m: request_id(m.value) in answered),
    }
    write_result("fuzz", quick, clock, settings, {
        "seed": seed, "messages_per_topic": messages, "jobs_alive_after": alive,
        "job_crashes": crashes, "topics": {name: a.figures() for name, a in topics.items()}})
    assert alive == {"ingest": True, "predictor": True}, (seed, crashes)
    for name, result in topics.items():
        assert not result.unaccounted, (name, seed, result.unaccounted[:5])
        assert result.dead_lettered + result.processed == messages, (name, seed)
        assert (result.letters_without_reason, result.letters_with_other_bytes,
                result.letters_for_unknown_offsets) == (0, 0, 0), (name, seed)
