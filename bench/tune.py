"""Tune: how the shipped defaults of both models were chosen, without looking at any split a
figure is reported on.

Datasets: the training side of ml-latest-small's seed-42 80/20 split (the split
``bench/train`` and every README figure report on; its test side is never read here), and
the training side of the same split of synthetic streams (``data_loading.synthetic``) at
several seeds, sizes and activity levels. Each is cut again into a fitting part and a
validation part (``train.pipeline.validation_split``, seed 43), and every candidate of the
grid is fitted on the first and scored on the second (``train.pipeline.search``): the
rating model first, on RMSE over every validation pair (with the biases' fallback); then
the ranking model on NDCG@10 (ratings >= 4 relevant, unseen movies as candidates) of its
lists as serving orders them, with the chosen rating model's predictions mixed in at each
candidate ``rating_weight``.

The choice must hold beyond one dataset: per dataset each candidate's score is divided by
the best candidate's (NDCG / best NDCG; best RMSE / RMSE), and the defaults are the
candidate with the highest worst relative score over all datasets; candidates within 0.2%
of that worst case count as equal, and the smallest rank among them wins (then the higher
worst case, then the mean).
``recommender train --tune`` runs the same search on a deployment's own data.

Run it with ``make tune`` (``python -m bench.run_all --only tune``; ``--quick``: a smaller
grid and one synthetic dataset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from bench.common import begin, envelope, log, table, target
from bench.fixtures import ML_SMALL, ml_small
from bench.monitor import RssMonitor
from recommender.settings import RankingSettings, RatingSettings, Settings
from recommender.train import als

KINDS = ("ranking", "rating")
SPLIT_SEED = 42  # the reported split; only its training side is used


@dataclass(frozen=True)
class Synthetic:
    """One synthetic dataset: ``users`` users at ``mean_ratings`` ratings each on average."""

    users: int
    mean_ratings: float
    seed: int

    @property
    def name(self) -> str:
        return f"synthetic {self.users} users x {self.mean_ratings:g}, seed {self.seed}"


# MovieLens-shaped densities (its releases keep users with at least 20 ratings; their means
# run from about 100 to 165 per user), at different seeds and sizes.
SYNTHETIC = (Synthetic(1_000, 100, 1), Synthetic(600, 165, 2), Synthetic(3_000, 50, 3))
SPACES = {  # per model: quick run, full run
    "ranking": {False: als.SearchSpace(rank=(16, 32), reg_param=(0.05, 0.1, 0.2, 0.4),
                                       max_iter=(15,), alpha=(0.5, 1.0),
                                       rating_weight=(0.0, 0.05, 0.1, 0.2, 0.3)),
                True: als.SearchSpace(rank=(16, 32), reg_param=(0.1,), max_iter=(10,),
                                      alpha=(1.0,), rating_weight=(0.0, 0.1))},
    "rating": {False: als.SearchSpace(rank=(32, 64), reg_param=(0.1, 0.15, 0.2),
                                      max_iter=(15,), item_bias_reg=(3.0, 5.0, 10.0),
                                      user_bias_reg=(1.0, 2.0, 5.0),
                                      new_movie_max_ratings=(1, 2, 3)),
               True: als.SearchSpace(rank=(16, 32), reg_param=(0.1,), max_iter=(10,),
                                     item_bias_reg=(10.0,), user_bias_reg=(5.0,),
                                     new_movie_max_ratings=(1, 2))},
}
# The rating model is searched first, in three stages: rank x reg_param at the base bias
# settings on every dataset, then the bias regularisations at the (rank, reg_param) chosen
# from the first stage (the two barely interact), then which movies tell what to expect of
# a new one (``new_movie_max_ratings``) at the choice so far: a grid within budget.
# Then the ranking model, its lists ordered with each dataset's chosen rating model
# (``rating_weight``, ``train.als.ordering``), as serving orders them.
BIAS_AXES = ("item_bias_reg", "user_bias_reg")
NEW_MOVIE_AXIS = "new_movie_max_ratings"
# what each stage holds at the choice of the stages before it
STAGE_FIXED = ((), ("rank", "reg_param"), ("rank", "reg_param", *BIAS_AXES))


def rating_stages(space: als.SearchSpace) -> list[tuple[str, als.SearchSpace]]:
    """The rating search's three stages; each searches its axes, the others at the base."""
    unset = {axis: (None,) for axis in (*BIAS_AXES, NEW_MOVIE_AXIS)}
    return [("rank x reg_param", replace(space, **unset)),
            ("bias regularisation", replace(space, **{NEW_MOVIE_AXIS: (None,)})),
            ("new-movie bias", replace(space, **{a: (None,) for a in BIAS_AXES}))]


@dataclass
class Validation:
    """One dataset's fitting part (cached) and validation rows."""

    name: str
    rows: int
    sub: Any
    valid: Any


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    bench_run, clock, private = begin(settings, "tune")
    spark = bench_run.spark()
    spaces = {kind: SPACES[kind][quick] for kind in KINDS}
    frames = [(ML_SMALL, ml_small(private).ratings_frame)]
    frames += [(s.name, synthetic_frame(private, s)) for s in SYNTHETIC[:1 if quick else None]]
    with RssMonitor() as rss:
        rss.track("bench process (driver, Spark JVM, Python workers)", os.getpid())
        splits = [validation(spark, name, frame) for name, frame in frames]
        try:
            results, chosen = select(splits, private, spaces)
        finally:
            for split in splits:
                split.sub.unpersist()
    shipped = shipped_defaults()
    tables = [choice_table(kind, chosen[kind], results) for kind in KINDS]
    targets = [target(f"shipped {kind} defaults are the selection's choice",
                      float(_same(shipped[kind], chosen[kind]["params"])), 1.0, ">=",
                      note=f"shipped {shipped[kind]}, chosen {chosen[kind]['params']}")
               for kind in KINDS]
    return envelope(
        "tune", private, quick, clock,
        dataset={"datasets": [{"name": s.name, "rows": s.rows} for s in splits],
                 "split": f"training side of the random 80/20 split, seed {SPLIT_SEED}; "
                          f"validation: the same split of it again, seed {SPLIT_SEED + 1}"},
        config={"space": {kind: {axis: list(getattr(spaces[kind], axis))
                                 for axis in TRIAL_KEYS[kind]} for kind in KINDS},
                "criterion": "highest worst-case score relative to each dataset's best; "
                             f"within {TIE_TOLERANCE:.1%} of it, the smallest rank"},
        metrics={"chosen": chosen, "shipped": shipped, "trials": results},
        targets=targets, tables=tables, rss=rss,
        notes=["Scores are validation figures of data carved from training splits; the "
               "held-out figures of the chosen defaults are bench/train's."])


def validation(spark: Any, name: str, frame: pd.DataFrame) -> Validation:
    """The training side of the reported split, cut again into fitting and validation."""
    from recommender.model import snapshot
    from recommender.train import pipeline

    opts = pipeline.TrainOptions()
    ratings = snapshot.normalise(spark.createDataFrame(frame))
    train, _ = snapshot.split(ratings, opts.split, opts.test_fraction, SPLIT_SEED)
    sub, valid = pipeline.validation_split(train, opts, SPLIT_SEED, frame["user_id"].nunique())
    return Validation(name, len(frame), sub, valid)


def select(splits: list[Validation], settings: Settings, spaces: dict[str, als.SearchSpace],
           ) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, dict[str, Any]]]:
    """Every trial per dataset and model, and the choice per model."""
    from recommender.train import pipeline

    opts = pipeline.TrainOptions()
    base = pipeline.base_params(settings, opts)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in splits}
    for stage, (label, space) in enumerate(rating_stages(spaces["rating"])):
        at = choose("rating", {n: r["rating"] for n, r in results.items()})["params"] \
            if stage else {}
        for split in splits:
            log(f"tune: rating {label} on {split.name} ({split.rows:,} ratings)")
            done = {_key(t) for t in results[split.name].get("rating", [])}
            found = pipeline.search("rating", split.sub, split.valid, base["rating"],
                                    replace(space, **{k: (v,) for k, v in at.items()
                                                      if k in STAGE_FIXED[stage]}),
                                    settings, opts, log)
            results[split.name].setdefault("rating", []).extend(
                t for t in found if _key(t) not in done)
    chosen = {"rating": choose("rating", {n: r["rating"] for n, r in results.items()})}
    rating_params = replace(base["rating"], **chosen["rating"]["params"])
    for split in splits:
        log(f"tune: ranking on {split.name}, ordered with the chosen rating model")
        ordered_with = als.fit(split.sub, rating_params,
                               settings.spark.checkpoint_dir / "als").factors
        results[split.name]["ranking"] = pipeline.search(
            "ranking", split.sub, split.valid, base["ranking"], spaces["ranking"], settings,
            opts, log, ordered_with)
    chosen["ranking"] = choose("ranking", {n: r["ranking"] for n, r in results.items()})
    return results, chosen


def synthetic_frame(settings: Settings, spec: Synthetic) -> pd.DataFrame:
    """A synthetic stream over ml-latest-small's catalogue, as a ratings frame."""
    from data_loading.synthetic import Catalogue, generate

    catalogue = Catalogue.from_dataset(ml_small(settings))
    rows = [(e.user_id, e.movie_id, e.rating, e.event_time) for e in
            generate(catalogue, spec.users, spec.seed, mean_ratings=spec.mean_ratings)]
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "event_time"])


TRIAL_KEYS = {"ranking": ("rank", "reg_param", "max_iter", "alpha", "rating_weight"),
              "rating": ("rank", "reg_param", "max_iter", *BIAS_AXES, NEW_MOVIE_AXIS)}
METRIC = {"ranking": "ndcg_at_10", "rating": "rmse"}
TIE_TOLERANCE = 0.002  # a 0.2% better worst case is not worth a larger rank


def _key(trial: dict[str, Any], kind: str = "rating") -> tuple[Any, ...]:
    return tuple(trial[k] for k in TRIAL_KEYS[kind])


def relative(kind: str, trials: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    """Each candidate's score over the dataset's best (1.0 = the best; lower = worse)."""
    metric = METRIC[kind]
    scores = {_key(t, kind): t[metric] for t in trials if t.get(metric) is not None}
    if kind == "rating":
        best = min(scores.values())
        return {k: best / v for k, v in scores.items()}
    best = max(scores.values())
    return {k: v / best for k, v in scores.items()}


def choose(kind: str, per_dataset: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The candidate scored on every dataset with the highest worst relative score; among
    those within ``TIE_TOLERANCE`` of it, the one of smallest rank (cheaper to train, store
    and serve: ALS costs grow with rank squared per rating)."""
    rel = {name: relative(kind, trials) for name, trials in per_dataset.items()}
    common = set.intersection(*(set(r) for r in rel.values()))

    def worst(key: tuple[Any, ...]) -> float:
        return min(r[key] for r in rel.values())

    top = max(worst(key) for key in common)
    near = [key for key in common if worst(key) >= top * (1 - TIE_TOLERANCE)]
    best = min(near, key=lambda key: (key[0], -worst(key), -sum(r[key] for r in rel.values())))
    return {"params": dict(zip(TRIAL_KEYS[kind], best, strict=True)),
            "worst_relative": round(worst(best), 4),
            "relative": {name: round(r[best], 4) for name, r in rel.items()},
            "score": {name: next(t[METRIC[kind]] for t in per_dataset[name]
                                 if _key(t, kind) == best) for name in per_dataset},
            "candidates": len(common)}


def shipped_defaults() -> dict[str, dict[str, Any]]:
    """The defaults the code ships (what the choice must equal), on the grid's axes."""
    defaults = {"ranking": RankingSettings(), "rating": RatingSettings()}
    return {kind: {k: getattr(defaults[kind], k) for k in TRIAL_KEYS[kind]} for kind in KINDS}


def _same(shipped: dict[str, Any], chosen: dict[str, Any]) -> bool:
    return all(float(shipped[k]) == float(v) for k, v in chosen.items())


def choice_table(kind: str, chosen: dict[str, Any],
                 results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per dataset: the chosen candidate's validation score, the dataset's best candidate
    and its score, and the chosen one's relative score."""
    metric = METRIC[kind]
    rows = []
    for name, per_kind in results.items():
        trials = [t for t in per_kind[kind] if t.get(metric) is not None]
        pick = min if kind == "rating" else max
        best = pick(trials, key=lambda t: t[metric])
        rows.append([name, chosen["score"][name], _describe(kind, best), best[metric],
                     chosen["relative"][name]])
    return table(f"{kind} model: chosen {_describe(kind, chosen['params'])} "
                 f"(validation {metric})",
                 ["dataset", f"chosen {metric}", "dataset's best", f"best {metric}",
                  "relative"], rows)


def _describe(kind: str, params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {params[k]}" for k in TRIAL_KEYS[kind])



if __name__ == "__main__":
    from bench.run_all import run_one

    run_one("tune")
