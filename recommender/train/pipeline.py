"""One training run: snapshot, window, split, (tune), fit both models, evaluate, save, gate.

The batch layer's single entry point. It takes a ratings DataFrame, so the same run serves
``recommender train`` (Cassandra), benchmarks (a CSV) and tests; the registry alone decides
whether the result serves.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import recommender
from recommender.errors import TrainingRefused
from recommender.model import snapshot
from recommender.model.artifacts import FactorModel, ModelArtifacts, spark_model_dir
from recommender.model.registry import GateDecision, ModelRegistry
from recommender.settings import Settings
from recommender.train import als, evaluate

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# What each model is judged on when ``--tune`` searches its hyper-parameters.
TUNE_METRIC = {"ranking": "ndcg_at_10", "rating": "rmse"}
# Which evaluation figures belong to which model in a version's flat ``metrics``.
RATING_METRICS = ("rmse", "mae", "rmse_scorable", "mae_scorable", "rated_pairs",
                  "scorable_pairs")


@dataclass(frozen=True)
class TrainOptions:
    """Everything a run can vary; hyper-parameter defaults come from ``ModelSettings``.

    ``ranking`` and ``rating`` override single parameters of either model (rank, reg_param,
    max_iter, alpha ...).
    """

    split: snapshot.SplitMethod = "random"
    test_fraction: float = 0.2
    last_n: int | None = None
    days: float | None = None
    tune: bool = False
    space: als.SearchSpace = field(default_factory=als.SearchSpace)
    k: int = 10
    relevance_threshold: float = 4.0
    max_eval_users: int = 10_000
    min_ratings: int = 100
    force: bool = False
    ranking: dict[str, Any] = field(default_factory=dict)
    rating: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trained:
    """One of the two fitted models with its held-out figures."""

    kind: str
    fitted: als.Fitted
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    tuning: dict[str, Any] | None
    fit_seconds: float


@dataclass(frozen=True)
class TrainResult:
    version: str
    decision: GateDecision
    metadata: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float]:
        return self.metadata["metrics"]


def run(ratings: DataFrame, settings: Settings, options: TrainOptions | None = None, *,
        source: str = "dataframe", registry: ModelRegistry | None = None,
        on_event: Callable[[str], None] = lambda _: None) -> TrainResult:
    """Train both models, evaluate and register one version; raises ``TrainingRefused``
    (nothing written) when the data is too small. A gate refusal is a normal result: see
    ``decision``."""
    opts = options or TrainOptions()
    registry = registry or ModelRegistry.from_settings(settings.model)
    seed = settings.model.seed
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # Factors and held-out rows come to the driver; Arrow makes that 10x faster.
    ratings.sparkSession.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    checkpoints_before = als.checkpoint_files(ratings.sparkSession)
    cached = []
    if not ratings.is_cached:  # a caller that cached it (to reuse it after) keeps it cached
        ratings = ratings.persist()
        cached.append(ratings)
    try:
        used = ratings
        if opts.last_n or opts.days:
            total = ratings.count()
            used = snapshot.window(ratings, opts.last_n, opts.days).persist()
            cached.append(used)
            snap = snapshot.snapshot(used, source, rows_total=total)
        else:
            snap = snapshot.snapshot(ratings, source)
        timings["read_s"] = time.perf_counter() - started
        on_event(f"read {snap.rows} ratings ({snap.users} users, {snap.items} movies) "
                 f"in {timings['read_s']:.1f}s")
        snapshot.require_enough(snap, opts.min_ratings)

        tic = time.perf_counter()
        train, test = snapshot.split(used, opts.split, opts.test_fraction, seed)
        train = train.persist()  # both models and their tuning read it
        cached.append(train)
        if opts.split == "time":  # a window sort: compute once (the hash split is a cheap filter)
            test = test.persist()
            cached.append(test)
        holdout = _holdout(train, test, opts, seed, snap.users, "held-out")
        timings["split_s"] = time.perf_counter() - tic

        tuned = _tune(train, settings, opts, snap.users, on_event) if opts.tune else {}
        params = base_params(settings, opts)
        params.update({kind: result["best"] for kind, result in tuned.items()})
        models = _train_both(train, holdout, params, settings, opts, tuned, on_event)
        timings["fit_s"] = sum(m.fit_seconds for m in models.values())
        timings["evaluate_s"] = sum(m.metrics.pop("_seconds") for m in models.values())

        tic = time.perf_counter()
        version = registry.new_version()
        with registry.staging(version) as tmp:
            for kind, trained in models.items():
                trained.fitted.model.write().save(str(tmp / spark_model_dir(kind)))
            timings["save_s"] = time.perf_counter() - tic
            timings["total_s"] = time.perf_counter() - started
            meta = _metadata(version, models, snap, holdout, opts, timings, seed)
            meta = _artifacts(version, models, holdout, train).save(tmp, meta)
        decision = registry.publish(version, force=opts.force)
        on_event(f"saved {version} in {timings['save_s']:.1f}s; gate: "
                 f"{'promoted' if decision.accepted else 'refused'} ({decision.reason})")
        return TrainResult(version, decision, meta)
    finally:
        for df in reversed(cached):
            df.unpersist()
        # ALS's last checkpoint stays behind; the factors are saved, so drop this run's own.
        for path in als.checkpoint_files(ratings.sparkSession) - checkpoints_before:
            shutil.rmtree(path, ignore_errors=True)


def _holdout(train: DataFrame, test: DataFrame, opts: TrainOptions, seed: int, users: int,
             what: str) -> evaluate.HoldOut:
    holdout = evaluate.collect_holdout(train, test, opts.max_eval_users, seed, users)
    if len(holdout.test_rating) == 0 or len(holdout.items) < 2:
        raise TrainingRefused(f"the {opts.split} split left no {what} ratings to evaluate "
                              "on (too little data); no model was written")
    return holdout


def _train_both(train: DataFrame, holdout: evaluate.HoldOut, params: dict[str, als.Params],
                settings: Settings, opts: TrainOptions, tuned: dict[str, dict[str, Any]],
                on_event: Callable[[str], None]) -> dict[str, Trained]:
    """The rating model, then the ranking model: its lists are scored as serving orders
    them, with the rating model's predictions mixed in (``als.ordering``)."""
    rating = _train("rating", train, holdout, params["rating"], settings, opts,
                    tuned.get("rating"), on_event)
    ranking = _train("ranking", train, holdout, params["ranking"], settings, opts,
                     tuned.get("ranking"), on_event, rating.fitted.factors)
    return {"ranking": ranking, "rating": rating}


def _train(kind: str, train: DataFrame, holdout: evaluate.HoldOut, params: als.Params,
           settings: Settings, opts: TrainOptions, tuning: dict[str, Any] | None,
           on_event: Callable[[str], None], rating: evaluate.Factors | None = None) -> Trained:
    tic = time.perf_counter()
    fitted = als.fit(train, params, settings.spark.checkpoint_dir / "als")
    fit_s = time.perf_counter() - tic
    tic = time.perf_counter()
    results = _score(kind, holdout, _ordered(fitted.factors, params, rating), opts,
                     settings.model.seed)
    metrics = results.pop("als")
    metrics["_seconds"] = time.perf_counter() - tic
    on_event(f"{kind} model {_describe(params)}: fit {fit_s:.1f}s, "
             f"{TUNE_METRIC[kind]} {metrics.get(TUNE_METRIC[kind], float('nan')):.4f}")
    return Trained(kind, fitted, metrics, results, tuning, fit_s)


def _ordered(factors: evaluate.Factors, params: als.Params,
             rating: evaluate.Factors | None) -> evaluate.Factors:
    """What a model's lists are judged by: a ranking model's with the rating model mixed in
    as serving does; a rating model's (or a ranking model's without one) as they are."""
    if rating is None or not isinstance(params, als.RankingParams):
        return factors
    return als.ordering(factors, rating, params.rating_weight)


def _score(kind: str, holdout: evaluate.HoldOut, factors: evaluate.Factors,
           opts: TrainOptions, seed: int) -> dict[str, dict[str, float]]:
    """The held-out figures that belong to ``kind`` (ranking metrics or rating errors), for
    the model (``als``) and for the baselines scored on the same users and rows."""
    results = evaluate.evaluate(holdout, factors, opts.k, opts.relevance_threshold, seed)
    rating = kind == "rating"
    return {name: {k: v for k, v in figures.items() if (k in RATING_METRICS) == rating}
            for name, figures in results.items()}


def _describe(params: als.Params) -> str:
    return " ".join(f"{k}={v}" for k, v in params.to_dict().items()
                    if k not in ("seed", "implicit_prefs"))


def _tune(train: DataFrame, settings: Settings, opts: TrainOptions, users: int,
          on_event: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Search both models on a validation split carved out of the training split (the test
    split stays untouched until the final evaluation): every candidate of ``opts.space`` is
    fitted on the rest of the training split and judged on ``TUNE_METRIC``. The rating model
    goes first: the ranking candidates' lists are ordered with the best one's predictions."""
    sub, valid = validation_split(train, opts, settings.model.seed, users)
    try:
        out: dict[str, dict[str, Any]] = {}
        rating, bases = None, base_params(settings, opts)
        for kind in ("rating", "ranking"):
            base = bases[kind]
            trials = search(kind, sub, valid, base, opts.space, settings, opts, on_event,
                            rating)
            best = best_trial(kind, trials)
            out[kind] = {"metric": TUNE_METRIC[kind], "trials": trials,
                         "best": _with_trial(base, best) if best else base}
            if kind == "rating":
                rating = als.fit(sub, out[kind]["best"],
                                 settings.spark.checkpoint_dir / "als").factors
        return out
    finally:
        sub.unpersist()


def validation_split(train: DataFrame, opts: TrainOptions, seed: int,
                     users: int) -> tuple[DataFrame, evaluate.HoldOut]:
    """The training split cut again (seed + 1): the part to fit candidates on (cached: the
    caller unpersists it) and the held-out validation rows to judge them by."""
    sub, valid = snapshot.split(train, opts.split, opts.test_fraction, seed + 1)
    sub = sub.persist()
    try:
        return sub, _holdout(sub, valid, opts, seed, users, "validation")
    except TrainingRefused:
        sub.unpersist()
        raise


def base_params(settings: Settings, opts: TrainOptions) -> dict[str, als.Params]:
    """Both models' hyper-parameters: the settings' with the run's overrides."""
    return {"ranking": als.RankingParams.from_settings(settings.model, **opts.ranking),
            "rating": als.RatingParams.from_settings(settings.model, **opts.rating)}


def search(kind: str, sub: DataFrame, valid: evaluate.HoldOut, base: als.Params,
           space: als.SearchSpace, settings: Settings, opts: TrainOptions,
           on_event: Callable[[str], None] = lambda _: None,
           rating: evaluate.Factors | None = None) -> list[dict[str, Any]]:
    """Every candidate of ``space`` around ``base``, fitted on ``sub`` and scored on the
    ``valid`` rows: its params with its ``TUNE_METRIC`` (and the fit time). Ranking
    candidates are ordered with ``rating``'s predictions when given (``als.ordering``);
    candidates differing only in ``rating_weight`` share one fit."""
    metric = TUNE_METRIC[kind]
    trials = []
    fitted_key, fitted, fit_s = None, None, 0.0
    for params in space.candidates(base):
        if als.fit_key(params) != fitted_key:
            tic = time.perf_counter()
            fitted = als.fit(sub, params, settings.spark.checkpoint_dir / "als")
            fitted_key, fit_s = als.fit_key(params), round(time.perf_counter() - tic, 2)
        factors = _ordered(fitted.factors, params, rating)
        score = _score(kind, valid, factors, opts, settings.model.seed)["als"].get(metric)
        trials.append({**params.to_dict(), metric: score, "fit_s": fit_s})
        on_event(f"  {kind} trial {_describe(params)}: {metric}={score:.4f}")
    return trials


def best_trial(kind: str, trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial with the best ``TUNE_METRIC`` (lowest RMSE, highest NDCG)."""
    metric = TUNE_METRIC[kind]
    scored = [t for t in trials if t.get(metric) is not None]
    pick = min if metric == "rmse" else max
    return pick(scored, key=lambda t: t[metric], default=None)


def _with_trial(base: als.Params, trial: dict[str, Any]) -> als.Params:
    return replace(base, **{k: v for k, v in trial.items() if hasattr(base, k)})


def _artifacts(version: str, models: dict[str, Trained], holdout: evaluate.HoldOut,
               train: DataFrame) -> ModelArtifacts:
    ranking, rating = models["ranking"].fitted, models["rating"].fitted
    rf, tf = ranking.factors, rating.factors
    if not (np.array_equal(rf.item_ids, tf.item_ids)
            and np.array_equal(rf.user_ids, tf.user_ids)):
        raise TrainingRefused("the ranking and rating models were fitted on different users "
                              "or movies; no model was written")
    pos = np.searchsorted(holdout.items, rf.item_ids).clip(0, max(len(holdout.items) - 1, 0))
    counts = np.where(holdout.items[pos] == rf.item_ids, holdout.counts[pos], 0)
    return ModelArtifacts(
        version=version, item_ids=rf.item_ids, user_ids=rf.user_ids, item_counts=counts,
        ranking=FactorModel("ranking", rf.item_factors, rf.user_factors, ranking.recorded),
        rating=FactorModel("rating", tf.item_factors, tf.user_factors, rating.recorded),
        user_counts=_fitted_counts(train, rf.user_ids))


def _fitted_counts(train: DataFrame, user_ids: np.ndarray) -> np.ndarray:
    """Ratings per user the models were fitted on: how serving tells a user's newer ratings
    (the speed layer folds those users in from their whole history)."""
    counts = train.groupBy("user_id").count().toPandas().set_index("user_id")["count"]
    return counts.reindex(user_ids).fillna(0).to_numpy(np.int64)


def _metadata(version: str, models: dict[str, Trained], snap: snapshot.Snapshot,
              holdout: evaluate.HoldOut, opts: TrainOptions, timings: dict[str, float],
              seed: int) -> dict[str, Any]:
    """``metrics`` holds both models' figures (ranking metrics, rating errors: their names
    do not overlap); ``baseline_metrics`` the popularity and random baselines' on the same
    users and rows."""
    ranking, rating = models["ranking"], models["rating"]
    metrics = {**ranking.metrics, **rating.metrics}
    baselines = {name: {**figures, **rating.baselines.get(name, {})}
                 for name, figures in ranking.baselines.items()}
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {**snap.to_dict(), "window": {"last_n": opts.last_n, "days": opts.days}},
        "evaluation": {
            "split": opts.split, "test_fraction": opts.test_fraction, "seed": seed,
            "k": opts.k, "relevance_threshold": opts.relevance_threshold,
            "users": int(metrics.pop("users", 0)),
            "rated_pairs": int(metrics.get("rated_pairs", 0)),
            "catalogue": len(holdout.items),
        },
        "metrics": metrics,
        "baseline_metrics": {name: {k: v for k, v in m.items() if k != "users"}
                             for name, m in baselines.items()},
        "tuning": {kind: {**t, "best": t["best"].to_dict()}
                   for kind, t in ((k, m.tuning) for k, m in models.items()) if t} or None,
        "timings": _round(timings),
        "code_version": code_version(),
    }


# What runs write themselves (results, generated manuals, screenshots): not "changed code".
GENERATED_PATHS = (":(exclude)bench/results", ":(exclude)*.md", ":(exclude)docs")


def code_version() -> dict[str, Any]:
    """``recommender.__version__``, the git commit and whether the code differs from it
    (``git_sha`` ends in ``-dirty`` then); files the runs generate do not count."""
    repo = Path(recommender.__file__).resolve().parents[1]
    sha, dirty = None, None
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip() or None
        if sha:
            dirty = bool(subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--",
                 ".", *GENERATED_PATHS], capture_output=True, text=True, timeout=5).stdout.strip())
            sha += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"recommender": recommender.__version__, "git_sha": sha, "dirty": dirty}


def _round(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in values.items()}


