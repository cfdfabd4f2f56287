"""The policies an A/B simulation compares, by name. A policy only decides a session's top
list; every policy is then served through the same feed rule (``recommender.feed``), so the
comparison is between rankings, under the exact serving behaviour.

Names: ``model`` (the registry's CURRENT version, ranked as the API ranks: the user's own
factors, else a fold-in of their known ratings, else popularity), ``model:<version>`` (any
other registered version, e.g. a candidate the gate refused), ``popularity`` (most-rated
movies of the training data) and ``random`` (uniform over the movies the model knows, the
reference every uplift is measured against, always included).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from recommender.errors import InvalidRequest
from recommender.feed import NO_INFO, TOP_N, Popular, Scored, popular_movies
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import recommend_for_user, recommend_popular
from recommender.simulate.session import SimUser
from recommender.vectors import MovieInfo

REFERENCE = "random"
MODEL = "model"
BUILT_IN = (MODEL, "popularity", REFERENCE)
Ranker = Callable[[SimUser, random.Random], list[Scored]]


@dataclass(frozen=True)
class Policy:
    """A named ranking plus the feed fallback of the model it belongs to."""

    name: str
    version: str  # the model version whose factors or training counts it uses
    rank: Ranker
    popular: Popular


def parse(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """``(kind, version)`` per distinct name, in order, with ``random`` appended if missing;
    ``version`` is None for CURRENT. ``InvalidRequest`` for an unknown name."""
    out: list[tuple[str, str | None]] = []
    for name in dict.fromkeys([*names, REFERENCE]):
        kind, _, version = name.partition(":")
        if kind not in BUILT_IN or (version and kind != MODEL):
            raise InvalidRequest(f"unknown policy {name!r}: use {', '.join(BUILT_IN)} or "
                                 "model:<version> (see `recommender models list`)")
        out.append((kind, version or None))
    return out


def build(kind: str, name: str, artifacts: ModelArtifacts,
          catalogue: Mapping[int, MovieInfo]) -> Policy:
    """The policy ``kind`` over ``artifacts`` (the model, or for baselines CURRENT's training
    counts), named ``name`` in the report."""
    rankers = {MODEL: _model_ranker, "popularity": _popularity_ranker,
               REFERENCE: _random_ranker}
    return Policy(name, artifacts.version, rankers[kind](artifacts, catalogue),
                  lambda k, excluded, genre: popular_movies(artifacts, catalogue, k, excluded,
                                                            genre))


def _scored(pairs: Iterable[tuple[int, float]],
            catalogue: Mapping[int, MovieInfo]) -> list[Scored]:
    return [Scored(m, s, catalogue.get(m, NO_INFO)) for m, s in pairs]


def _model_ranker(artifacts: ModelArtifacts, catalogue: Mapping[int, MovieInfo]) -> Ranker:
    def rank(user: SimUser, _rng: random.Random) -> list[Scored]:
        recs = recommend_for_user(artifacts, user.user_id, TOP_N, ratings=user.seen)
        return _scored(recs.items, catalogue)
    return rank


def _popularity_ranker(artifacts: ModelArtifacts, catalogue: Mapping[int, MovieInfo]) -> Ranker:
    def rank(user: SimUser, _rng: random.Random) -> list[Scored]:
        return _scored(recommend_popular(artifacts, TOP_N, user.seen), catalogue)
    return rank


def _random_ranker(artifacts: ModelArtifacts, catalogue: Mapping[int, MovieInfo]) -> Ranker:
    def rank(user: SimUser, rng: random.Random) -> list[Scored]:
        n = len(artifacts.item_ids)
        # TOP_N + |seen| distinct draws leave at least TOP_N unseen movies when there are any.
        rows = rng.sample(range(n), min(n, TOP_N + len(user.seen)))
        movies = [int(artifacts.item_ids[r]) for r in rows]
        return _scored(((m, 0.0) for m in movies if m not in user.seen), catalogue)[:TOP_N]
    return rank
