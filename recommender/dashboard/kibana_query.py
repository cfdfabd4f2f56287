"""A Kibana visualization (as parsed by ``kibana_check``) as the Elasticsearch request
Kibana would send: the data view's pattern, its time field limited to the dashboard's time
range (and to any filters, as Kibana's filter pills), the buckets nested in column order and
the metrics innermost.

Written independently of ``aggs`` on purpose: it checks the saved objects as they are, not
as the generator meant them. Kibana's "Other" bucket (a second request) is left out; an
``auto`` interval becomes about 100 buckets, as Kibana's ``histogram:maxBars`` default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recommender.dashboard.kibana_check import DataView, Operation, VisSpec
from recommender.dashboard.panels import relative_ms

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

MAX_BARS = 100
ES_METRIC = {"avg": "avg", "sum": "sum", "min": "min", "max": "max",
             "unique_count": "cardinality"}


def time_filter(view: DataView, time_range: tuple[str, str] | None) -> dict[str, Any]:
    if view.time_field is None or time_range is None:
        return {"match_all": {}}
    return {"range": {view.time_field: {"gte": time_range[0], "lte": time_range[1]}}}


def query(view: DataView, time_range: tuple[str, str] | None,
          filters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The time range and every filter clause, all required."""
    if not filters:
        return time_filter(view, time_range)
    return {"bool": {"filter": [time_filter(view, time_range), *filters]}}


def _date_interval(value: str, time_range: tuple[str, str] | None) -> dict[str, str]:
    if value == "auto":
        span = relative_ms(time_range[0]) if time_range else 86_400_000 * MAX_BARS
        return {"fixed_interval": f"{max(span // MAX_BARS, 1000)}ms"}
    match = re.fullmatch(r"(\d*)([smhdwMqy])", value)
    if not match:
        raise ValueError(f"unsupported date_histogram interval {value!r}")
    n = int(match[1] or 1)
    return ({"calendar_interval": f"1{match[2]}"} if n == 1
            else {"fixed_interval": f"{n}{match[2]}"})


def _metric(op: Operation) -> dict[str, Any] | None:
    if op.op == "count":
        return None
    if op.op in ("percentile", "median"):
        percent = 50 if op.op == "median" else op.params["percent"]
        return {"percentiles": {"field": op.field, "percents": [percent]}}
    return {ES_METRIC[op.op]: {"field": op.field}}


def _bucket(op: Operation, spec: VisSpec, time_range: tuple[str, str] | None,
            interval: float | None) -> dict[str, Any]:
    p = op.params
    if op.op == "date_histogram":
        return {"date_histogram": {"field": op.field, **_date_interval(str(p["interval"]),
                                                                        time_range),
                                   "min_doc_count": 1, **p.get("extra", {})}}
    if op.op == "terms":
        order = p["order"]
        if isinstance(order, int):
            order = "_count" if spec.metrics[order].op == "count" else f"m{order}"
        return {"terms": {"field": op.field, "size": p["size"],
                          "order": {order: p["direction"]},
                          "min_doc_count": p["min_doc_count"], **p.get("extra", {})}}
    if op.op == "histogram":
        return {"histogram": {"field": op.field, "interval": interval or 1.0,
                              "min_doc_count": 1}}
    raise ValueError(f"{spec.id}: unsupported bucket operation {op.op}")


def request(spec: VisSpec, view: DataView, time_range: tuple[str, str] | None,
            intervals: dict[int, float] | None = None,
            filters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The search body (``size`` 0, aggregations ``b0 > b1 > m0 ...``)."""
    inner = {f"m{i}": agg for i, m in enumerate(spec.metrics) if (agg := _metric(m))}
    for level in reversed(range(len(spec.buckets))):
        agg = _bucket(spec.buckets[level], spec, time_range, (intervals or {}).get(level))
        if inner:
            agg["aggs"] = inner
        inner = {f"b{level}": agg}
    return {"size": 0, "track_total_hits": True, "query": query(view, time_range, filters),
            "aggs": inner}


def search(es: Elasticsearch, spec: VisSpec, view: DataView,
           time_range: tuple[str, str] | None,
           filters: Sequence[dict[str, Any]] = (), prefix: str = "") -> dict[str, Any]:
    """Run it on the view's indices under ``prefix``; a histogram first asks for its field's
    min and max, as Kibana does."""
    index = prefix + view.pattern
    intervals: dict[int, float] = {}
    where = query(view, time_range, filters)
    for level, op in enumerate(spec.buckets):
        if op.op != "histogram":
            continue
        if op.params.get("interval") not in (None, "auto"):
            intervals[level] = float(op.params["interval"])
            continue
        stats = es.search(index=index, size=0, query=where, ignore_unavailable=True,
                          aggs={"s": {"stats": {"field": op.field}}})["aggregations"]["s"]
        bins = op.params["bins"] if isinstance(op.params["bins"], int) else MAX_BARS
        span = (stats["max"] - stats["min"]) if stats.get("count") else 0
        intervals[level] = span / bins if span > 0 else 1.0
    body = request(spec, view, time_range, intervals, filters)
    return dict(es.search(index=index, ignore_unavailable=True, **body))


def has_data(spec: VisSpec, response: dict[str, Any]) -> bool:
    """At least one document matched and the innermost level has a bucket with a value."""
    total = response.get("hits", {}).get("total", {}).get("value", 0)
    return bool(total) and _walk(spec, response.get("aggregations", {}), 0)


def _walk(spec: VisSpec, node: dict[str, Any], level: int) -> bool:
    if level == len(spec.buckets):
        return any(_value(node, i, m) for i, m in enumerate(spec.metrics))
    return any(b.get("doc_count", 0) > 0 and _walk(spec, b, level + 1)
               for b in node.get(f"b{level}", {}).get("buckets", []))


def _value(node: dict[str, Any], i: int, m: Operation) -> bool:
    if m.op == "count":
        return node.get("doc_count", 1) > 0
    agg = node.get(f"m{i}", {})
    if "values" in agg:
        return any(v is not None for v in agg["values"].values())
    return agg.get("value") is not None
