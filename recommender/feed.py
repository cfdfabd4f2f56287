"""The session feed's rule for "the next movie", pure: one implementation that the API's
session store (``serve/feed_state``) and the A/B simulation (``simulate``) both run, so a
simulated session is served exactly as ``/sessions/{id}/next`` serves a real one.

The rule, given the session's top list (the user's ``TOP_N`` from the live recommender) and
the movies the user rated (never served):

1. a random movie of the top list not served yet in this session;
2. when all are used: the most popular unserved, unrated movie of the *genre of the last
   served movie* (the first genre listed for it); that genre then stays fixed, so the
   fallback never drifts;
3. when the genre runs dry: the most popular remaining movie of any genre;
4. when nothing is left: ``NotFound``.

"Popular" is the model's training rating count (``ModelArtifacts.popularity_order``), the
same fallback ranking as the predictor's. Example::

    state = FeedState(top=top30, seen=set(rated))
    movie, source = next_movie(state, random.Random(), lambda k, excluded, genre:
                               popular_movies(art, catalogue, k, excluded, genre))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from recommender.errors import NotFound
from recommender.model.artifacts import ModelArtifacts
from recommender.model.foldin import recommend_popular
from recommender.vectors import MovieInfo

TOP_N = 30  # movies of the user's ranking a session draws from before falling back
Source = Literal["top", "genre-fallback", "popular-fallback"]
NO_INFO: MovieInfo = (None, None, [])


@dataclass(frozen=True)
class Scored:
    """A recommended movie: its id, the ranking's score, and (title, year, genres)."""

    movie_id: int
    score: float
    info: MovieInfo


# (k, excluded movie ids, genre or None) -> the k most popular movies left, best first
Popular = Callable[[int, set[int], str | None], list[Scored]]


@dataclass
class FeedState:
    """What a session remembers: its top list, the user's rated movies, what it served, and
    the fallback genre once fixed."""

    top: list[Scored]
    seen: set[int]
    served: list[Scored] = field(default_factory=list)
    genre: str | None = None

    @property
    def served_ids(self) -> set[int]:
        return {s.movie_id for s in self.served}


def next_movie(state: FeedState, rng: random.Random, popular: Popular) -> tuple[Scored, Source]:
    """Pick the next movie by the module's rule, record it as served, and say which step of
    the rule produced it. ``popular`` is only called once the top list is used up."""
    movie, source = _pick(state, rng, popular)
    state.served.append(movie)
    return movie, source


def _pick(state: FeedState, rng: random.Random, popular: Popular) -> tuple[Scored, Source]:
    served = state.served_ids
    fresh = [s for s in state.top if s.movie_id not in served]
    if fresh:
        return rng.choice(fresh), "top"
    if state.genre is None and state.served:
        genres = state.served[-1].info[2]
        state.genre = genres[0] if genres else None
    excluded = served | state.seen
    if state.genre is not None:
        found = popular(1, excluded, state.genre)
        if found:
            return found[0], "genre-fallback"
    found = popular(1, excluded, None)
    if found:
        return found[0], "popular-fallback"
    raise NotFound("this session has served every movie the model knows")


def popular_movies(artifacts: ModelArtifacts, catalogue: Mapping[int, MovieInfo], k: int,
                   excluded: set[int], genre: str | None = None) -> list[Scored]:
    """The ``k`` most-rated movies of ``artifacts``' training data not in ``excluded``, optionally
    only those whose ``catalogue`` genres include ``genre``."""
    if genre is None:
        ranked = recommend_popular(artifacts, k, excluded)
    else:
        ranked = []
        for row in artifacts.popularity_order:
            movie = int(artifacts.item_ids[row])
            if movie not in excluded and genre in catalogue.get(movie, NO_INFO)[2]:
                ranked.append((movie, float(artifacts.item_counts[row])))
                if len(ranked) == k:
                    break
    return [Scored(m, s, catalogue.get(m, NO_INFO)) for m, s in ranked]
