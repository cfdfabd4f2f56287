"""One simulated user consuming one feed session: the response model, pure.

The user is a real MovieLens user cut in two by the model's train/held-out split: ``seen``
holds the ratings the system knows (never served, fold-in input), ``held_out`` the ratings
the model never saw, which stand in for the user's future. Shown a movie, the user

* *consumes* it if they rated it in ``held_out`` (they watched it in reality) and *likes* it
  when that rating is >= ``like_threshold``;
* skips it otherwise: a movie they never watched is treated as one they did not want. This
  is pessimistic for every policy alike, and it is the only answer held-out data can give
  without inventing ratings (e.g. with a model, which would judge a model by a model).

The user drops off after ``patience`` served movies in a row that they did not like, or after
``max_length`` movies, or when the feed has nothing left to serve.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from recommender.errors import NotFound
from recommender.feed import FeedState, Popular, Scored, next_movie


@dataclass(frozen=True)
class SimUser:
    """A user's ratings on both sides of the split, ``{movie_id: rating}``."""

    user_id: int
    seen: dict[int, float]
    held_out: dict[int, float]


@dataclass(frozen=True)
class Rules:
    """How a simulated user behaves (see the module docstring)."""

    patience: int = 5
    max_length: int = 50
    like_threshold: float = 4.0

    def __post_init__(self) -> None:
        if self.patience < 1 or self.max_length < 1:
            raise ValueError("patience and max_length must be at least 1")


@dataclass(frozen=True)
class Outcome:
    """What one session produced."""

    length: int  # movies served until the user dropped off
    consumed: int  # served movies the user had rated (held out)
    liked: int  # consumed movies rated >= like_threshold
    rating_sum: float  # sum of the held-out ratings of the consumed movies

    @property
    def hit_rate(self) -> float:
        return self.consumed / self.length if self.length else 0.0

    @property
    def mean_rating(self) -> float | None:
        """Mean rating of the consumed movies; None when the user consumed none."""
        return self.rating_sum / self.consumed if self.consumed else None


def play(user: SimUser, top: list[Scored], rules: Rules, rng: random.Random,
         popular: Popular) -> Outcome:
    """Serve ``user`` a session through the feed rule, starting from ``top``, until they drop
    off; ``top`` is the policy's ranking for the user (at most ``feed.TOP_N`` movies)."""
    state = FeedState(top=top, seen=set(user.seen))
    consumed = liked = misses = 0
    rating_sum = 0.0
    while len(state.served) < rules.max_length and misses < rules.patience:
        try:
            movie, _ = next_movie(state, rng, popular)
        except NotFound:
            break
        rating = user.held_out.get(movie.movie_id)
        if rating is not None:
            consumed += 1
            rating_sum += rating
        if rating is not None and rating >= rules.like_threshold:
            liked += 1
            misses = 0
        else:
            misses += 1
    return Outcome(len(state.served), consumed, liked, rating_sum)
