"""Panel requests and response parsing (pure), and the report's HTML."""

from __future__ import annotations

import re

import pytest

from recommender.dashboard import aggs, html_report
from recommender.dashboard.panels import PANELS, panel, relative_ms

NOW = 1_700_000_000_000


def _response(total: int, aggregations: dict) -> dict:
    return {"hits": {"total": {"value": total}}, "aggregations": aggregations}


def test_relative_windows():
    assert relative_ms("now-1h") == 3_600_000
    assert relative_ms("now-15m") == 900_000
    with pytest.raises(ValueError):
        relative_ms("1h")


@pytest.mark.parametrize("raw, step", [(0.013, 0.02), (7, 10), (0.05, 0.05), (260, 500)])
def test_nice_histogram_steps(raw, step):
    assert aggs.nice_step(raw) == step


def test_every_panel_builds_a_request():
    for p in PANELS:
        body = aggs.search_body(p, NOW, 3_600_000, [0.1])
        assert body["size"] == 0 and "b0" in body["aggs"]


def test_minute_buckets_fill_the_whole_window():
    body = aggs.search_body(panel("predictions_per_minute"), NOW, 3_600_000)
    histogram = body["aggs"]["b0"]["date_histogram"]
    assert histogram["min_doc_count"] == 0
    assert histogram["extended_bounds"] == {"min": NOW - 3_600_000, "max": NOW}
    assert body["query"]["range"]["predicted_at"]["gte"] == NOW - 3_600_000


def test_top_rated_orders_by_average_with_a_minimum_count():
    terms = aggs.search_body(panel("top_movies_by_rating"), NOW, None)["aggs"]["b0"]["terms"]
    assert terms["order"] == {"m0": "desc"} and terms["min_doc_count"] == 50


def test_no_hits_is_no_data_not_an_error():
    out = aggs.to_series(panel("ratings_per_day"), _response(0, {"b0": {"buckets": []}}))
    assert out["status"] == "empty" and out["series"][0]["points"] == []
    out = aggs.to_series(panel("top_movies_by_rating"), {"hits": {"total": {"value": 0}}})
    assert out["status"] == "empty" and out["rows"] == []


def test_shares_per_bucket_sum_to_one_with_other():
    buckets = [{"key": 1, "doc_count": 10, "b1": {"sum_other_doc_count": 2, "buckets": [
        {"key": "Drama", "doc_count": 6}, {"key": "Comedy", "doc_count": 2}]}},
        {"key": 2, "doc_count": 4, "b1": {"sum_other_doc_count": 0, "buckets": [
            {"key": "Comedy", "doc_count": 4}]}}]
    out = aggs.to_series(panel("genre_share"), _response(14, {"b0": {"buckets": buckets}}))
    assert [s["name"] for s in out["series"]] == ["Drama", "Comedy", "Other"]
    for j in range(2):
        assert sum(s["points"][j][1] for s in out["series"]) == pytest.approx(1.0)
    assert out["series"][1]["points"] == [[1, 0.2], [2, 1.0]]


def test_percentiles_become_one_series_each():
    bucket = {"key": 5, "doc_count": 3, **{f"m{i}": {"values": [{"key": p, "value": v}]}
                                           for i, (p, v) in enumerate([(50, 1), (95, 2),
                                                                       (99, None)])}}
    out = aggs.to_series(panel("latency_percentiles"), _response(3, {"b0": {"buckets": [bucket]}}))
    assert [(s["name"], s["points"]) for s in out["series"]] == [
        ("p50", [[5, 1.0]]), ("p95", [[5, 2.0]]), ("p99", [[5, None]])]


def test_float_terms_are_labelled_like_stars():
    buckets = [{"key": 0.5, "doc_count": 1}, {"key": 4.0, "doc_count": 3}]
    out = aggs.to_series(panel("rating_distribution"), _response(4, {"b0": {"buckets": buckets}}))
    assert out["series"][0]["points"] == [["0.5", 1.0], ["4", 3.0]]


METADATA = {
    "version": "20250301T000000Z", "created_at": "2025-03-01T00:00:00+00:00", "mode": "explicit",
    "data": {"rows": 100836, "users": 610, "items": 9724}, "evaluation": {"split": "random"},
    "metrics": {"rmse": 0.87, "ndcg_at_10": 0.08},
    "baseline_metrics": {"popularity": {"rmse": 0.97, "ndcg_at_10": 0.09},
                         "random": {"rmse": 1.42, "ndcg_at_10": 0.005}},
}


def test_report_charts_metrics_against_baselines_without_external_assets():
    html = html_report.render(html_report.Report(generated_at=NOW, model=METADATA,
                                       throughput_problem="Elasticsearch did not answer"))
    metrics = html.split('id="metrics"')[1].split("</div>")[0]
    assert metrics.count("<svg") == 2 and metrics.count('class="mark"') == 6
    assert re.search(r'font-weight="bold">ALS<', metrics)  # best rmse (lower is better)
    assert re.search(r'font-weight="bold">popularity<', metrics)  # best ndcg
    assert "Elasticsearch did not answer" in html
    assert not re.search(r'(src|href)="?(https?:)?//', html)
    assert "<script" not in html


def test_report_without_a_model_says_how_to_get_one():
    html = html_report.render(html_report.Report(
        generated_at=NOW,
        model_problem="No model has been promoted yet (run `recommender train`)."))
    assert "recommender train" in html
