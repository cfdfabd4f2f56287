"""The API's users' ratings kept current from the ratings topic (``serve.histories``): which
events count, when Cassandra is read, and how recent events reach users read later."""

from __future__ import annotations

import orjson
import pytest

from recommender.contracts import RatingEvent
from recommender.serve.histories import Histories, usable


def event(**fields: object) -> bytes:
    base = {"event_id": "s:1:2:3", "user_id": 1, "movie_id": 2, "rating": 4.5,
            "event_time": 3, "event_type": "rating", "tag": None, "source": "s"}
    return orjson.dumps({**base, **fields})


def test_a_rating_event_as_replay_writes_it_is_usable():
    written = RatingEvent("s:7:9:1", 7, 9, 3.5, 1, source="s").to_json()
    assert usable(written) == (7, 9, 3.5)
    assert usable(event(event_type=None)) == (1, 2, 4.5)  # ingest reads a missing type as rating


@pytest.mark.parametrize("value", [
    event(event_type="tag", tag="funny"), event(rating=5.5), event(rating=0.0),
    event(rating=True), event(rating=None), event(user_id=0), event(movie_id="2"),
    event(event_time=None), event(event_id="x" * 257), event(user_id=2**31), b"{not json",
    b"[1, 2]", None,
], ids=["tag", "above range", "below range", "bool", "no rating", "user 0", "string id",
        "no time", "long id", "int32 overflow", "bad json", "not an object", "tombstone"])
def test_what_ingest_dead_letters_or_does_not_store_is_not(value):
    assert usable(value) is None


class Reads:
    """Cassandra as the histories see it: a dict per user, and a count of reads."""

    def __init__(self, stored: dict[int, dict[int, float]]) -> None:
        self.stored, self.count = stored, 0

    def __call__(self, user: int) -> dict[int, float]:
        self.count += 1
        return dict(self.stored.get(user, {}))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def following(reads: Reads, **options: object) -> tuple[Histories, Clock]:
    clock = Clock()
    histories = Histories(reads, **{"max_users": 10, "recent_s": 60.0, **options}, clock=clock)
    histories.live = True
    return histories, clock


def test_without_a_follower_every_get_reads_cassandra():
    reads = Reads({1: {10: 4.0}})
    histories = Histories(reads, max_users=10, recent_s=60.0)
    assert [histories.get(1), histories.get(1)] == [{10: 4.0}, {10: 4.0}]
    assert reads.count == 2


def test_a_followed_user_is_read_once_and_then_kept_current_from_the_topic():
    reads = Reads({1: {10: 4.0}})
    histories, _ = following(reads)
    first = histories.get(1)
    histories.apply([(1, 11, 5.0), (1, 10, 2.0), (2, 12, 3.0)])
    assert histories.get(1) == {10: 2.0, 11: 5.0}
    assert first == {10: 4.0}, "a ratings dict handed out is never changed"
    assert reads.count == 1


def test_recent_events_reach_a_user_read_after_them_until_they_expire():
    reads = Reads({1: {10: 4.0}, 2: {20: 1.0}})
    histories, clock = following(reads)
    histories.apply([(1, 11, 5.0), (2, 21, 3.5)])  # in the topic, not yet in Cassandra
    assert histories.get(1) == {10: 4.0, 11: 5.0}
    clock.now = 61.0
    histories.apply([])
    assert histories.get(2) == {20: 1.0}, "older than recent_s: Cassandra has it by now"


def test_at_most_max_recent_events_are_kept_aside():
    histories, _ = following(Reads({}), max_recent=2)
    histories.apply([(1, 10, 1.0), (1, 11, 2.0), (2, 20, 3.0)])
    assert histories.get(1) == {11: 2.0}
    assert histories.get(2) == {20: 3.0}


def test_the_least_recently_asked_user_is_evicted_and_read_again():
    reads = Reads({})
    histories, _ = following(reads, max_users=2)
    for user in (1, 2, 1, 3):
        histories.get(user)
    assert reads.count == 3
    histories.get(1)
    assert reads.count == 3, "user 1 was asked for more recently than user 2"
    histories.get(2)
    assert reads.count == 4


def test_when_following_stops_the_held_users_are_forgotten():
    reads = Reads({1: {10: 4.0}})
    histories, _ = following(reads)
    histories.get(1)
    histories.apply([(1, 11, 5.0)])
    histories.stop_following()
    assert histories.get(1) == {10: 4.0}
    assert reads.count == 2


def test_held_answers_only_from_memory_and_only_while_following():
    reads = Reads({1: {10: 4.0}})
    histories, _ = following(reads)
    assert histories.held(1) is None, "not read yet: finding out needs Cassandra"
    histories.get(1)
    histories.apply([(1, 11, 5.0)])
    assert histories.held(1) == {10: 4.0, 11: 5.0}
    histories.stop_following()
    assert histories.held(1) is None
    assert reads.count == 1
