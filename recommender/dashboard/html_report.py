"""``recommender report``: one self-contained HTML file (inline SVG, inline CSS, no script)
summarising the serving model and the pipeline's current throughput.

* The model: the registry's CURRENT version and its ``metadata.json``: each evaluation
  metric of the model next to the same metric of the baselines it must beat (popularity,
  random), scored on the same held-out users.
* Throughput: ratings ingested (by ``ingested_at``) and predictions made (by
  ``predicted_at``) per minute over the last hour, from the same panel definitions as the
  dashboard.

A missing model or an unreachable Elasticsearch is reported in its section, so the report
is still written and says what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recommender.dashboard import panel_queries, svg
from recommender.dashboard.panels import THROUGHPUT, THROUGHPUT_WINDOW
from recommender.errors import ModelError
from recommender.model.registry import ModelRegistry, higher_is_better
from recommender.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


@dataclass
class Report:
    generated_at: int
    model: dict[str, Any] | None = None
    model_problem: str | None = None
    throughput: list[dict[str, Any]] = field(default_factory=list)
    throughput_problem: str | None = None


def collect(settings: Settings, es: Elasticsearch | None = None,
            now_ms: int | None = None) -> Report:
    now = now_ms or int(time.time() * 1000)
    report = Report(generated_at=now)
    registry = ModelRegistry.from_settings(settings.model)
    version = registry.current_version()
    if version is None:
        report.model_problem = (f"No model has been promoted yet in {registry.root} "
                                "(run `recommender train`).")
    else:
        try:
            report.model = registry.metadata(version)
        except ModelError as exc:
            report.model_problem = str(exc)
    if es is None:
        from recommender.clients import elasticsearch_client

        es = elasticsearch_client(settings.elasticsearch, request_timeout=15)
    try:
        report.throughput = panel_queries.fetch_panels(es, THROUGHPUT, now,
                                             settings.elasticsearch.index_prefix)
    except panel_queries.Unreachable as exc:
        report.throughput_problem = str(exc)
    return report


def write(settings: Settings, output: Path, es: Elasticsearch | None = None) -> Report:
    report = collect(settings, es)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(report))
    return report


CSS = """body{font:14px/1.45 system-ui,sans-serif;color:#1f2328;max-width:1000px;margin:2rem auto;
padding:0 1rem}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid
#d0d7de}.grid{display:flex;flex-wrap:wrap;gap:1rem 2rem}.problem{color:#b42318}table{border-
collapse:collapse}td,th{padding:.15rem .6rem;text-align:left;border-bottom:1px solid #eaeef2}
td.num{text-align:right;font-variant-numeric:tabular-nums}svg text{font-size:11px;fill:#57606a}
svg text.title{font-size:13px;fill:#1f2328;font-weight:600}svg .grid{stroke:#eaeef2}"""


def render(report: Report) -> str:
    when = datetime.fromtimestamp(report.generated_at / 1000, UTC)
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Recommender report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>Movie recommender report</h1>",
        f"<p>Generated {when:%Y-%m-%d %H:%M:%S} UTC.</p>",
        _model_section(report), _throughput_section(report), "</body></html>"])


def _model_section(report: Report) -> str:
    out = ["<h2>Latest training run (serving model)</h2>"]
    meta = report.model
    if meta is None:
        out.append(f'<p class="problem">{escape(report.model_problem or "")}</p>')
        return "\n".join(out)
    facts = {"version": meta.get("version"), "created": meta.get("created_at"),
             "ranking model": _params(meta, "ranking"), "rating model": _params(meta, "rating"),
             "ratings": (meta.get("data") or {}).get("rows"),
             "users": (meta.get("data") or {}).get("users"),
             "movies": (meta.get("data") or {}).get("items"),
             "split": (meta.get("evaluation") or {}).get("split"),
             "evaluated users": (meta.get("evaluation") or {}).get("users"),
             "training time (s)": (meta.get("timings") or {}).get("total_s")}
    out.append("<table>" + "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
        for k, v in facts.items() if v is not None) + "</table>")
    metrics: dict[str, float] = meta.get("metrics") or {}
    baselines: dict[str, dict[str, float]] = meta.get("baseline_metrics") or {}
    if not metrics:
        out.append('<p class="problem">This version has no evaluation metrics.</p>')
        return "\n".join(out)
    out.append("<p>Each metric of the version (ALS: ranking metrics from its ranking model, "
               "rating errors from its rating model) beside the baselines on the same "
               "held-out users; the best value is in bold.</p>")
    charts = []
    for name, value in metrics.items():
        values = [("ALS", value)] + [(b, m.get(name)) for b, m in baselines.items()]
        known = [(label, v) for label, v in values if v is not None]
        higher = higher_is_better(name)
        best = (max if higher else min)(known, key=lambda lv: lv[1])[0] if known else None
        charts.append(svg.hbars(name, values, "higher is better" if higher
                                else "lower is better", best))
    out.append('<div class="grid" id="metrics">' + "".join(charts) + "</div>")
    return "\n".join(out)


def _params(meta: dict, kind: str) -> str | None:
    """``rank 16, reg_param 0.1, ...`` of one of the version's two models."""
    params = (meta.get("params") or {}).get(kind)
    return ", ".join(f"{k} {v}" for k, v in params.items()) if params else None


def _throughput_section(report: Report) -> str:
    window = THROUGHPUT_WINDOW.replace("now-", "")
    out = [f"<h2>Pipeline throughput (last {window})</h2>"]
    if report.throughput_problem:
        out.append(f'<p class="problem">Elasticsearch: {escape(report.throughput_problem)}</p>')
        return "\n".join(out)
    rows, charts = [], []
    for panel in report.throughput:
        points = panel["series"][0]["points"] if panel.get("series") else []
        values = [v for _, v in points if v is not None]
        total = sum(values)
        minutes = max(len(points), 1)
        last = values[-1] if values else 0
        rows.append(f"<tr><th>{escape(panel['title'])}</th>"
                    f"<td class='num'>{svg.fmt(total)}</td>"
                    f"<td class='num'>{svg.fmt(round(total / minutes, 1))}</td>"
                    f"<td class='num'>{svg.fmt(max(values, default=0))}</td>"
                    f"<td class='num'>{svg.fmt(last)}</td><td>"
                    f"{escape(panel['status'] if panel['status'] != 'error' else panel['error'])}"
                    "</td></tr>")
        charts.append(svg.timeline(panel["title"], [(int(t), v) for t, v in points]))
    out.append("<table><tr><th></th><th>total</th><th>per minute</th><th>peak minute</th>"
               "<th>last minute</th><th>status</th></tr>" + "".join(rows) + "</table>")
    out.append('<div class="grid" id="throughput">' + "".join(charts) + "</div>")
    return "\n".join(out)
