"""Kibana 8.x saved objects built from ``panels``: data views, one Lens visualization per
panel (a classic aggregation-based table where Lens cannot say it, i.e. a minimum count),
and one dashboard per ``panels.Dashboard``.

``recommender dashboards build`` writes them to ``kibana_dashboards/<dashboard>.ndjson``;
each file is self-contained (its data views come along) so it can also be imported alone
from Kibana's UI. Objects carry the migration versions Kibana 8.19 accepts as current, so
an import does not rewrite them (``coreMigrationVersion`` 8.8.0 is the fixed core value).
"""

from __future__ import annotations

import json
from typing import Any

from recommender import contracts
from recommender.dashboard.panels import (
    DASHBOARDS,
    PANELS,
    SOURCES,
    Dashboard,
    DateHistogram,
    Histogram,
    Metric,
    Panel,
    Source,
    Terms,
    dashboard_panels,
)

KIBANA_VERSION = "8.19.4"
CORE_MIGRATION = "8.8.0"
TYPE_MIGRATION = {"index-pattern": "8.0.0", "lens": "8.9.0", "visualization": "8.0.0",
                  "dashboard": "8.7.0"}
LAYER = "layer1"
_MAPPINGS = {"recommender-ratings": contracts.RATINGS_MAPPING,
             "recommender-predictions": contracts.PREDICTIONS_MAPPING,
             "recommender-user-taste": contracts.USER_TASTE_MAPPING}
_SERIES = {"line": "line", "bar": "bar", "hbar": "bar_horizontal",
           "area_share": "area_percentage_stacked", "bar_share": "bar_percentage_stacked"}
_LENS_METRIC = {"count": "count", "avg": "average", "percentile": "percentile",
                "unique_count": "unique_count"}
_CLASSIC_METRIC = {"count": "count", "avg": "avg", "percentile": "percentiles",
                   "unique_count": "cardinality"}


def object_id(panel: Panel) -> str:
    return f"recommender-{panel.id.replace('_', '-')}"


def dashboard_id(board: Dashboard) -> str:
    return f"recommender-dashboard-{board.id}"


def uses_lens(panel: Panel) -> bool:
    """Lens has no minimum document count for top values; only classic terms take one."""
    return not any(isinstance(b, Terms) and b.min_doc_count > 1 for b in panel.buckets)


def field_type(source: Source, name: str) -> str:
    """The mapped type of a field (``title.keyword`` resolves to the sub-field)."""
    parent, _, sub = name.partition(".")
    spec = _MAPPINGS[source.data_view_id]["properties"][parent]
    return spec["fields"][sub]["type"] if sub else spec["type"]


def _envelope(kind: str, oid: str, attributes: dict[str, Any],
              references: list[dict[str, str]]) -> dict[str, Any]:
    return {"id": oid, "type": kind, "attributes": attributes, "references": references,
            "coreMigrationVersion": CORE_MIGRATION, "typeMigrationVersion": TYPE_MIGRATION[kind],
            "managed": False}


def data_view(source: Source) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "title": source.pattern, "name": source.name, "allowNoIndex": True, "fields": "[]",
        "fieldAttrs": "{}", "fieldFormatMap": "{}", "runtimeFieldMap": "{}",
        "sourceFilters": "[]", "typeMeta": "{}"}
    if source.time_field:
        attributes["timeFieldName"] = source.time_field
    return _envelope("index-pattern", source.data_view_id, attributes, [])


def _lens_bucket(panel: Panel, level: int) -> dict[str, Any]:
    b = panel.buckets[level]
    if isinstance(b, DateHistogram):
        n = b.interval[:-1]
        return {"label": b.field, "dataType": "date", "operationType": "date_histogram",
                "sourceField": b.field, "isBucketed": True, "scale": "interval",
                "params": {"interval": b.interval[-1] if n in ("", "1") else b.interval,
                           "includeEmptyRows": b.fill_gaps, "dropPartials": False}}
    if isinstance(b, Terms):
        numeric = field_type(panel.source, b.field) not in ("keyword", "text")
        if b.order == "count" and panel.metrics[0].op != "count":
            raise ValueError(f"{panel.id}: Lens ranks top values by a column; order by the "
                             "metric or make the first metric a count")
        order = ({"type": "alphabetical", "fallback": False} if b.order == "key"
                 else {"type": "column", "columnId": "m0"})
        return {"label": f"Top {b.size} values of {b.field}",
                "dataType": "number" if numeric else "string", "operationType": "terms",
                "sourceField": b.field, "isBucketed": True, "scale": "ordinal",
                "params": {"size": b.size, "orderBy": order, "orderDirection": b.direction,
                           "otherBucket": b.other, "missingBucket": False,
                           "parentFormat": {"id": "terms"}, "include": [], "exclude": [],
                           "includeIsRegex": False, "excludeIsRegex": False}}
    if isinstance(b, Histogram):
        return {"label": b.field, "dataType": "number", "operationType": "range",
                "sourceField": b.field, "isBucketed": True, "scale": "interval",
                "params": {"type": "histogram", "maxBars": b.bins,
                           "ranges": [{"from": 0, "to": 1000, "label": ""}]}}
    raise TypeError(f"unknown bucket {b!r}")


def _lens_metric(m: Metric) -> dict[str, Any]:
    column: dict[str, Any] = {
        "label": m.name, "customLabel": True, "dataType": "number",
        "operationType": _LENS_METRIC[m.op], "isBucketed": False, "scale": "ratio",
        "sourceField": m.field or "___records___", "params": {"emptyAsNull": True}}
    if m.op == "percentile":
        column["params"] = {"percentile": m.percent}
    return column


def _lens_visualization(panel: Panel, buckets: list[str], metrics: list[str]) -> dict:
    if panel.chart == "pie":
        return {"shape": "donut", "layers": [{
            "layerId": LAYER, "layerType": "data", "primaryGroups": buckets,
            "metrics": metrics, "numberDisplay": "percent", "categoryDisplay": "default",
            "legendDisplay": "default", "nestedLegend": False}]}
    if panel.chart == "table":
        return {"layerId": LAYER, "layerType": "data",
                "columns": [{"columnId": c} for c in buckets + metrics]}
    series = _SERIES[panel.chart]
    layer: dict[str, Any] = {"layerId": LAYER, "layerType": "data", "seriesType": series,
                             "xAccessor": buckets[0], "accessors": metrics,
                             "position": "top", "showGridlines": False}
    if len(buckets) > 1:
        layer["splitAccessor"] = buckets[1]
        layer["palette"] = {"type": "palette", "name": "default"}
    visible = {"x": True, "yLeft": True, "yRight": True}
    return {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
            "fittingFunction": "None", "preferredSeriesType": series,
            "axisTitlesVisibilitySettings": visible, "tickLabelsVisibilitySettings": visible,
            "gridlinesVisibilitySettings": visible,
            "labelsOrientation": {"x": 0, "yLeft": 0, "yRight": 0},
            "yLeftExtent": {"mode": "full"}, "yRightExtent": {"mode": "full"},
            "layers": [layer]}


def lens(panel: Panel) -> dict[str, Any]:
    buckets = [f"b{i}" for i in range(len(panel.buckets))]
    metrics = [f"m{i}" for i in range(len(panel.metrics))]
    columns = {c: _lens_bucket(panel, i) for i, c in enumerate(buckets)}
    columns.update({c: _lens_metric(m) for c, m in zip(metrics, panel.metrics, strict=True)})
    state = {
        "visualization": _lens_visualization(panel, buckets, metrics),
        "query": {"query": "", "language": "kuery"}, "filters": [],
        "datasourceStates": {"formBased": {"layers": {LAYER: {
            "columns": columns, "columnOrder": buckets + metrics, "incompleteColumns": {},
            "sampling": 1}}}},
        "internalReferences": [], "adHocDataViews": {}}
    chart_type = {"pie": "lnsPie", "table": "lnsDatatable"}.get(panel.chart, "lnsXY")
    refs = [{"type": "index-pattern", "id": panel.source.data_view_id, "name": name}
            for name in ("indexpattern-datasource-current-indexpattern",
                         f"indexpattern-datasource-layer-{LAYER}")]
    return _envelope("lens", object_id(panel), {
        "title": panel.title, "description": panel.description,
        "visualizationType": chart_type, "state": state}, refs)


def classic_table(panel: Panel) -> dict[str, Any]:
    """An aggregation-based data table: its terms JSON input carries ``min_doc_count``."""
    if panel.chart != "table" or not all(isinstance(b, Terms) for b in panel.buckets):
        raise ValueError(f"{panel.id}: only terms tables are built as classic visualizations")
    aggs: list[dict[str, Any]] = []
    for i, m in enumerate(panel.metrics, start=1):
        params: dict[str, Any] = {"customLabel": m.name}
        if m.field:
            params["field"] = m.field
        if m.op == "percentile":
            params["percents"] = [m.percent]
        aggs.append({"id": str(i), "enabled": True, "type": _CLASSIC_METRIC[m.op],
                     "params": params, "schema": "metric"})
    for b in panel.buckets:
        assert isinstance(b, Terms)
        extra = {"min_doc_count": b.min_doc_count, **({"shard_size": b.shard_size}
                                                       if b.shard_size else {})}
        aggs.append({"id": str(len(aggs) + 1), "enabled": True, "type": "terms",
                     "schema": "bucket", "params": {
                         "field": b.field, "size": b.size, "order": b.direction,
                         "orderBy": "_key" if b.order == "key" else "1",
                         "otherBucket": b.other, "otherBucketLabel": "Other",
                         "missingBucket": False, "missingBucketLabel": "Missing",
                         "json": json.dumps(extra)}})
    vis_state = {"title": panel.title, "type": "table", "aggs": aggs, "params": {
        "perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False,
        "showTotal": False, "totalFunc": "sum", "percentageCol": ""}}
    search = {"query": {"query": "", "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return _envelope("visualization", object_id(panel), {
        "title": panel.title, "description": panel.description,
        "visState": json.dumps(vis_state), "uiStateJSON": "{}", "version": 1,
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)}},
        [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern",
          "id": panel.source.data_view_id}])


def visualization(panel: Panel) -> dict[str, Any]:
    return lens(panel) if uses_lens(panel) else classic_table(panel)


def dashboard(board: Dashboard) -> dict[str, Any]:
    """Two panels per row, in the order of ``PANELS``; panels by reference."""
    panels, refs = [], []
    for n, p in enumerate(dashboard_panels(board.id)):
        index = p.id
        panels.append({"version": KIBANA_VERSION, "type": "lens" if uses_lens(p)
                       else "visualization",
                       "gridData": {"x": 24 * (n % 2), "y": 15 * (n // 2), "w": 24, "h": 15,
                                    "i": index},
                       "panelIndex": index, "embeddableConfig": {"enhancements": {}},
                       "panelRefName": f"panel_{index}"})
        refs.append({"name": f"{index}:panel_{index}", "type": panels[-1]["type"],
                     "id": object_id(p)})
    attributes: dict[str, Any] = {
        "title": f"[Recommender] {board.title}", "description": board.description,
        "panelsJSON": json.dumps(panels),
        "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                   "syncTooltips": False, "hidePanelTitles": False}),
        "timeRestore": board.time_from is not None, "version": 1,
        "refreshInterval": {"pause": False, "value": board.refresh_s * 1000},
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
            {"query": {"query": "", "language": "kuery"}, "filter": []})}}
    if board.time_from:
        attributes.update(timeFrom=board.time_from, timeTo="now")
    return _envelope("dashboard", dashboard_id(board), attributes, refs)


def dashboard_objects(board: Dashboard) -> list[dict[str, Any]]:
    """Everything one dashboard needs, dependencies first: data views, visualizations, it."""
    panels = dashboard_panels(board.id)
    views = [data_view(s) for s in SOURCES if any(p.source == s for p in panels)]
    return [*views, *(visualization(p) for p in panels), dashboard(board)]


def all_objects() -> dict[str, list[dict[str, Any]]]:
    """``{file stem: objects}`` for every dashboard."""
    assert {p.dashboard for p in PANELS} <= {d.id for d in DASHBOARDS}
    return {board.id: dashboard_objects(board) for board in DASHBOARDS}
