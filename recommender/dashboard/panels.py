"""Every BI panel, defined once: what it shows, which index and fields it reads, and how.

The built-in dashboard (``routes``), the Kibana saved objects (``kibana_objects`` builds
``kibana_dashboards/*.ndjson`` from these), the ``report`` and the tests all read this module,
so the two dashboards cannot drift apart silently: ``kibana_check.signature`` compares each
Kibana visualization with the panel of the same id.

A panel is a tiny aggregation tree: bucket levels from outer to inner (the first is the x
axis or the rows, the second an optional split), and metrics computed in the innermost
bucket. ``aggs`` turns it into an Elasticsearch request and the response into series.

>>> [p.id for p in dashboard_panels("users")]
['taste_score_distribution', 'neighbour_genres']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from recommender import contracts

Chart = Literal["line", "bar", "hbar", "pie", "table", "area_share", "bar_share"]


@dataclass(frozen=True)
class Source:
    """An index pattern as Kibana sees it: a data view with a stable id and a time field."""

    data_view_id: str
    name: str
    pattern: str
    time_field: str | None


# Patterns of the default (unprefixed) names, as Kibana's data views hold them; readers put
# ``elasticsearch.index_prefix`` in front.
_NAMES = contracts.IndexNames()
RATINGS = Source("recommender-ratings", "Ratings", f"{_NAMES.ratings_prefix}*", "event_time")
PREDICTIONS = Source("recommender-predictions", "Predictions",
                     f"{_NAMES.predictions_prefix}*", "predicted_at")
USER_TASTE = Source("recommender-user-taste", "User taste", _NAMES.user_taste, None)
SOURCES = (RATINGS, PREDICTIONS, USER_TASTE)


@dataclass(frozen=True)
class DateHistogram:
    """Time buckets. ``interval`` is ``<n><unit>`` with unit m, h, d, w, M or y; ``fill_gaps``
    returns empty buckets across the whole window (minutes with no predictions are zeros)."""

    field: str
    interval: str
    fill_gaps: bool = False


@dataclass(frozen=True)
class Terms:
    """Top values. ``order`` is by document count, by key, or by the panel's first metric.

    ``min_doc_count`` > 1 keeps only values with that many documents (a minimum vote count);
    Lens cannot express it, so such a panel becomes a classic Kibana visualization.
    ``shard_size`` widens what each shard considers, which ordering by a metric together
    with a minimum count needs to be exact across the yearly ratings indices.
    """

    field: str
    size: int
    order: Literal["count", "key", "metric"] = "count"
    direction: Literal["asc", "desc"] = "desc"
    min_doc_count: int = 1
    other: bool = False
    shard_size: int | None = None


@dataclass(frozen=True)
class Histogram:
    """Numeric buckets of equal width; the width comes from the field's min/max (a first
    ``stats`` request), because the scale of e.g. taste scores is the producer's choice."""

    field: str
    bins: int = 20


Bucket = DateHistogram | Terms | Histogram


@dataclass(frozen=True)
class Metric:
    """``count`` (no field), ``avg``, ``percentile`` (``percent`` set) or ``unique_count``."""

    op: Literal["count", "avg", "percentile", "unique_count"]
    field: str | None = None
    percent: float | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or (self.op if self.field is None else f"{self.op} of {self.field}")


COUNT = Metric("count", label="Count")


@dataclass(frozen=True)
class Dashboard:
    """A group of panels with one time range (Kibana's ``timeFrom``, the page's window)."""

    id: str
    title: str
    description: str
    time_from: str | None  # Kibana relative time "now-<n><unit>"; None: no time field
    refresh_s: int = 30

    @property
    def window_ms(self) -> int | None:
        return None if self.time_from is None else relative_ms(self.time_from)


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    dashboard: str
    source: Source
    chart: Chart
    buckets: tuple[Bucket, ...]
    metrics: tuple[Metric, ...]
    description: str = ""
    unit: str = ""

    @property
    def time_field(self) -> str | None:
        """The field the time window applies to: the x axis's when it is a time axis (the
        report counts ratings by ``ingested_at``), else the data view's time field."""
        for b in self.buckets:
            if isinstance(b, DateHistogram):
                return b.field
        return self.source.time_field

    @property
    def fields(self) -> list[str]:
        """Every field the panel reads (time field included): what must exist in ES."""
        names = [b.field for b in self.buckets] + [m.field for m in self.metrics if m.field]
        if self.source.time_field:
            names.insert(0, self.source.time_field)
        return list(dict.fromkeys(names))


_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "M": 2_592_000_000, "y": 31_536_000_000}


def relative_ms(expr: str) -> int:
    """``"now-1h"`` -> 3 600 000 (months as 30 days, years as 365: only window sizes)."""
    match = re.fullmatch(r"now-(\d+)([smhdwMy])", expr)
    if not match:
        raise ValueError(f"expected now-<n><unit>, got {expr!r}")
    return int(match[1]) * _UNITS_MS[match[2]]


DASHBOARDS = (
    Dashboard("ratings", "Ratings", "What MovieLens users rate, and how, by event time "
              "(the ratings-YYYY indices).", "now-40y", refresh_s=60),
    Dashboard("predictions", "Predictions", "What the streaming predictor answers, how fast, "
              "and with which model (the daily predictions-YYYY.MM.DD indices).", "now-1h",
              refresh_s=15),
    Dashboard("users", "Users", "Genre taste profiles and 'users like you' (user-taste, "
              "which has no time field: all documents).", None, refresh_s=60),
)

_DAY = DateHistogram("event_time", "1d")
_MINUTE = DateHistogram("predicted_at", "1m", fill_gaps=True)

PANELS: tuple[Panel, ...] = (
    Panel("ratings_per_day", "Ratings per day", "ratings", RATINGS, "line", (_DAY,), (COUNT,),
          "Ratings by the day they were given (event time)."),
    Panel("average_rating", "Average rating over time", "ratings", RATINGS, "line",
          (DateHistogram("event_time", "1M"),), (Metric("avg", "rating", label="Average"),),
          "Monthly mean of the 0.5-5 star ratings.", unit="stars"),
    Panel("genre_share", "Genre popularity over time", "ratings", RATINGS, "area_share",
          (DateHistogram("event_time", "1y"), Terms("genres", 8, other=True)), (COUNT,),
          "Each genre's share of the genre labels of the year's ratings (a rating of a "
          "Comedy|Drama counts for both); the top 8 genres, the rest as Other."),
    Panel("top_movies_by_count", "Most rated movies", "ratings", RATINGS, "hbar",
          (Terms("title.keyword", 10),), (COUNT,), "Movies with the most ratings."),
    Panel("top_movies_by_rating", "Best rated movies (at least 50 ratings)", "ratings", RATINGS,
          "table", (Terms("title.keyword", 10, order="metric", min_doc_count=50,
                          shard_size=20_000),),
          (Metric("avg", "rating", label="Average rating"), Metric("count", label="Ratings")),
          "Highest mean rating among movies with at least 50 ratings."),
    Panel("rating_distribution", "Rating distribution", "ratings", RATINGS, "bar",
          (Terms("rating", 10, order="key", direction="asc"),), (COUNT,),
          "How many ratings gave each number of stars."),
    Panel("top_predicted_movies", "Top predicted movies", "predictions", PREDICTIONS, "hbar",
          (Terms("title.keyword", 10),), (COUNT,),
          "Movies that appear most often in predictions."),
    Panel("predictions_per_minute", "Predictions per minute", "predictions", PREDICTIONS,
          "line", (_MINUTE,), (COUNT,), "Prediction records indexed per minute of "
          "prediction time (a top-k request gives one per ranked movie)."),
    Panel("latency_percentiles", "Request to prediction latency", "predictions", PREDICTIONS,
          "line", (_MINUTE,),
          tuple(Metric("percentile", "latency_ms", p, f"p{p:g}") for p in (50.0, 95.0, 99.0)),
          "Percentiles of latency_ms (request time to the prediction record) per minute.",
          unit="ms"),
    Panel("strategy_breakdown", "Strategy", "predictions", PREDICTIONS, "pie",
          (Terms("strategy", 5),), (COUNT,),
          "als: known user; fold-in: user folded in from recent ratings; popular: fallback."),
    Panel("model_version_share", "Model versions", "predictions", PREDICTIONS, "bar_share",
          (_MINUTE, Terms("model_version", 5, other=True)), (COUNT,),
          "Share of predictions made by each model version per minute: a rollover shows "
          "as one colour replacing another."),
    Panel("taste_score_distribution", "Genre taste scores", "users", USER_TASTE, "bar",
          (Histogram("score", 20),), (COUNT,),
          "Distribution of the per-(user, genre) taste scores."),
    Panel("neighbour_genres", "Genres shared with 'users like you'", "users", USER_TASTE,
          "hbar", (Terms("neighbour_genres", 12, order="metric"),),
          (Metric("unique_count", "user_id", label="Users"),),
          "How many users share each genre with their most similar user."),
)

# Not on a dashboard: the report's throughput charts over the last hour.
THROUGHPUT_WINDOW = "now-1h"
THROUGHPUT: tuple[Panel, ...] = (
    Panel("ratings_ingested_per_minute", "Ratings ingested per minute", "throughput", RATINGS,
          "line", (DateHistogram("ingested_at", "1m", fill_gaps=True),), (COUNT,),
          "Ratings written to Elasticsearch per minute of ingestion time."),
    Panel("predictions_per_minute", "Predictions per minute", "throughput", PREDICTIONS,
          "line", (_MINUTE,), (COUNT,), "Prediction records per minute."),
)


def dashboard(dashboard_id: str) -> Dashboard:
    for d in DASHBOARDS:
        if d.id == dashboard_id:
            return d
    raise KeyError(dashboard_id)


def dashboard_panels(dashboard_id: str) -> list[Panel]:
    return [p for p in PANELS if p.dashboard == dashboard_id]


def panel(panel_id: str) -> Panel:
    for p in PANELS:
        if p.id == panel_id:
            return p
    raise KeyError(panel_id)
