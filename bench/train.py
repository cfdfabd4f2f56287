"""Training: the product's default ``recommender train`` (``train.pipeline.run`` with
``TrainOptions()``) on ml-latest-small read from Cassandra, its held-out figures beside
references fitted and scored on the same split, candidates and evaluator; in the full run
also the wall time of the same on 1,000,000 synthetic ratings.

* The split is the pipeline's: a seeded hash picks 20 % of the (user, movie) pairs; the
  defaults were chosen on validation splits carved from the other 80 % (``bench/tune``), so
  no choice looked at these rows.
* Ranking: NDCG@10 and friends over every held-out user with a relevant movie (rating >= 4),
  candidates = every training movie the user did not rate in training. The references:
  EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019: the
  closed form ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``, binary ``X``; λ picked on the
  same validation split the defaults were), the ``implicit`` library's CPU ALS at the
  ranking model's rank, regularisation, alpha and iterations, and popularity (most-rated
  movies).
* Rating: RMSE/MAE over every held-out pair, pairs the model cannot score answered with the
  biases as serving does; the scorable-only figure beside it.
* A/B: ``recommender simulate ab`` with the trained version as CURRENT (all users, default
  rules): liked movies per session of the model, popularity and random, with 95% intervals.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from bench.common import Clock, envelope, log, table, target, workspace
from bench.fixtures import ML_SMALL, ml_small_keyspace, synthetic_keyspace
from bench.monitor import RssMonitor
from recommender.settings import Settings

TARGET_RMSE = 0.85
TARGET_VS_EASE = 0.95
TARGET_VS_POPULARITY = 1.5
TARGET_1M_S = 60.0
SYNTHETIC_ROWS = 1_000_000
EASE_LAMBDAS = (100.0, 300.0, 1000.0)
K = 10
NDCG = f"ndcg_at_{K}"
RANKING_METRICS = (f"precision_at_{K}", f"recall_at_{K}", NDCG, f"map_at_{K}", "coverage",
                   "rec_median_count", "rec_mean_rating")
RATING_METRICS = ("rmse", "mae", "rmse_scorable", "mae_scorable", "rated_pairs",
                  "scorable_pairs")


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    bench_run = workspace(settings)
    clock = Clock()
    source = ml_small_keyspace(bench_run)
    private = bench_run.settings("train", cassandra={"keyspace": source.cassandra.keyspace})
    with RssMonitor() as rss:
        rss.track("bench process (driver, Spark JVM, Python workers)", os.getpid())
        rss.track_stack(private)
        small = train_once(bench_run, private)
        refs = references(bench_run, private, small["metadata"])
        ab = simulate_ab(bench_run, private)
        big = None
        if not quick:
            synthetic = synthetic_keyspace(bench_run, SYNTHETIC_ROWS)
            big = train_once(bench_run, bench_run.settings(
                "train1m", cassandra={"keyspace": synthetic.cassandra.keyspace}))
    bench_run.shared.setdefault("model", (private, small["version"]))
    meta = small["metadata"]
    metrics, baselines = meta["metrics"], meta["baseline_metrics"]
    ratios = {name: _ratio(metrics.get(NDCG), ref["metrics"].get(NDCG))
              for name, ref in {**{r["model"]: r for r in refs},
                                "popularity": {"metrics": baselines["popularity"]}}.items()}
    reward = {p["name"]: p["liked"] for p in ab["policies"]}
    targets = [
        target("A/B: model's liked-per-session interval above popularity's (low - high)",
               round(reward["model"]["low"] - reward["popularity"]["high"], 4), 0.0, ">=",
               note=f"model {reward['model']}, popularity {reward['popularity']}"),
        target(f"ranking model NDCG@{K} / EASE^R's (same run)", ratios["EASE^R"],
               TARGET_VS_EASE, ">="),
        target(f"ranking model NDCG@{K} / popularity's (same run)", ratios["popularity"],
               TARGET_VS_POPULARITY, ">="),
        target(f"rating model RMSE over all held-out pairs ({ML_SMALL})", metrics.get("rmse"),
               TARGET_RMSE, "<="),
        target(f"full train on {SYNTHETIC_ROWS:,} synthetic ratings (wall)",
               None if big is None else big["wall_s"], TARGET_1M_S, "<=", "s",
               note=None if big else "measured by the full run only"),
    ]
    return envelope(
        "train", private, quick, clock,
        dataset={"name": ML_SMALL, **{k: meta["data"].get(k) for k in ("rows", "users", "items")},
                 **({"synthetic_rows": big["metadata"]["data"].get("rows")} if big else {})},
        config={"params": meta["params"], "evaluation": meta["evaluation"],
                "ease_lambdas": list(EASE_LAMBDAS)},
        metrics={"ml_small": {"wall_s": small["wall_s"], "timings": meta["timings"],
                              "metrics": metrics, "baselines": baselines,
                              "version": small["version"]},
                 "references": refs, "ndcg_ratios": ratios, "ab": ab,
                 "synthetic_1m": None if big is None else {
                     "wall_s": big["wall_s"], "timings": big["metadata"]["timings"],
                     "metrics": big["metadata"]["metrics"], "data": big["metadata"]["data"]}},
        targets=targets, tables=[*_tables(small, refs, ratios, big), _ab_table(ab)], rss=rss,
        notes=["Wall time starts at the Cassandra read (the Spark session is already up) and "
               "ends when the version is registered.",
               "`implicit` uses all cores (its own threads, BLAS pinned to one thread); Spark "
               f"runs with master {private.spark.master}. EASE^R is numpy (one {len(EASE_LAMBDAS)}"
               "-value search of λ on the validation split, then one fit)."],
    )


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else round(value / reference, 4)


def _tables(small: dict[str, Any], refs: list[dict[str, Any]], ratios: dict[str, Any],
            big: dict[str, Any] | None) -> list[dict[str, Any]]:
    meta = small["metadata"]
    metrics, baselines = meta["metrics"], meta["baseline_metrics"]
    ranking = [["ranking model (Spark implicit ALS)", meta["timings"].get("fit_s"),
                *[metrics.get(m) for m in RANKING_METRICS], 1.0]]
    ranking += [[f"baseline: {name}", None, *[values.get(m) for m in RANKING_METRICS],
                 _ratio(metrics.get(NDCG), values.get(NDCG))]
                for name, values in baselines.items()]
    ranking += [[r["model"], r["fit_s"], *[r["metrics"].get(m) for m in RANKING_METRICS],
                 ratios[r["model"]]] for r in refs]
    rating = [["rating model (Spark explicit ALS on bias residuals)",
               *[metrics.get(m) for m in RATING_METRICS]]]
    rating += [[f"baseline: {name}", *[values.get(m) for m in RATING_METRICS]]
               for name, values in baselines.items()]
    steps = ("read", "split", "fit", "evaluate", "save", "total")
    timings = [[name, meta["timings"].get(f"{name}_s")] for name in steps]
    timings.append(["wall (pipeline.run, incl. gate and promotion)", small["wall_s"]])
    out = [table(f"{ML_SMALL}: top-{K} lists on the held-out split (relevant = rating >= 4)",
                 ["model", "fit s", *RANKING_METRICS, f"model's NDCG@{K} / this"], ranking),
           table(f"{ML_SMALL}: predicted ratings on the held-out split",
                 ["model", *RATING_METRICS], rating),
           table(f"{ML_SMALL}: pipeline timings (s)", ["step", "seconds"], timings)]
    if big is not None:
        t = big["metadata"]["timings"]
        out.append(table(f"synthetic {SYNTHETIC_ROWS:,} ratings: pipeline timings (s)",
                         ["step", "seconds"],
                         [*[[n, t.get(f"{n}_s")] for n in steps],
                          ["wall (pipeline.run)", big["wall_s"]]]))
    return out


def simulate_ab(bench_run: Any, settings: Settings) -> dict[str, Any]:
    """``simulate ab`` on the version just trained (CURRENT of the private registry)."""
    from recommender.simulate import ab

    report = ab.run(bench_run.spark(), settings, ab.Options(max_users=100_000))
    out = {"version": report.current_version, "users": report.users,
           "ci_method": report.ci_method, "policies": []}
    for p in report.policies:
        out["policies"].append({"name": p.name, **{metric: {
            "mean": _round(e.mean), "low": _round(e.low), "high": _round(e.high)}
            for metric, e in p.metrics.items()}})
    log("A/B liked per session: " + ", ".join(
        f"{p['name']} {p['liked']['mean']} [{p['liked']['low']}, {p['liked']['high']}]"
        for p in out["policies"]))
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ab_table(ab: dict[str, Any]) -> dict[str, Any]:
    metrics = ("liked", "hit_rate", "mean_rating", "length")
    rows = [[p["name"], *[f"{p[m]['mean']} [{p[m]['low']}, {p[m]['high']}]" for m in metrics]]
            for p in ab["policies"]]
    return table(f"{ML_SMALL}: simulate ab on {ab['users']} users ({ab['ci_method']})",
                 ["policy", *metrics], rows)


def train_once(bench_run: Any, settings: Settings) -> dict[str, Any]:
    """One default ``pipeline.run`` from Cassandra into the settings' private registry."""
    from recommender.model import snapshot
    from recommender.model.registry import ModelRegistry
    from recommender.train import pipeline

    spark = bench_run.spark()
    log(f"training from {settings.cassandra.keyspace}")
    started = time.perf_counter()
    ratings = snapshot.read_cassandra(spark, settings.cassandra.keyspace)
    result = pipeline.run(ratings, settings, pipeline.TrainOptions(), source="cassandra",
                          registry=ModelRegistry.from_settings(settings.model), on_event=log)
    wall = round(time.perf_counter() - started, 2)
    log(f"trained {result.version} in {wall:.1f}s: ndcg@10 {result.metrics.get(NDCG)}, "
        f"rmse {result.metrics.get('rmse')}")
    return {"version": result.version, "wall_s": wall, "metadata": result.metadata}


def references(bench_run: Any, settings: Settings, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """EASE^R and ``implicit``'s ALS, fitted on the pipeline's training split and scored on
    its held-out rows with its evaluator."""
    from recommender.model import snapshot
    from recommender.train import evaluate, pipeline

    opts = pipeline.TrainOptions()
    seed, users = meta["evaluation"]["seed"], meta["data"]["users"]
    ranking = meta["params"]["ranking"]
    ratings = snapshot.read_cassandra(bench_run.spark(), settings.cassandra.keyspace).persist()
    try:
        train, test = snapshot.split(ratings, opts.split, opts.test_fraction, seed)
        holdout = evaluate.collect_holdout(train, test, opts.max_eval_users, seed, users)
        lam, search = ease_lambda(train, opts, seed, users)
        frame = train.select("user_id", "movie_id", "rating").toPandas()
    finally:
        ratings.unpersist()
    started = time.perf_counter()
    ease = fit_ease(frame, lam)
    out = [{"model": "EASE^R", "params": {"lambda": lam, "validation_ndcg": search},
            "fit_s": round(time.perf_counter() - started, 2),
            "metrics": _ranking(evaluate.evaluate(holdout, ease, K, opts.relevance_threshold,
                                                  seed))},
           fit_implicit(frame, holdout, ranking, seed, opts.relevance_threshold)]
    log("references: " + ", ".join(f"{r['model']} ndcg@10 {r['metrics'].get(NDCG)}"
                                   for r in out))
    return out


def ease_lambda(train: Any, opts: Any, seed: int, users: int) -> tuple[float, dict[str, float]]:
    """EASE^R's λ, chosen the way the product's defaults were: on the validation split
    carved from the training split (the held-out rows are not looked at)."""
    from recommender.train import evaluate, pipeline

    sub, valid = pipeline.validation_split(train, opts, seed, users)
    try:
        frame = sub.select("user_id", "movie_id", "rating").toPandas()
    finally:
        sub.unpersist()
    scores = {}
    for lam in EASE_LAMBDAS:
        result = evaluate.evaluate(valid, fit_ease(frame, lam), K, opts.relevance_threshold, seed)
        scores[str(lam)] = round(result["als"][NDCG], 4)
        log(f"  EASE^R λ={lam:g}: validation ndcg@10 {scores[str(lam)]}")
    return float(max(scores, key=scores.get)), scores


def fit_ease(frame: Any, lam: float) -> Any:
    """EASE^R on the binary user x movie matrix, as ``evaluate.Factors``: user "factors" are
    the users' rows of X and item "factors" the columns of B, so the evaluator's
    ``users @ items.T`` is X B."""
    from recommender.train import evaluate

    users, u_idx = np.unique(frame["user_id"].to_numpy(np.int64), return_inverse=True)
    items, i_idx = np.unique(frame["movie_id"].to_numpy(np.int64), return_inverse=True)
    x = np.zeros((len(users), len(items)), np.float32)
    x[u_idx, i_idx] = 1.0
    gram = (x.T @ x).astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = (-p / np.diag(p)).astype(np.float32)
    b[np.diag_indices_from(b)] = 0.0
    return evaluate.Factors(user_ids=users, user_factors=x, item_ids=items,
                            item_factors=np.ascontiguousarray(b.T), implicit=True)


def fit_implicit(frame: Any, holdout: Any, params: dict[str, Any], seed: int,
                 threshold: float) -> dict[str, Any]:
    """The ``implicit`` library's ALS with the ranking model's hyper-parameters (confidence
    ``1 + alpha x rating``, as Spark)."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recommender.train import evaluate

    users, u_idx = np.unique(frame["user_id"].to_numpy(np.int64), return_inverse=True)
    items, i_idx = np.unique(frame["movie_id"].to_numpy(np.int64), return_inverse=True)
    matrix = sp.csr_matrix((frame["rating"].to_numpy(np.float32), (u_idx, i_idx)),
                           shape=(len(users), len(items)))
    with threadpool_limits(1, "blas"):  # implicit's own threads do the work
        model = AlternatingLeastSquares(factors=params["rank"],
                                        regularization=params["reg_param"],
                                        iterations=params["max_iter"], alpha=params["alpha"],
                                        random_state=seed)
        started = time.perf_counter()
        model.fit(matrix, show_progress=False)
        fit_s = time.perf_counter() - started
    factors = evaluate.Factors(user_ids=users, user_factors=np.asarray(model.user_factors),
                               item_ids=items, item_factors=np.asarray(model.item_factors),
                               implicit=True)
    return {"model": f"implicit (CPU ALS, rank {params['rank']})",
            "params": {k: params[k] for k in ("rank", "reg_param", "alpha", "max_iter")},
            "fit_s": round(fit_s, 3),
            "metrics": _ranking(evaluate.evaluate(holdout, factors, K, threshold, seed))}


def _ranking(result: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: v for k, v in result["als"].items() if k in RANKING_METRICS}


if __name__ == "__main__":
    from bench.run_all import run_one

    run_one("train")
