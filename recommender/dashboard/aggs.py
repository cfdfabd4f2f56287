"""A panel as an Elasticsearch request, and the response as chart series.

Pure functions (no client): the page, the report and the unit tests share them. Only core
aggregations are used (date_histogram, terms, histogram, stats, avg, percentiles,
cardinality) because the embedded Elasticsearch has no aggregations or painless module.

Bucket levels nest as ``b0 > b1``; metrics sit in the innermost level as ``m0, m1 ...``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from recommender.dashboard.panels import DateHistogram, Histogram, Metric, Panel, Terms

OTHER = "Other"


@dataclass(frozen=True)
class Row:
    """One innermost bucket: its keys from outer to inner, metric values and doc count."""

    keys: tuple[Any, ...]
    values: tuple[float | None, ...]
    count: int


def time_query(panel: Panel, now_ms: int, window_ms: int | None) -> dict[str, Any]:
    field = panel.time_field
    if field is None or window_ms is None:
        return {"match_all": {}}
    return {"range": {field: {"gte": now_ms - window_ms, "lte": now_ms,
                              "format": "epoch_millis"}}}


def stats_body(panel: Panel, now_ms: int, window_ms: int | None) -> dict[str, Any] | None:
    """The first request of a histogram panel: min/max of each histogram field."""
    levels = [b for b in panel.buckets if isinstance(b, Histogram)]
    if not levels:
        return None
    return {"size": 0, "query": time_query(panel, now_ms, window_ms),
            "aggs": {f"s{i}": {"stats": {"field": b.field}} for i, b in enumerate(levels)}}


def histogram_intervals(panel: Panel, stats_response: dict[str, Any] | None) -> list[float]:
    """A "nice" width per histogram level (1, 2 or 5 x 10^n) giving about ``bins`` buckets."""
    levels = [b for b in panel.buckets if isinstance(b, Histogram)]
    aggs = (stats_response or {}).get("aggregations", {})
    out = []
    for i, b in enumerate(levels):
        s = aggs.get(f"s{i}", {})
        low, high = s.get("min"), s.get("max")
        span = (high - low) if low is not None and high is not None else 0.0
        out.append(nice_step(span / b.bins) if span > 0 else 1.0)
    return out


def nice_step(raw: float) -> float:
    exponent = math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        step = mult * 10.0 ** exponent
        if step >= raw:
            return round(step, 12)
    return 10.0 ** (exponent + 1)


def search_body(panel: Panel, now_ms: int, window_ms: int | None,
                intervals: list[float] | None = None) -> dict[str, Any]:
    """The aggregation request of ``panel`` over ``[now - window, now]``."""
    intervals = list(intervals or [])
    inner: dict[str, Any] = {f"m{i}": _metric(m) for i, m in enumerate(panel.metrics)
                             if m.op != "count"}
    for level in reversed(range(len(panel.buckets))):
        bucket = panel.buckets[level]
        agg = _bucket(panel, bucket, now_ms, window_ms, intervals)
        if inner:
            agg["aggs"] = inner
        inner = {f"b{level}": agg}
    return {"size": 0, "track_total_hits": True, "query": time_query(panel, now_ms, window_ms),
            "aggs": inner}


def _bucket(panel: Panel, b: Any, now_ms: int, window_ms: int | None,
            intervals: list[float]) -> dict[str, Any]:
    if isinstance(b, DateHistogram):
        # ES takes only single units as calendar intervals ("1d"); "5m" is a fixed one.
        key = "calendar_interval" if int(b.interval[:-1] or 1) == 1 else "fixed_interval"
        body: dict[str, Any] = {"field": b.field, key: b.interval, "min_doc_count": 1}
        if b.fill_gaps and window_ms is not None:
            body.update(min_doc_count=0, extended_bounds={"min": now_ms - window_ms,
                                                           "max": now_ms})
        return {"date_histogram": body}
    if isinstance(b, Terms):
        order_key = {"count": "_count", "key": "_key", "metric": "m0"}[b.order]
        if b.order == "metric" and panel.metrics[0].op == "count":
            order_key = "_count"
        body = {"field": b.field, "size": b.size, "min_doc_count": b.min_doc_count,
                "order": {order_key: b.direction}}
        if b.shard_size:
            body["shard_size"] = b.shard_size
        return {"terms": body}
    if isinstance(b, Histogram):
        return {"histogram": {"field": b.field, "interval": intervals.pop(0) if intervals
                              else 1.0, "min_doc_count": 0}}
    raise TypeError(f"unknown bucket {b!r}")


def _metric(m: Metric) -> dict[str, Any]:
    if m.op == "avg":
        return {"avg": {"field": m.field}}
    if m.op == "percentile":
        return {"percentiles": {"field": m.field, "percents": [m.percent], "keyed": False}}
    if m.op == "unique_count":
        return {"cardinality": {"field": m.field}}
    raise ValueError(f"metric {m.op} needs no aggregation")


def rows(panel: Panel, response: dict[str, Any]) -> list[Row]:
    """Flatten the nested buckets; a terms level with ``other`` adds an ``Other`` row."""
    out: list[Row] = []
    _walk(panel, response.get("aggregations", {}), 0, (), out)
    return out


def _walk(panel: Panel, node: dict[str, Any], level: int, keys: tuple[Any, ...],
          out: list[Row]) -> None:
    agg = node.get(f"b{level}", {})
    spec = panel.buckets[level]
    last = level == len(panel.buckets) - 1
    for bucket in agg.get("buckets", []):
        key = bucket["key"]
        if isinstance(spec, Terms) and isinstance(key, float) and "key_as_string" not in bucket:
            key = f"{key:g}"
        elif isinstance(spec, Histogram):
            key = round(key, 10)  # 0.15000000000000002 -> 0.15
        if last:
            out.append(Row((*keys, key), _values(panel.metrics, bucket), bucket["doc_count"]))
        else:
            _walk(panel, bucket, level + 1, (*keys, key), out)
    other = agg.get("sum_other_doc_count", 0)
    if isinstance(spec, Terms) and spec.other and other:
        values = tuple(float(other) if m.op == "count" else None for m in panel.metrics)
        out.append(Row((*keys, OTHER), values, other))


def _values(metrics: tuple[Metric, ...], bucket: dict[str, Any]) -> tuple[float | None, ...]:
    values: list[float | None] = []
    for i, m in enumerate(metrics):
        if m.op == "count":
            values.append(float(bucket["doc_count"]))
        elif m.op == "percentile":
            found = bucket[f"m{i}"].get("values") or [{}]
            values.append(found[0].get("value"))
        else:
            values.append(bucket[f"m{i}"].get("value"))
    return tuple(None if v is None else round(float(v), 4) for v in values)


def to_series(panel: Panel, response: dict[str, Any]) -> dict[str, Any]:
    """The chart data of a panel: ``series`` of ``[x, y]`` points, or ``columns``/``rows``
    for a table, plus ``status`` "ok" or "empty" (no matching documents or no buckets)."""
    total = response.get("hits", {}).get("total", {})
    total = total.get("value", 0) if isinstance(total, dict) else int(total or 0)
    flat = rows(panel, response)
    time_x = isinstance(panel.buckets[0], DateHistogram)
    out: dict[str, Any] = {"chart": panel.chart, "x": "time" if time_x else "category",
                           "unit": panel.unit, "total": total, "series": []}
    if panel.chart == "table":
        out["columns"] = [_label(b) for b in panel.buckets] + [m.name for m in panel.metrics]
        out["rows"] = [[*r.keys, *r.values] for r in flat]
    elif panel.chart in ("area_share", "bar_share"):
        split = panel.buckets[1]
        out["series"] = _shares(flat, split.size if isinstance(split, Terms) else 10)
    elif len(panel.buckets) == 2:
        names = list(dict.fromkeys(r.keys[1] for r in flat))
        out["series"] = [{"name": str(n), "points": [[r.keys[0], r.values[0]] for r in flat
                                                     if r.keys[1] == n]} for n in names]
    else:
        out["series"] = [{"name": m.name, "points": [[r.keys[0], r.values[i]] for r in flat]}
                         for i, m in enumerate(panel.metrics)]
    has_rows = bool(out.get("rows")) or any(s["points"] for s in out["series"])
    out["status"] = "ok" if total and has_rows else "empty"
    return out


def _shares(flat: list[Row], keep: int) -> list[dict[str, Any]]:
    """Each x bucket's split counts as shares of the bucket. The top ``keep`` names over
    the whole range stay (bucket by bucket they may differ), the rest join ``Other``, so
    the legend stays short and colours stay distinct."""
    totals: dict[Any, float] = {}
    by_name: dict[Any, float] = {}
    for r in flat:
        totals[r.keys[0]] = totals.get(r.keys[0], 0.0) + r.count
        if r.keys[1] != OTHER:
            by_name[r.keys[1]] = by_name.get(r.keys[1], 0.0) + r.count
    names = sorted(by_name, key=lambda n: -by_name[n])[:keep]
    counts: dict[tuple[Any, Any], float] = {}
    for r in flat:
        name = r.keys[1] if r.keys[1] in names else OTHER
        counts[(r.keys[0], name)] = counts.get((r.keys[0], name), 0.0) + r.count
    if any(name == OTHER for _, name in counts):
        names.append(OTHER)
    return [{"name": str(n), "points": [[x, round(counts.get((x, n), 0) / totals[x], 4)
                                         if totals[x] else 0.0] for x in totals]}
            for n in names]


def _label(b: Any) -> str:
    return {"title.keyword": "Movie"}.get(b.field, b.field.replace("_", " ").capitalize())
