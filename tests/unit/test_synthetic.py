"""The synthetic generator: deterministic per seed and per user, MovieLens-shaped, bounded
memory, a planted truth that the data actually reflects, and a CSV round trip."""

from __future__ import annotations

import tracemalloc
from itertools import groupby, pairwise
from pathlib import Path

import numpy as np
import pytest

from data_loading.datasets import locate
from data_loading.readers import Movie
from data_loading.synthetic import (
    Catalogue,
    expected_rating,
    generate,
    planted_taste,
    write_csv,
)


@pytest.fixture(scope="module")
def catalogue(data_dir: Path) -> Catalogue:
    return Catalogue.from_dataset(locate("ml-latest-small", data_dir, download=False))


def pairs(events) -> list[tuple[int, int, float]]:
    return [(e.user_id, e.movie_id, e.rating) for e in events]


def test_same_seed_same_stream_other_seed_other_stream(catalogue):
    a = list(generate(catalogue, 200, seed=3))
    assert a == list(generate(catalogue, 200, seed=3))
    assert pairs(a) != pairs(generate(catalogue, 200, seed=4))


def test_a_user_is_the_same_whatever_comes_before(catalogue):
    """Per-user generators: user 57 alone rates what user 57 rates inside a longer run."""
    whole = [e for e in generate(catalogue, 100, seed=9) if e.user_id == 57]
    alone = list(generate(catalogue, 1, seed=9, first_user=57))
    assert pairs(whole) == pairs(alone)
    truth = planted_taste(catalogue, 57, seed=9)
    assert truth.taste.sum() == pytest.approx(1.0)
    assert 1 <= len(alone) <= truth.n_ratings


def test_events_look_like_movielens(catalogue):
    events = list(generate(catalogue, 2_000, seed=1))
    ratings = np.array([e.rating for e in events])
    assert set(np.unique(ratings)) <= {x / 2 for x in range(1, 11)}
    assert 3.2 < ratings.mean() < 3.8
    per_user = [len(list(g)) for _, g in groupby(events, key=lambda e: e.user_id)]
    assert 15 < np.mean(per_user) < 25  # mean activity ~20
    assert max(per_user) > 5 * np.median(per_user)  # heavy tail
    assert all(a.event_time <= b.event_time for a, b in pairwise(events))
    assert all(e.event_time % 1000 == 0 for e in events)  # whole seconds, like MovieLens
    assert len({(e.user_id, e.movie_id) for e in events}) == len(events)  # no repeats
    assert len({e.event_id for e in events}) == len(events)
    known = set(catalogue.movie_ids.tolist())
    assert all(e.movie_id in known for e in events)


def test_ratings_follow_the_planted_model(catalogue):
    items = catalogue.items(seed=5)
    row_of = {m: i for i, m in enumerate(catalogue.movie_ids.tolist())}
    truths = {u: planted_taste(catalogue, u, seed=5) for u in range(1, 501)}
    expected, observed = [], []
    for e in generate(catalogue, 500, seed=5):
        expected.append(expected_rating(truths[e.user_id], items, row_of[e.movie_id]))
        observed.append(e.rating)
    assert np.corrcoef(expected, observed)[0, 1] > 0.6


def test_movies_come_from_the_users_favourite_genres(catalogue):
    hits = total = 0
    genres_of = {m.movie_id: set(m.genres) for m in catalogue.movies}
    for user, events in groupby(generate(catalogue, 300, seed=2), key=lambda e: e.user_id):
        truth = planted_taste(catalogue, user, seed=2)
        top = {catalogue.genres[g] for g in np.argsort(truth.taste)[-3:]}
        for e in events:
            hits += bool(genres_of[e.movie_id] & top)
            total += 1
    assert hits / total > 0.8


def _peak_bytes(catalogue: Catalogue, users: int) -> int:
    tracemalloc.start()
    for _ in generate(catalogue, users, seed=0):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_users(catalogue):
    catalogue.items(0)  # built once per stream; measured inside both runs alike
    small, large = _peak_bytes(catalogue, 100), _peak_bytes(catalogue, 1_000)
    assert large < small * 1.3 + 1_000_000


def test_csv_round_trip_gives_back_the_same_events(catalogue, tmp_path):
    events = list(generate(catalogue, 150, seed=8))
    out = tmp_path / "synthetic"
    assert write_csv(iter(events), out, catalogue, {"seed": 8}) == len(events)
    again = locate(str(out))  # a directory in the ml-latest-small layout, named "synthetic"
    assert [(e.event_id, e.rating) for e in again.ratings()] == [
        (e.event_id, e.rating) for e in events]
    assert len(again.movies()) == len(catalogue.movies)


def test_small_hand_made_catalogue():
    movies = [Movie(1, "A", 2000, ("Drama",)), Movie(2, "B", 2001, ("Comedy", "Drama")),
              Movie(3, "C", None, ())]
    cat = Catalogue(movies, {1: 10})
    assert cat.genres == ("Comedy", "Drama")
    events = list(generate(cat, 50, seed=0))
    assert {e.movie_id for e in events} <= {1, 2}  # a movie without genres is never drawn
    with pytest.raises(ValueError):
        list(generate(cat, 1, seed=-1))
