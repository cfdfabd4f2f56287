"""Synthetic MovieLens-shaped rating streams with a planted truth, at any number of users.

Why: ml-latest-small has 610 users, far too few for a load test, and no real dataset says
what a model *should* learn. Here every user is drawn from a known low-rank model, so a
trained model can be checked against the taste that generated the data, and ten million
users stream through in constant memory (one user is alive at a time).

The generative story, per user (a ``numpy`` Philox generator keyed by ``(seed, user_id)``, so
any user can be regenerated alone with ``planted_taste``):

1. taste: a Dirichlet draw over the catalogue's genres, concentrated so most users like a
   few genres (alpha proportional to how common each genre is);
2. popularity bias: an exponent from ``BETA_LEVELS`` (0.25 = explorer, 1.25 = blockbusters);
3. activity: how many movies the user rates, lognormal with mean ``mean_ratings``, clipped;
4. movies: for each rating pick a genre by taste, then a movie of that genre with probability
   proportional to ``popularity ** beta`` (real rating counts of the catalogue), no repeats;
5. rating: ``3.7 + user offset + movie bias + 2 * (user_factor . item_factor - 0.5)`` plus
   Gaussian noise, rounded to half stars in 0.5..5. ``user_factor`` is the taste scaled to a
   maximum of 1, ``item_factor`` the movie's genres (one-hot / #genres) plus small noise.

Timestamps go up across the whole stream in whole seconds, so a CSV round trip (MovieLens
stores seconds) gives back the same event ids.

Example::

    cat = Catalogue.from_dataset(locate("ml-latest-small"))
    for event in generate(cat, users=1000, seed=7): ...
    truth = planted_taste(cat, user_id=1, seed=7)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from data_loading.datasets import Dataset, Movie
from recommender.contracts import RATING_MAX, RATING_MIN, RatingEvent

GENERATOR_VERSION = 1
BETA_LEVELS = (0.25, 0.5, 0.75, 1.0, 1.25)
CONCENTRATION = 0.3  # Dirichlet alpha per genre, times genre share x #genres
MEAN_RATING, SPREAD, NOISE = 3.7, 2.0, 0.5  # mean of generated ratings ~3.5, as MovieLens
USER_OFFSET_SD, ITEM_BIAS_SD, ITEM_FACTOR_SD = 0.35, 0.3, 0.05
ACTIVITY_SIGMA = 1.0  # lognormal shape: heavy tail, a few users rate hundreds of movies
START_S = 1_577_836_800  # 2020-01-01T00:00:00Z: fixed, so output does not depend on "now"


@dataclass(frozen=True)
class PlantedTaste:
    """The truth behind one synthetic user."""

    user_id: int
    taste: np.ndarray  # (genres,), sums to 1: P(next rating is of genre g)
    popularity_bias: float
    offset: float  # added to every rating of this user
    n_ratings: int  # target; fewer when the user's genres hold fewer movies

    @property
    def user_factor(self) -> np.ndarray:
        return self.taste / self.taste.max()


@dataclass(frozen=True)
class PlantedItems:
    factors: np.ndarray  # (movies, genres)
    bias: np.ndarray  # (movies,)


class Catalogue:
    """The real movies synthetic users rate: ids, genres and popularity, plus per-genre
    sampling tables (one per popularity level) built once. O(movies) memory."""

    def __init__(self, movies: Sequence[Movie], rating_counts: Mapping[int, int] | None = None):
        self.movies = list(movies)
        self.movie_ids = np.array([m.movie_id for m in self.movies], dtype=np.int64)
        self.genres = tuple(sorted({g for m in self.movies for g in m.genres}))
        if not self.genres:
            raise ValueError("the catalogue has no genres to build tastes from")
        col = {g: i for i, g in enumerate(self.genres)}
        onehot = np.zeros((len(self.movies), len(self.genres)))
        for row, m in enumerate(self.movies):
            for g in m.genres:
                onehot[row, col[g]] = 1.0 / len(m.genres)
        self.genre_matrix = onehot
        counts = rating_counts or {}
        self.popularity = np.array([counts.get(m.movie_id, 0) + 1.0 for m in self.movies])
        share = (onehot > 0).sum(axis=0) / (onehot > 0).sum()
        self.alpha = CONCENTRATION * len(self.genres) * share

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> Catalogue:
        return cls(dataset.movies(), {m: c for m, (c, _) in dataset.rating_stats().items()})

    @cached_property
    def _tables(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Movies of genre 0, then genre 1, ...; per popularity level a cumulative table where
        genre g's movies span (g, g + 1], so one ``searchsorted`` samples all genres."""
        members = [np.flatnonzero(self.genre_matrix[:, g]) for g in range(len(self.genres))]
        cdfs = []
        for beta in BETA_LEVELS:
            parts = []
            for g, idx in enumerate(members):
                w = np.cumsum(self.popularity[idx] ** beta)
                parts.append(g + w / w[-1])
            cdfs.append(np.concatenate(parts))
        return np.concatenate(members), cdfs

    def items(self, seed: int) -> PlantedItems:
        rng = np.random.default_rng([seed, 0, 0])  # not a Philox key: never equals a user's
        noise = rng.normal(0.0, ITEM_FACTOR_SD, self.genre_matrix.shape)
        return PlantedItems(self.genre_matrix + noise,
                            rng.normal(0.0, ITEM_BIAS_SD, len(self.movies)))


def _draw_user(rng: np.random.Generator, cat: Catalogue, user_id: int, mean_ratings: float,
               max_ratings: int) -> PlantedTaste:
    """The first draws of a user's generator: the planted truth. Order matters."""
    taste = rng.dirichlet(cat.alpha)
    level = int(rng.integers(len(BETA_LEVELS)))
    offset = float(rng.normal(0.0, USER_OFFSET_SD))
    mu = np.log(mean_ratings) - ACTIVITY_SIGMA**2 / 2  # lognormal mean = mean_ratings
    n = min(max(round(float(rng.lognormal(mu, ACTIVITY_SIGMA))), 1), max_ratings)
    return PlantedTaste(user_id, taste, BETA_LEVELS[level], offset, n)


def planted_taste(catalogue: Catalogue, user_id: int, seed: int, *, mean_ratings: float = 20,
                  max_ratings: int = 1000) -> PlantedTaste:
    """The truth ``generate`` used for ``user_id`` (same seed and parameters)."""
    rng = np.random.Generator(np.random.Philox(key=np.array([seed, user_id], np.uint64)))
    return _draw_user(rng, catalogue, user_id, mean_ratings,
                      min(max_ratings, len(catalogue.movies)))


def expected_rating(truth: PlantedTaste, items: PlantedItems, movie_index: int) -> float:
    """The noise-free, unrounded rating ``truth``'s user would give movie ``movie_index``
    (a row of the catalogue): what a perfect model predicts."""
    score = float(items.factors[movie_index] @ truth.user_factor)
    return MEAN_RATING + truth.offset + float(items.bias[movie_index]) + SPREAD * (score - 0.5)


class _UserStreams:
    """One Philox generator re-keyed per user: the same numbers as a fresh
    ``Generator(Philox(key=[seed, user_id]))`` at a seventh of the cost of creating one
    (which dominated the per-user time)."""

    def __init__(self, seed: int):
        if seed < 0:
            raise ValueError("seed must be >= 0")
        self.seed = seed
        self._bits = np.random.Philox(key=np.array([seed, 0], np.uint64))
        self.rng = np.random.Generator(self._bits)

    def for_user(self, user_id: int) -> np.random.Generator:
        self._bits.state = {
            "bit_generator": "Philox", "buffer": np.zeros(4, np.uint64), "buffer_pos": 4,
            "has_uint32": 0, "uinteger": 0,
            "state": {"counter": np.zeros(4, np.uint64),
                      "key": np.array([self.seed, user_id], np.uint64)},
        }
        return self.rng


def generate(catalogue: Catalogue, users: int, seed: int = 0, *, first_user: int = 1,
             mean_ratings: float = 20, max_ratings: int = 1000, mean_gap_s: float = 1.0,
             start_s: int = START_S, source: str = "synthetic") -> Iterator[RatingEvent]:
    """Ratings of ``users`` users (ids ``first_user`` ...), one user after another, with
    non-decreasing timestamps (gaps exponential with mean ``mean_gap_s``). Deterministic in
    all arguments; memory does not grow with ``users``."""
    if first_user < 1:
        raise ValueError("user ids start at 1 or above")
    members, cdfs = catalogue._tables
    items = catalogue.items(seed)
    streams = _UserStreams(seed)
    max_ratings = min(max_ratings, len(catalogue.movies))
    clock = float(start_s)
    for user_id in range(first_user, first_user + users):
        rng = streams.for_user(user_id)
        truth = _draw_user(rng, catalogue, user_id, mean_ratings, max_ratings)
        draws = int(truth.n_ratings * 1.5) + 5  # oversample, then drop repeats
        cumulative = np.cumsum(truth.taste)
        cumulative[-1] = 1.0  # so a uniform draw below 1 always lands on a genre
        uniform = rng.random(2 * draws)
        genre = np.searchsorted(cumulative, uniform[:draws], side="right")
        table = cdfs[BETA_LEVELS.index(truth.popularity_bias)]
        picked = members[np.searchsorted(table, genre + (1.0 - uniform[draws:]))]
        rows = np.array(list(dict.fromkeys(picked.tolist()))[: truth.n_ratings])
        score = items.factors[rows] @ truth.user_factor
        raw = (MEAN_RATING + truth.offset + items.bias[rows] + SPREAD * (score - 0.5)
               + rng.normal(0.0, NOISE, len(rows)))
        ratings = np.minimum(np.maximum(np.round(raw * 2) / 2, RATING_MIN), RATING_MAX)
        times = clock + np.cumsum(rng.exponential(mean_gap_s, len(rows)))
        clock = float(times[-1])
        for movie, rating, ts in zip(catalogue.movie_ids[rows].tolist(), ratings.tolist(),
                                     (np.floor(times).astype(np.int64) * 1000).tolist(),
                                     strict=True):
            yield RatingEvent(f"{source}:{user_id}:{movie}:{ts}", user_id, movie, rating, ts,
                              "rating", None, source)


def write_csv(events: Iterable[RatingEvent], out_dir: Path, catalogue: Catalogue,
              manifest: Mapping[str, object] | None = None) -> int:
    """Write ``events`` as ml-latest-small files (ratings.csv, movies.csv, links.csv) plus
    ``synthetic.json`` (``manifest``: seed and parameters, to regenerate the truth). The
    directory then loads like a release: ``recommender load ratings --dataset DIR``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "movies.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for m in catalogue.movies:
            title = f"{m.title} ({m.year})" if m.year else m.title
            w.writerow([m.movie_id, title, "|".join(m.genres) or "(no genres listed)"])
    with open(out_dir / "links.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "imdbId", "tmdbId"])
        w.writerows([m.movie_id, m.imdb_id or "", m.tmdb_id or ""] for m in catalogue.movies)
    count = 0
    with open(out_dir / "ratings.csv", "w", encoding="utf-8", newline="") as f:
        f.write("userId,movieId,rating,timestamp\r\n")
        batch: list[str] = []
        for e in events:
            batch.append(f"{e.user_id},{e.movie_id},{e.rating},{e.event_time // 1000}\r\n")
            if len(batch) >= 100_000:
                f.write("".join(batch))
                count += len(batch)
                batch.clear()
        f.write("".join(batch))
        count += len(batch)
    meta = {"generator_version": GENERATOR_VERSION, "ratings": count, **(manifest or {})}
    (out_dir / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
    return count
