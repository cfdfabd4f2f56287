"""What each Kibana visualization asks of Elasticsearch, read from the saved objects alone.

The checks do not trust the generator: they parse the ndjson the way Kibana would read it
(Lens ``formBased`` layers, classic ``visState`` aggs), then

* ``reference_problems``: every reference resolves inside the same file, every
  visualization names its data view by id, every dashboard panel has its reference;
* ``field_problems``: the data view's time field and every field an operation reads exist
  in the real mapping (``_field_caps``, as Kibana itself asks), with one type the operation
  can use, aggregatable;
* ``kibana_query.search``: the visualization translated to an Elasticsearch request over
  its dashboard's time range, and ``has_data`` on the answer;
* ``signature``: the operations, comparable with ``panels.signature`` of the panel with
  the same id, so Kibana and the built-in page show the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from recommender.dashboard.panels import DateHistogram, Histogram, Panel, Terms

NUMERIC = frozenset({"long", "integer", "short", "byte", "double", "float", "half_float",
                     "scaled_float", "unsigned_long"})
DATES = frozenset({"date", "date_nanos"})
USABLE: dict[str, frozenset[str] | None] = {
    "date_histogram": DATES, "histogram": NUMERIC,
    "terms": NUMERIC | DATES | {"keyword", "boolean", "ip", "constant_keyword", "version"},
    "avg": NUMERIC, "sum": NUMERIC, "median": NUMERIC, "percentile": NUMERIC,
    "min": NUMERIC | DATES, "max": NUMERIC | DATES, "unique_count": None,
}
LENS_OPS = {"date_histogram": "date_histogram", "terms": "terms", "range": "histogram",
            "count": "count", "average": "avg", "percentile": "percentile", "sum": "sum",
            "unique_count": "unique_count", "min": "min", "max": "max", "median": "median"}
CLASSIC_OPS = {"date_histogram": "date_histogram", "terms": "terms", "histogram": "histogram",
               "count": "count", "avg": "avg", "percentiles": "percentile", "sum": "sum",
               "cardinality": "unique_count", "min": "min", "max": "max", "median": "median"}


@dataclass(frozen=True)
class Operation:
    """One aggregation: normalised ``op``, the field it reads and its essential params."""

    op: str
    field: str | None = None
    params: dict[str, Any] = dataclass_field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class VisSpec:
    id: str
    type: str
    title: str
    data_view_id: str | None
    buckets: tuple[Operation, ...]
    metrics: tuple[Operation, ...]


@dataclass(frozen=True)
class DataView:
    id: str
    pattern: str
    time_field: str | None


def data_views(objects: list[dict[str, Any]]) -> dict[str, DataView]:
    return {o["id"]: DataView(o["id"], o["attributes"]["title"],
                              o["attributes"].get("timeFieldName") or None)
            for o in objects if o["type"] == "index-pattern"}


def vis_specs(objects: list[dict[str, Any]]) -> list[VisSpec]:
    return [lens_spec(o) if o["type"] == "lens" else classic_spec(o)
            for o in objects if o["type"] in ("lens", "visualization")]


def _ref(obj: dict[str, Any], name: str) -> str | None:
    return next((r["id"] for r in obj.get("references", []) if r["name"] == name), None)


def lens_spec(obj: dict[str, Any]) -> VisSpec:
    sources = obj["attributes"]["state"]["datasourceStates"]
    layers = (sources.get("formBased") or sources.get("indexpattern") or {})["layers"]
    if len(layers) != 1:
        raise ValueError(f"lens {obj['id']}: expected one data layer, found {len(layers)}")
    (layer_id, layer), = layers.items()
    columns = layer["columns"]
    ordered = [(cid, columns[cid]) for cid in layer["columnOrder"]]
    metric_ids = [cid for cid, c in ordered if not c["isBucketed"]]
    buckets, metrics = [], []
    for _, c in ordered:
        op = LENS_OPS.get(c["operationType"], c["operationType"])
        src = None if c.get("sourceField") in (None, "___records___") else c["sourceField"]
        p = c.get("params") or {}
        if op == "date_histogram":
            params = {"interval": p.get("interval", "auto")}
        elif op == "terms":
            by = p.get("orderBy") or {}
            if by.get("type") == "alphabetical":
                order: Any = "_key"
            elif by.get("type") == "column" and by.get("columnId") in metric_ids:
                order = metric_ids.index(by["columnId"])
            else:
                order = "_count"
            params = {"size": p.get("size", 5), "order": order,
                      "direction": p.get("orderDirection", "desc"), "min_doc_count": 1,
                      "other": p.get("otherBucket", False)}
        elif op == "histogram":
            params = {"bins": p.get("maxBars", "auto")}
        elif op == "percentile":
            params = {"percent": p.get("percentile", 95)}
        else:
            params = {}
        (buckets if c["isBucketed"] else metrics).append(Operation(op, src, params))
    return VisSpec(obj["id"], "lens", obj["attributes"].get("title", ""),
                   _ref(obj, f"indexpattern-datasource-layer-{layer_id}"),
                   tuple(buckets), tuple(metrics))


def classic_spec(obj: dict[str, Any]) -> VisSpec:
    attrs = obj["attributes"]
    vis = json.loads(attrs["visState"])
    search = json.loads(attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON") or "{}")
    ref_name = search.get("indexRefName", "kibanaSavedObjectMeta.searchSourceJSON.index")
    aggs = [a for a in vis.get("aggs", []) if a.get("enabled", True)]
    metric_aggs = [a for a in aggs if a.get("schema") in ("metric", "radius")]
    buckets, metrics = [], []
    for a in metric_aggs:
        p = a.get("params") or {}
        op = CLASSIC_OPS.get(a["type"], a["type"])
        params = {"percent": (p.get("percents") or [95])[0]} if op == "percentile" else {}
        metrics.append(Operation(op, p.get("field"), params))
    for a in aggs:
        if a in metric_aggs:
            continue
        p, op = a.get("params") or {}, CLASSIC_OPS.get(a["type"], a["type"])
        extra = json.loads(p["json"]) if p.get("json") else {}
        if op == "terms":
            ids = [m["id"] for m in metric_aggs]
            order = "_key" if p.get("orderBy") == "_key" else (
                ids.index(p["orderBy"]) if p.get("orderBy") in ids else "_count")
            params = {"size": p.get("size", 5), "order": order,
                      "direction": p.get("order", "desc"),
                      "min_doc_count": extra.get("min_doc_count", 1),
                      "other": p.get("otherBucket", False), "extra": extra}
        elif op == "date_histogram":
            params = {"interval": p.get("interval", "auto"), "extra": extra}
        elif op == "histogram":
            params = {"bins": p.get("maxBars", "auto"), "interval": p.get("interval"),
                      "extra": extra}
        else:
            params = {"extra": extra}
        buckets.append(Operation(op, p.get("field"), params))
    return VisSpec(obj["id"], "visualization", attrs.get("title", ""), _ref(obj, ref_name),
                   tuple(buckets), tuple(metrics))


def dashboard_time_ranges(objects: list[dict[str, Any]]) -> dict[str, tuple[str, str] | None]:
    """``{visualization id: (timeFrom, timeTo)}`` from the dashboards that show them."""
    out: dict[str, tuple[str, str] | None] = {}
    for d in (o for o in objects if o["type"] == "dashboard"):
        a = d["attributes"]
        rng = (a["timeFrom"], a.get("timeTo", "now")) if a.get("timeRestore") else None
        for ref in d.get("references", []):
            if ref["type"] in ("lens", "visualization"):
                out[ref["id"]] = rng
    return out


def reference_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Dangling references, visualizations without a data view, broken dashboard panels."""
    problems = []
    present = {(o["type"], o["id"]) for o in objects}
    if len(present) != len(objects):
        problems.append("duplicate (type, id) pairs")
    for o in objects:
        for r in o.get("references", []):
            if (r["type"], r["id"]) not in present:
                problems.append(f"{o['type']} {o['id']}: reference {r['name']} -> "
                                f"{r['type']} {r['id']} is not in the file")
    for spec in vis_specs(objects):
        if spec.data_view_id is None or ("index-pattern", spec.data_view_id) not in present:
            problems.append(f"{spec.type} {spec.id}: no data view reference by id")
    for d in (o for o in objects if o["type"] == "dashboard"):
        names = {r["name"] for r in d.get("references", [])}
        for p in json.loads(d["attributes"]["panelsJSON"]):
            if f"{p['panelIndex']}:{p.get('panelRefName')}" not in names:
                problems.append(f"dashboard {d['id']}: panel {p['panelIndex']} has no "
                                "reference")
    return problems


def field_problems(spec: VisSpec, view: DataView, caps: dict[str, Any]) -> list[str]:
    """``caps`` is ``_field_caps`` over the data view's pattern (its ``fields``)."""
    problems = []
    uses = [(op.op, op.field) for op in (*spec.buckets, *spec.metrics)]
    if view.time_field:
        uses.insert(0, ("date_histogram", view.time_field))
    for op, name in uses:
        if op not in USABLE and op != "count":
            problems.append(f"{spec.id}: operation {op} is not supported by these checks")
        if name is None:
            continue
        types = caps.get(name)
        if not types:
            problems.append(f"{spec.id}: field {name} does not exist in {view.pattern}")
            continue
        if len(types) > 1:
            problems.append(f"{spec.id}: field {name} has conflicting types {sorted(types)}")
        kind, info = next(iter(types.items()))
        allowed = USABLE.get(op)
        if allowed is not None and kind not in allowed:
            problems.append(f"{spec.id}: {op} cannot use {name} of type {kind}")
        if not info.get("aggregatable"):
            problems.append(f"{spec.id}: field {name} ({kind}) is not aggregatable")
    return problems


def signature(spec: VisSpec) -> tuple[Any, ...]:
    return (spec.data_view_id, tuple(_op_sig(o, spec.metrics) for o in spec.buckets),
            tuple((m.op, m.field, m.params.get("percent")) for m in spec.metrics))


def _op_sig(o: Operation, metrics: tuple[Operation, ...]) -> tuple[Any, ...]:
    p = o.params
    if o.op == "terms":
        order = p["order"]
        kind = ("key" if order == "_key" else "count" if order == "_count"
                or metrics[order].op == "count" else "metric")
        return ("terms", o.field, p["size"], kind, p["direction"], p["min_doc_count"])
    if o.op == "date_histogram":
        interval = str(p["interval"])
        return ("date_histogram", o.field, interval if interval[:-1] else f"1{interval}")
    if o.op == "histogram":
        return ("histogram", o.field, p["bins"])
    return (o.op, o.field)


def panel_signature(panel: Panel) -> tuple[Any, ...]:
    """The same shape as ``signature``, from a panel definition."""
    buckets: list[tuple[Any, ...]] = []
    for b in panel.buckets:
        if isinstance(b, DateHistogram):
            buckets.append(("date_histogram", b.field, b.interval))
        elif isinstance(b, Terms):
            kind = "count" if b.order == "metric" and panel.metrics[0].op == "count" \
                else b.order
            buckets.append(("terms", b.field, b.size, kind, b.direction, b.min_doc_count))
        elif isinstance(b, Histogram):
            buckets.append(("histogram", b.field, b.bins))
    return (panel.source.data_view_id, tuple(buckets),
            tuple((m.op, m.field, m.percent) for m in panel.metrics))


def caps_from_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    """``_field_caps``-shaped fields of an index mapping (sub-fields as ``a.b``), for checking
    saved objects against ``contracts`` without a cluster; text is not aggregatable."""
    caps: dict[str, Any] = {}
    for name, spec in mapping["properties"].items():
        caps[name] = {spec["type"]: {"type": spec["type"],
                                     "aggregatable": spec["type"] != "text"}}
        for sub, sub_spec in spec.get("fields", {}).items():
            caps[f"{name}.{sub}"] = {sub_spec["type"]: {
                "type": sub_spec["type"], "aggregatable": sub_spec["type"] != "text"}}
    return caps
