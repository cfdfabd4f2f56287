"""``recommender train`` and ``recommender models``: batch training and the model registry."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.table import Table

from recommender.cli.common import JsonOption, console, exits_cleanly, print_json
from recommender.errors import InvalidRequest, TrainingRefused
from recommender.settings import get_settings

if TYPE_CHECKING:
    from recommender.model.registry import GateDecision, ModelRegistry
    from recommender.train.pipeline import TrainOptions, TrainResult

METRICS = {"rmse": "RMSE", "rmse_scorable": "RMSE scorable", "mae": "MAE",
           "precision_at_10": "P@10", "recall_at_10": "R@10", "ndcg_at_10": "NDCG@10",
           "map_at_10": "MAP@10", "coverage": "cov"}

models = typer.Typer(help="List, inspect, promote and roll back trained model versions.",
                     no_args_is_help=True)


@exits_cleanly
def train(
    split: str = typer.Option("random", help="Held-out split: random (seeded hash of user and "
                              "movie) or time (each user's latest ratings)."),
    test_fraction: float = typer.Option(0.2, min=0.01, max=0.9),
    last_n: int = typer.Option(None, "--last-n", min=1, help="Train on the newest N ratings."),
    days: float = typer.Option(None, min=0.001, help="Train on the last N days of ratings "
                               "(counted back from the newest rating)."),
    tune: bool = typer.Option(False, "--tune", help="Search both models' hyper-parameters on "
                              "a validation split carved from the training split (ranking on "
                              "NDCG@10, rating on RMSE) before the final fit."),
    ranks: str = typer.Option("16,32", help="--tune values of rank."),
    reg_params: str = typer.Option("0.05,0.1,0.2", help="--tune values of regParam."),
    max_iters: str = typer.Option("15", help="--tune values of maxIter."),
    alphas: str = typer.Option("0.5,1,2", help="--tune values of alpha (ranking model)."),
    ranking: str = typer.Option(None, help="Override ranking-model settings, e.g. "
                                "'rank=32,alpha=2' (model.ranking.*)."),
    rating: str = typer.Option(None, help="Override rating-model settings, e.g. "
                               "'rank=64,reg_param=0.05' (model.rating.*)."),
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
    """Train a version (a ranking and a rating model), evaluate it against baselines, and
    register it.

    Reads cassandra.keyspace.ratings through the Spark Cassandra Connector and holds out
    --test-fraction. The ranking model (implicit ALS) orders every top-k list; the rating
    model (explicit ALS on regularised biases) predicts every rating. Prints both models'
    held-out figures beside the popularity and random baselines, and what the top-10 lists
    recommend (how often those movies were rated, against the catalogue's median). The
    version is promoted unless its ranking NDCG@10 or its rating RMSE is worse than
    CURRENT's by more than model.gate_tolerance (exit code 3 when refused). With
    --every/--after it keeps running and retrains on that trigger.
    """
    from recommender.train import batch
    from recommender.train.scheduler import Schedule, parse_interval, run_loop, snapshot_rows
    from recommender.vectors import publishing_registry

    settings = get_settings()
    opts = _options(split, test_fraction, last_n, days, tune, ranks, reg_params, max_iters,
                    alphas, ranking, rating, force)
    schedule = Schedule(every=parse_interval(every) if every else None, after=after,
                        poll=parse_interval(poll), max_runs=max_runs)
    write_profiles = profiles if profiles is not None else ratings_csv is None
    registry = publishing_registry(settings, _say)
    spark = batch.spark(settings)

    def once() -> None:
        result = batch.train_once(spark, settings, opts, registry, ratings_csv, write_profiles,
                                _say)
        print_json(_result_json(result)) if json else show_result(result)
        if not result.decision.accepted:
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

    runs = run_loop(schedule, once, lambda: batch.read(spark, settings, ratings_csv)[0].count(),
                    baseline, stop, on_event=_say)
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
    table = Table("status", "NDCG@10", "RMSE", "ratings", "created")
    table.add_column("version", no_wrap=True)
    for v in versions:
        style = {"current": "bold green", "refused": "red", "corrupt": "red"}.get(v.status, "")
        table.add_row(f"[{style}]{v.status}[/]" if style else v.status, _fmt(v.ndcg_at_10),
                      _fmt(v.rmse), str(v.rows or "-"), v.created_at or v.error or "-",
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
    console.print(f"[bold]{version}[/] created {meta.get('created_at')}"
                  f" code {meta.get('code_version')}", highlight=False)
    console.print(f"params: {meta.get('params')}", highlight=False)
    console.print(f"data: {data.get('rows')} of {data.get('rows_total')} ratings, "
                  f"{data.get('users')} users, {data.get('items')} movies, "
                  f"{data.get('min_event_time')} .. {data.get('max_event_time')}",
                  highlight=False)
    console.print(f"evaluation: {ev}", highlight=False)
    console.print(metrics_table({"model": meta.get("metrics") or {},
                                 **(meta.get("baseline_metrics") or {})}))
    console.print(recommended_profile(meta.get("metrics") or {}), highlight=False)


@models.command("promote")
@exits_cleanly
def promote_model(version: str, force: bool = typer.Option(False, "--force", help="Skip the "
                  "quality gate."), json: bool = JsonOption) -> None:
    """Make VERSION current, through the quality gate unless --force."""
    decision = _registry().promote(version, force=force)
    _report(decision, json)
    if not decision.accepted:
        raise TrainingRefused(f"gate refused {version}: {decision.reason}")


@models.command("rollback")
@exits_cleanly
def rollback_model(json: bool = JsonOption) -> None:
    """Serve the version that was current before this one again (per promotion history)."""
    registry = _registry()
    old = registry.current_version()
    target = registry.rollback()
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
    console.print(metrics_table({"model": meta["metrics"],
                                 **(meta.get("baseline_metrics") or {})}))
    ev, t = meta.get("evaluation") or {}, meta.get("timings") or {}
    console.print(f"{ev.get('users')} users evaluated ({ev.get('split')} split, "
                  f"relevant = rating >= {ev.get('relevance_threshold')}); timings {t}",
                  highlight=False)
    console.print(recommended_profile(meta["metrics"]), highlight=False)
    _report(result.decision, False)


def recommended_profile(metrics: dict[str, Any]) -> str:
    """What the evaluated users' top-10 lists hold: popular or obscure, well or badly rated."""
    if metrics.get("rec_median_count") is None:
        return "recommended movies: no evaluated user"
    return (f"recommended movies: median {metrics['rec_median_count']:.0f} training ratings "
            f"(catalogue median {metrics['catalogue_median_count']:.0f}), mean training "
            f"rating {metrics['rec_mean_rating']:.2f}")


def _report(decision: GateDecision, json: bool) -> None:
    if json:
        print_json(decision.to_dict())
        return
    verdict = "[bold green]promoted[/]" if decision.accepted else "[bold red]refused[/]"
    console.print(f"{decision.version}: {verdict} - {decision.reason}", highlight=False)


def _result_json(result: TrainResult) -> dict[str, Any]:
    return {"version": result.version, "decision": result.decision.to_dict(),
            "metadata": result.metadata}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


# --- plumbing ------------------------------------------------------------------------------


def _say(message: str) -> None:
    console.print(message, highlight=False)


def _registry() -> ModelRegistry:
    from recommender.vectors import publishing_registry

    return publishing_registry(get_settings(), _say)


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidRequest(f"--{name} takes comma-separated numbers, got {text!r}") from None


def _overrides(text: str | None, name: str) -> dict[str, Any]:
    """``'rank=32,alpha=2'`` as ``{"rank": 32, "alpha": 2.0}``."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise InvalidRequest(f"--{name} takes key=value pairs, got {part!r}")
        try:
            out[key.strip()] = int(value) if value.strip().isdigit() else float(value)
        except ValueError:
            raise InvalidRequest(f"--{name}: {key} must be a number, got {value!r}") from None
    return out


def _options(split: str, test_fraction: float, last_n: int | None, days: float | None,
             tune: bool, ranks: str, reg_params: str, max_iters: str, alphas: str,
             ranking: str | None, rating: str | None, force: bool) -> TrainOptions:
    from recommender.settings import RankingSettings, RatingSettings
    from recommender.train.als import SearchSpace
    from recommender.train.pipeline import TrainOptions

    if split not in ("random", "time"):
        raise InvalidRequest(f"--split must be one of random, time, got {split!r}")
    space = SearchSpace(rank=[int(v) for v in _floats(ranks, "ranks")],
                        reg_param=_floats(reg_params, "reg-params"),
                        max_iter=[int(v) for v in _floats(max_iters, "max-iters")],
                        alpha=_floats(alphas, "alphas"))
    overrides = {}
    for name, text, model in (("ranking", ranking, RankingSettings),
                              ("rating", rating, RatingSettings)):
        overrides[name] = _overrides(text, name)
        unknown = set(overrides[name]) - set(model.model_fields)
        if unknown:
            raise InvalidRequest(f"--{name}: unknown setting(s) {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(model.model_fields)}")
    return TrainOptions(split=cast(Any, split), test_fraction=test_fraction, last_n=last_n,
                        days=days, tune=tune, space=space, force=force, **overrides)
