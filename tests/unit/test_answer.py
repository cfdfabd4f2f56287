"""One micro-batch partition through the predictor's worker function: the records it hands
to the Kafka sink, and what it reports to the driver."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from recommender.contracts import DeadLetter, Prediction
from recommender.predict.answer import (
    ANSWER_INPUT,
    BatchTally,
    Destinations,
    TallyParam,
    answer_partitions,
)
from recommender.predict.scoring import ServingBundle
from tests.support.models import make_artifacts

TO = Destinations("predictions", "requests-dlq")


def _bundle() -> ServingBundle:
    artifacts = make_artifacts([10, 20], [1], np.array([[1.0, 0.0], [0.0, 1.0]]),
                               np.array([[2.0, 1.0]]), item_counts=[5, 50],
                               global_mean=0.0)
    return ServingBundle(artifacts, {10: ("Alpha", 1995, ["Action"]), 20: ("Beta", 2001, [])})


def _row(offset: int, *, partition: int = 0, error: str | None = None,
         movie_id: int | None = 10) -> dict:
    return {"topic": "requests", "partition": partition, "offset": offset, "error": error,
            "raw": b'{"bad' if error else None, "request_id": f"r{offset}", "user_id": 1,
            "movie_id": movie_id, "k": None, "exclude": None, "requested_at": 1000}


class _Tally:
    """The accumulator's worker side: ``add`` merges with the same ``TallyParam``."""

    def __init__(self) -> None:
        self.value = BatchTally()

    def add(self, part: BatchTally) -> None:
        self.value = TallyParam().addInPlace(self.value, part)


def _no_histories(users: list[int]) -> dict:
    """User 1 has no ratings stored: answered with the trained vectors."""
    return {}


def _answer(*frames: pd.DataFrame) -> tuple[pd.DataFrame, BatchTally]:
    tally = _Tally()
    run = answer_partitions(SimpleNamespace(value=_bundle()), _no_histories, TO, tally)
    return pd.concat(list(run(iter(frames)))), tally.value


def test_predictions_and_dead_letters_go_to_their_topics_in_one_pass():
    frame = pd.DataFrame([_row(5), _row(6, error="missing field: user_id"), _row(7, movie_id=20)],
                         columns=list(ANSWER_INPUT))
    out, tally = _answer(frame)
    predictions = out[out.topic == "predictions"]
    assert list(predictions.key) == ["r5", "r7"]
    answers = [Prediction(**json.loads(v)) for v in predictions.value]
    assert [(p.movie_id, p.predicted_rating, p.title) for p in answers] == [
        (10, 2.0, "Alpha"), (20, 1.0, "Beta")]
    [(key, value)] = out.loc[out.topic == "requests-dlq", ["key", "value"]].values
    letter = DeadLetter(**json.loads(value))
    assert key == "requests:0:6"
    assert (letter.offset, letter.reason, letter.raw) == (6, "missing field: user_id", '{"bad')
    assert tally == BatchTally({"0": 8}, requests=3, dead=1)


def test_tally_takes_each_partitions_highest_offset_across_frames_and_retries():
    first = pd.DataFrame([_row(3, partition=0), _row(9, partition=1)], columns=list(ANSWER_INPUT))
    second = pd.DataFrame([_row(4, partition=0)], columns=list(ANSWER_INPUT))
    _, tally = _answer(first, second, first)  # the last frame: a retried task's
    assert tally.ends == {"0": 5, "1": 10}
