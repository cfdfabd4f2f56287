"""``recommender train`` and ``recommender models``: batch training and the model registry."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.table import Table

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.contracts import USER_TASTE_INDEX
from recommender.errors import InvalidRequest, TrainingRefused
from recommender.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from recommender.train.pipeline import TrainOptions, TrainResult
    from recommender.train.registry import GateDecision, ModelRegistry

METRICS = {"rmse": "RMSE", "mae": "MAE", "precision_at_10": "P@10", "recall_at_10": "R@10",
           "ndcg_at_10": "NDCG@10", "map_at_10": "MAP@10", "coverage": "cov"}

models = typer.Typer(help="List, inspect, promote and roll back trained model versions.",
                     no_args_is_help=True)


@exits_cleanly
def train(
    mode: str = typer.Option(None, help="explicit, implicit, or both (keeps the better one on "
                             "the gate metric). Default: model.implicit_prefs."),
    split: str = typer.Option("random", help="Held-out split: random (seeded hash of user and "
                              "movie) or time (each user's latest ratings)."),
    test_fraction: float = typer.Option(0.2, min=0.01, max=0.9),
    last_n: int = typer.Option(None, "--last-n", min=1, help="Train on the newest N ratings."),
    days: float = typer.Option(None, min=0.001, help="Train on the last N days of ratings "
                               "(counted back from the newest rating)."),
    tune: str = typer.Option(None, help="Search hyper-parameters on a validation split: grid "
                             "or random."),
    trials: int = typer.Option(8, min=1, help="Candidates tried by --tune random."),
    ranks: str = typer.Option("10,20", help="--tune values of rank."),
    reg_params: str = typer.Option("0.05,0.1,0.15,0.2", help="--tune values of regParam."),
    max_iters: str = typer.Option("10", help="--tune values of maxIter."),
    alphas: str = typer.Option("0.5,1,5", help="--tune values of alpha (implicit only)."),
    rank: int = typer.Option(None, min=1, help="Override model.rank."),
    reg_param: float = typer.Option(None, min=0.0, help="Override model.reg_param."),
    max_iter: int = typer.Option(None, min=1, help="Override model.max_iter."),
    alpha: float = typer.Option(None, min=0.0, help="Override model.alpha."),
    force: bool = typer.Option(False, "--force", help="Promote even if the gate refuses."),
    every: str = typer.Option(None, help="Retrain on a schedule, e.g. 1h, 30m, 1d."),
    after: int = typer.Option(None, min=1, help="Retrain once N new ratings arrived since the "
                              "current model (polls every --poll; with --every, checks per tick)."),
    poll: str = typer.Option("60s", help="How often --after counts ratings."),
    max_runs: int = typer.Option(None, min=1, help="Stop the --every/--after loop after N runs."),
    ratings_csv: Path = typer.Option(None, "--ratings-csv", help="Train from a MovieLens "
                                     "ratings.csv instead of Cassandra (development, benchmarks)."),
    profiles: bool = typer.Option(None, "--profiles/--no-profiles", help="Write user_taste and "
                                  "similar_users to Cassandra (and user-taste to "
                                  "Elasticsearch) after a promotion (default: on when "
                                  "training from Cassandra)."),
    json: bool = JsonOption,
) -> None:
    """Train ALS on the ratings, evaluate it against baselines, and register a new version.

    Reads cassandra.keyspace.ratings through the Spark Cassandra Connector, holds out
    --test-fraction, prints RMSE/MAE and ranking metrics for the model and for the popularity
    and random baselines, saves the version under model.models_dir and promotes it if it is
    not worse than CURRENT on model.gate_metric by more than model.gate_tolerance (exit code 3
    when refused). With --every/--after it keeps running and retrains on that trigger.
    """
    from recommender.train.registry import ModelRegistry
    from recommender.train.scheduler import Schedule, parse_interval, run_loop, snapshot_rows

    settings = get_settings()
    opts = _options(mode, split, test_fraction, last_n, days, tune, trials, ranks, reg_params,
                    max_iters, alphas, rank, reg_param, max_iter, alpha, force)
    schedule = Schedule(every=parse_interval(every) if every else None, after=after,
                        poll=parse_interval(poll), max_runs=max_runs)
    write_profiles = profiles if profiles is not None else ratings_csv is None
    registry = ModelRegistry.from_settings(settings.model)
    spark = _spark(settings)

    def once() -> None:
        result = _train_once(spark, settings, opts, registry, ratings_csv, write_profiles)
        print_json(_result_json(result)) if json else show_result(result)
        if result.decision.accepted:
            publish_vectors(result.version)
        else:
            raise TrainingRefused(f"gate refused {result.version}: {result.decision.reason} "
                                  "(kept on disk; `recommender models promote "
                                  f"{result.version} --force` serves it anyway)")

    if schedule.every is None and schedule.after is None:
        once()
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def baseline() -> int:
        current = registry.current_version()
        return snapshot_rows(registry.metadata(current)) if current else 0

    runs = run_loop(schedule, once, lambda: _read(spark, settings, ratings_csv)[0].count(),
                    baseline, stop, on_event=lambda m: console.print(m, highlight=False))
    console.print(f"scheduler stopped after {runs} training run(s)")


@models.command("list")
@exits_cleanly
def list_models(json: bool = JsonOption) -> None:
    """Every version on disk with its status (current, previous, refused ...) and gate metric."""
    registry = _registry()
    versions = registry.versions()
    if json:
        print_json(versions)
        return
    table = Table("status", "mode", registry.gate_metric, "ratings", "created")
    table.add_column("version", no_wrap=True)
    for v in versions:
        style = {"current": "bold green", "refused": "red", "corrupt": "red"}.get(v.status, "")
        table.add_row(f"[{style}]{v.status}[/]" if style else v.status, v.mode or "-",
                      _fmt(v.metric), str(v.rows or "-"), v.created_at or v.error or "-",
                      v.version)
    console.print(table)


@models.command("show")
@exits_cleanly
def show_model(version: str = typer.Argument(None, help="Default: CURRENT."),
               json: bool = JsonOption) -> None:
    """A version's metadata: params, data snapshot, metrics vs baselines, code version."""
    registry = _registry()
    version = version or registry.current_version()
    if version is None:
        raise InvalidRequest("no model is promoted yet; name a version")
    meta = registry.metadata(version)
    if json:
        print_json(meta)
        return
    data, ev = meta.get("data") or {}, meta.get("evaluation") or {}
    console.print(f"[bold]{version}[/] {meta.get('mode', '')} created {meta.get('created_at')}"
                  f" code {meta.get('code_version')}", highlight=False)
    console.print(f"params: {meta.get('params')}", highlight=False)
    console.print(f"data: {data.get('rows')} of {data.get('rows_total')} ratings, "
                  f"{data.get('users')} users, {data.get('items')} movies, "
                  f"{data.get('min_event_time')} .. {data.get('max_event_time')}",
                  highlight=False)
    console.print(f"evaluation: {ev}", highlight=False)
    rows = {f"als-{meta.get('mode', '')}": meta.get("metrics") or {}}
    rows.update({f"alt-{c['mode']}": c["metrics"]
                 for c in meta.get("candidates") or []})
    console.print(metrics_table({**rows, **(meta.get("baseline_metrics") or {})}))


@models.command("promote")
@exits_cleanly
def promote_model(version: str, force: bool = typer.Option(False, "--force", help="Skip the "
                  "quality gate."), json: bool = JsonOption) -> None:
    """Make VERSION current, through the quality gate unless --force."""
    decision = _registry().promote(version, force=force)
    _report(decision, json)
    if not decision.accepted:
        raise TrainingRefused(f"gate refused {version}: {decision.reason}")
    publish_vectors(version)


@models.command("rollback")
@exits_cleanly
def rollback_model(json: bool = JsonOption) -> None:
    """Serve the version that was current before this one again (per promotion history)."""
    registry = _registry()
    old = registry.current_version()
    target = registry.rollback()
    publish_vectors(target)
    print_json({"current": target, "rolled_back": old}) if json else \
        console.print(f"rolled back from {old} to [bold]{target}[/]", highlight=False)


@models.command("prune")
@exits_cleanly
def prune_models(json: bool = JsonOption) -> None:
    """Delete versions beyond model.retention (CURRENT and the previous one always stay)."""
    removed = _registry().prune()
    print_json({"removed": removed}) if json else console.print(
        f"removed {len(removed)} version(s) {' '.join(removed)}", highlight=False)


# --- presentation --------------------------------------------------------------------------


def metrics_table(rows: dict[str, dict[str, Any]]) -> Table:
    table = Table()
    table.add_column("model", no_wrap=True)
    for label in METRICS.values():
        table.add_column(label, no_wrap=True)
    for name, metrics in rows.items():
        table.add_row(name, *(_fmt(metrics.get(m)) for m in METRICS))
    return table


def show_result(result: TrainResult) -> None:
    meta = result.metadata
    rows: dict[str, dict[str, Any]] = {}
    for cand in result.candidates:
        rows[f"{'als' if cand['chosen'] else 'alt'}-{cand['mode']}"] = cand["metrics"]
    rows.update(meta.get("baseline_metrics") or {})
    console.print(metrics_table(rows))
    ev, t = meta.get("evaluation") or {}, meta.get("timings") or {}
    console.print(f"{ev.get('users')} users evaluated ({ev.get('split')} split, "
                  f"relevant = rating >= {ev.get('relevance_threshold')}); timings {t}",
                  highlight=False)
    _report(result.decision, False)


def _report(decision: GateDecision, json: bool) -> None:
    if json:
        print_json(decision.to_dict())
        return
    verdict = "[bold green]promoted[/]" if decision.accepted else "[bold red]refused[/]"
    console.print(f"{decision.version}: {verdict} - {decision.reason}", highlight=False)


def _result_json(result: TrainResult) -> dict[str, Any]:
    return {"version": result.version, "decision": result.decision.to_dict(),
            "candidates": result.candidates, "metadata": result.metadata}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


# --- plumbing ------------------------------------------------------------------------------


def publish_vectors(version: str) -> None:
    from recommender.vectors import publish_after_promotion

    publish_after_promotion(get_settings(), version, lambda m: console.print(m, highlight=False))


def _registry() -> ModelRegistry:
    from recommender.train.registry import ModelRegistry

    return ModelRegistry.from_settings(get_settings().model)


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidRequest(f"--{name} takes comma-separated numbers, got {text!r}") from None


def _options(mode: str | None, split: str, test_fraction: float, last_n: int | None,
             days: float | None, tune: str | None, trials: int, ranks: str, reg_params: str,
             max_iters: str, alphas: str, rank: int | None, reg_param: float | None,
             max_iter: int | None, alpha: float | None, force: bool) -> TrainOptions:
    from recommender.train.als import SearchSpace
    from recommender.train.pipeline import TrainOptions

    for value, allowed, flag in ((mode, ("explicit", "implicit", "both"), "mode"),
                                 (split, ("random", "time"), "split"),
                                 (tune, ("grid", "random"), "tune")):
        if value is not None and value not in allowed:
            raise InvalidRequest(f"--{flag} must be one of {', '.join(allowed)}, got {value!r}")
    space = SearchSpace(rank=[int(v) for v in _floats(ranks, "ranks")],
                        reg_param=_floats(reg_params, "reg-params"),
                        max_iter=[int(v) for v in _floats(max_iters, "max-iters")],
                        alpha=_floats(alphas, "alphas"))
    overrides = {"rank": rank, "reg_param": reg_param, "max_iter": max_iter, "alpha": alpha}
    return TrainOptions(mode=cast(Any, mode), split=cast(Any, split),
                        test_fraction=test_fraction, last_n=last_n, days=days,
                        tune=cast(Any, tune), trials=trials, space=space, force=force,
                        params={k: v for k, v in overrides.items() if v is not None})


def _spark(settings: Settings) -> SparkSession:
    from recommender.clients import spark_session

    return spark_session(settings, app_name="recommender-train")


def _read(spark: SparkSession, settings: Settings,
          ratings_csv: Path | None) -> tuple[DataFrame, str]:
    from recommender.train import data

    if ratings_csv is not None:
        return data.read_csv(spark, ratings_csv), f"csv:{ratings_csv}"
    ks = settings.cassandra.keyspace
    return data.read_cassandra(spark, ks), f"cassandra:{ks}.ratings"


def _train_once(spark: SparkSession, settings: Settings, opts: TrainOptions,
                registry: ModelRegistry, ratings_csv: Path | None,
                write_profiles: bool) -> TrainResult:
    from recommender.train import pipeline
    from recommender.train import profiles as prof

    ratings, source = _read(spark, settings, ratings_csv)
    ratings = ratings.persist()  # read once: training and then the profiles use it
    try:
        result = pipeline.run(ratings, settings, opts, source=source, registry=registry,
                              on_event=lambda m: console.print(m, highlight=False))
        if result.decision.accepted and write_profiles:
            if ratings_csv is not None:
                movies = prof.read_movies_csv(spark, ratings_csv.parent / "movies.csv")
            else:
                movies = prof.read_movies_cassandra(spark, settings.cassandra.keyspace)
            started = time.perf_counter()
            stats = prof.build(ratings, movies, registry.load(result.version), settings)
            console.print(f"profiles: {stats.taste_rows} user_taste rows, "
                          f"{stats.similar_rows} similar_users rows in "
                          f"{settings.cassandra.keyspace}, {stats.taste_documents} "
                          f"{USER_TASTE_INDEX} documents "
                          f"({time.perf_counter() - started:.1f}s)", highlight=False)
        return result
    finally:
        ratings.unpersist()
