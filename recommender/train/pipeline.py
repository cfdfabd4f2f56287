"""One training run: snapshot, window, split, (tune), fit, evaluate, save, gate.

The batch layer's single entry point. It takes a ratings DataFrame, so the same run serves
``recommender train`` (Cassandra), benchmarks (a CSV) and tests; the registry alone decides
whether the result serves.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import recommender
from recommender.errors import TrainingRefused
from recommender.settings import Settings
from recommender.train import als, data, evaluate
from recommender.train.artifacts import SPARK_MODEL_DIR, ModelArtifacts
from recommender.train.registry import GateDecision, ModelRegistry

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Mode = Literal["explicit", "implicit", "both"]


@dataclass(frozen=True)
class TrainOptions:
    """Everything a run can vary; hyper-parameter defaults come from ``ModelSettings``.

    ``params`` overrides single ALS parameters (rank, reg_param, max_iter, alpha,
    nonnegative). ``mode="both"`` trains an explicit and an implicit candidate and keeps the
    one with the better gate metric.
    """

    mode: Mode | None = None
    split: data.SplitMethod = "random"
    test_fraction: float = 0.2
    last_n: int | None = None
    days: float | None = None
    tune: als.SearchMethod | None = None
    trials: int = 8
    space: als.SearchSpace = field(default_factory=als.SearchSpace)
    tune_metric: str | None = None
    k: int = 10
    relevance_threshold: float = 4.0
    max_eval_users: int = 10_000
    min_ratings: int = 100
    force: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    params: als.AlsParams
    fitted: als.Fitted
    factors: evaluate.Factors
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    tuning: als.TuneResult | None
    fit_seconds: float
    evaluate_seconds: float


@dataclass(frozen=True)
class TrainResult:
    version: str
    decision: GateDecision
    metadata: dict[str, Any]
    candidates: list[dict[str, Any]]


def run(ratings: DataFrame, settings: Settings, options: TrainOptions | None = None, *,
        source: str = "dataframe", registry: ModelRegistry | None = None,
        on_event: Callable[[str], None] = lambda _: None) -> TrainResult:
    """Train, evaluate and register one version; raises ``TrainingRefused`` (nothing written)
    when the data is too small. A gate refusal is a normal result: see ``decision``."""
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
            used = data.window(ratings, opts.last_n, opts.days).persist()
            cached.append(used)
            snap = data.snapshot(used, source, rows_total=total)
        else:
            snap = data.snapshot(ratings, source)
        timings["read_s"] = time.perf_counter() - started
        on_event(f"read {snap.rows} ratings ({snap.users} users, {snap.items} movies) "
                 f"in {timings['read_s']:.1f}s")
        data.require_enough(snap, opts.min_ratings)

        tic = time.perf_counter()
        train, test = data.split(used, opts.split, opts.test_fraction, seed)
        if opts.split == "time":  # a window sort: compute once (the hash split is a cheap filter)
            train, test = train.persist(), test.persist()
            cached += [train, test]
        holdout = evaluate.collect_holdout(train, test, opts.max_eval_users, seed, snap.users)
        if len(holdout.test_rating) == 0 or len(holdout.items) < 2:
            raise TrainingRefused(f"the {opts.split} split left no held-out ratings to "
                                  "evaluate on; no model was written")
        timings["split_s"] = time.perf_counter() - tic

        candidates = [_candidate(train, holdout, settings, opts, implicit, snap.users, on_event)
                      for implicit in _modes(opts, settings)]
        best = _pick(candidates, registry.metric_for(*(c.params.mode for c in candidates)))
        timings["fit_s"] = sum(c.fit_seconds for c in candidates)
        timings["evaluate_s"] = sum(c.evaluate_seconds for c in candidates)

        tic = time.perf_counter()
        version = registry.new_version()
        with registry.staging(version) as tmp:
            best.fitted.model.write().save(str(tmp / SPARK_MODEL_DIR))
            timings["save_s"] = time.perf_counter() - tic
            timings["total_s"] = time.perf_counter() - started
            meta = _metadata(version, best, candidates, snap, holdout, opts, timings, seed)
            meta = _artifacts(version, best, holdout).save(tmp, meta)
        decision = registry.publish(version, force=opts.force)
        on_event(f"saved {version} in {timings['save_s']:.1f}s; gate: "
                 f"{'promoted' if decision.accepted else 'refused'} ({decision.reason})")
        summary = [{"mode": c.params.mode, "params": c.params.to_dict(), "metrics": c.metrics,
                    "chosen": c is best} for c in candidates]
        return TrainResult(version, decision, meta, summary)
    finally:
        for df in reversed(cached):
            df.unpersist()
        # ALS's last checkpoint stays behind; the factors are saved, so drop this run's own.
        for path in als.checkpoint_files(ratings.sparkSession) - checkpoints_before:
            shutil.rmtree(path, ignore_errors=True)


def _modes(opts: TrainOptions, settings: Settings) -> list[bool]:
    mode = opts.mode or ("implicit" if settings.model.implicit_prefs else "explicit")
    return {"explicit": [False], "implicit": [True], "both": [False, True]}[mode]


def _candidate(train: DataFrame, holdout: evaluate.HoldOut, settings: Settings,
               opts: TrainOptions, implicit: bool, users: int,
               on_event: Callable[[str], None]) -> Candidate:
    params = als.AlsParams.from_settings(settings.model, implicit_prefs=implicit, **opts.params)
    tic = time.perf_counter()
    tuning = None
    if opts.tune:
        tuning = _tune(train, params, opts, settings, users, on_event)
        params = tuning.best
    fitted = als.fit(train, params, settings.spark.checkpoint_dir / "als")
    factors = als.factors(fitted)
    fit_s = time.perf_counter() - tic
    tic = time.perf_counter()
    results = evaluate.evaluate(holdout, factors, opts.k, opts.relevance_threshold,
                                settings.model.seed)
    metrics = results.pop("als")
    eval_s = time.perf_counter() - tic
    on_event(f"{params.mode} rank={params.rank} reg={params.reg_param} alpha={params.alpha}: "
             f"fit {fit_s:.1f}s, evaluate {eval_s:.1f}s")
    return Candidate(params, fitted, factors, metrics, results, tuning, fit_s, eval_s)


def _tune(train: DataFrame, base: als.AlsParams, opts: TrainOptions, settings: Settings,
          users: int, on_event: Callable[[str], None]) -> als.TuneResult:
    """Search on a validation split carved out of the training split (the test split stays
    untouched until the final evaluation)."""
    seed = settings.model.seed
    metric = opts.tune_metric or ("rmse" if not base.implicit_prefs else f"ndcg_at_{opts.k}")
    sub, valid = data.split(train, opts.split, opts.test_fraction, seed + 1)
    sub = sub.persist()
    try:
        valid_holdout = evaluate.collect_holdout(sub, valid, opts.max_eval_users, seed, users)

        def score(factors: evaluate.Factors) -> float:
            res = evaluate.evaluate(valid_holdout, factors, opts.k, opts.relevance_threshold,
                                    seed)["als"]
            return float(res.get(metric, np.nan))

        return als.tune(sub, score, base, opts.space, opts.tune, opts.trials,
                        evaluate.higher_is_better(metric), metric,
                        on_trial=lambda t: on_event(
                            f"  trial rank={t.params.rank} reg={t.params.reg_param} "
                            f"iter={t.params.max_iter} alpha={t.params.alpha}: "
                            f"{metric}={t.score:.4f} ({t.seconds:.1f}s)"),
                        checkpoint_dir=settings.spark.checkpoint_dir / "als")
    finally:
        sub.unpersist()


def _pick(candidates: list[Candidate], metric: str) -> Candidate:
    scored = [c for c in candidates if c.metrics.get(metric) is not None]
    if not scored:
        return candidates[0]
    key = (lambda c: c.metrics[metric]) if evaluate.higher_is_better(metric) \
        else (lambda c: -c.metrics[metric])
    return max(scored, key=key)


def _artifacts(version: str, best: Candidate, holdout: evaluate.HoldOut) -> ModelArtifacts:
    f = best.factors
    pos = np.searchsorted(holdout.items, f.item_ids).clip(0, max(len(holdout.items) - 1, 0))
    counts = np.where(holdout.items[pos] == f.item_ids, holdout.counts[pos], 0)
    params = best.params.to_dict()
    if best.params.biased:
        params["global_mean"] = best.fitted.global_mean
    return ModelArtifacts(version=version, item_ids=f.item_ids, item_factors=f.item_factors,
                          user_ids=f.user_ids, user_factors=f.user_factors, item_counts=counts,
                          params=params)


_COUNTS = ("users", "rated_pairs")


def _metadata(version: str, best: Candidate, candidates: list[Candidate], snap: data.Snapshot,
              holdout: evaluate.HoldOut, opts: TrainOptions, timings: dict[str, float],
              seed: int) -> dict[str, Any]:
    metrics = {k: v for k, v in best.metrics.items() if k not in _COUNTS}
    baselines = {name: {k: v for k, v in m.items() if k not in _COUNTS}
                 for name, m in best.baselines.items()}
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": best.params.mode,
        "data": {**snap.to_dict(), "window": {"last_n": opts.last_n, "days": opts.days}},
        "evaluation": {
            "split": opts.split, "test_fraction": opts.test_fraction, "seed": seed,
            "k": opts.k, "relevance_threshold": opts.relevance_threshold,
            "users": int(best.metrics.get("users", 0)),
            "rated_pairs": int(best.baselines.get("popularity", {}).get("rated_pairs", 0)),
            "catalogue": len(holdout.items),
        },
        "metrics": metrics,
        "baseline_metrics": baselines,
        "candidates": [{"mode": c.params.mode, "params": c.params.to_dict(),
                        "metrics": {k: v for k, v in c.metrics.items() if k not in _COUNTS}}
                       for c in candidates if c is not best],
        "tuning": best.tuning.to_dict() if best.tuning else None,
        "timings": _round(timings),
        "code_version": code_version(),
    }


def code_version() -> dict[str, str | None]:
    """``recommender.__version__`` and the git commit (``-dirty`` if modified), if any."""
    repo = Path(recommender.__file__).resolve().parents[1]
    sha = None
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip() or None
        if sha:
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            sha += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"recommender": recommender.__version__, "git_sha": sha}


def _round(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in values.items()}


