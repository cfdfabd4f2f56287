"""The Kibana saved objects in kibana_dashboards/: they parse, every reference resolves in
the file, every visualization names an existing data view by id and only reads fields the
index contracts define with a usable type, and each one shows what the panel of the same id
shows on the built-in dashboard. Pure: no Kibana, no Elasticsearch."""

from __future__ import annotations

import json

import pytest

from recommender import contracts
from recommender.dashboard import kibana, kibana_check, kibana_objects
from recommender.dashboard.panels import DASHBOARDS, PANELS, SOURCES, dashboard_panels

FILES = kibana.load_dir()
ALL = [(stem, obj) for stem, objects in FILES.items() for obj in objects]
MAPPINGS = {"ratings-*": contracts.RATINGS_MAPPING, "predictions-*": contracts.PREDICTIONS_MAPPING,
            "user-taste": contracts.USER_TASTE_MAPPING}
KNOWN_TYPES = {"index-pattern", "lens", "visualization", "dashboard"}


def test_one_file_per_dashboard():
    assert set(FILES) == {d.id for d in DASHBOARDS}


def test_every_line_parses_with_the_saved_object_envelope():
    for path in kibana.DEFAULT_DIR.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            obj = json.loads(line)
            assert {"id", "type", "attributes", "references"} <= set(obj), (path, obj)
            assert obj["type"] in KNOWN_TYPES
            assert obj["coreMigrationVersion"] == "8.8.0"
            # A version above what Kibana 8.19 knows would make the import fail.
            assert obj["typeMigrationVersion"] == kibana_objects.TYPE_MIGRATION[obj["type"]]


@pytest.mark.parametrize("stem", sorted(FILES))
def test_each_file_is_self_contained(stem):
    assert kibana_check.reference_problems(FILES[stem]) == []


def test_data_views_have_their_patterns_and_time_fields():
    views = {o["id"]: o["attributes"] for _, o in ALL if o["type"] == "index-pattern"}
    assert views["recommender-ratings"]["title"] == "ratings-*"
    assert views["recommender-ratings"]["timeFieldName"] == "event_time"
    assert views["recommender-predictions"]["title"] == "predictions-*"
    assert views["recommender-predictions"]["timeFieldName"] == "predicted_at"
    assert "timeFieldName" not in views["recommender-user-taste"]


def test_every_visualization_reads_existing_fields_of_a_usable_type():
    for stem, objects in FILES.items():
        views = kibana_check.data_views(objects)
        for spec in kibana_check.vis_specs(objects):
            view = views[spec.data_view_id]
            caps = kibana_check.caps_from_mapping(MAPPINGS[view.pattern])
            assert kibana_check.field_problems(spec, view, caps) == [], stem


def test_the_field_check_catches_missing_and_unusable_fields():
    spec = kibana_check.VisSpec("v", "lens", "t", "recommender-ratings", (
        kibana_check.Operation("terms", "title", {}),
        kibana_check.Operation("date_histogram", "nope", {})),
        (kibana_check.Operation("avg", "genres", {}),))
    view = kibana_check.DataView("recommender-ratings", "ratings-*", "event_time")
    problems = kibana_check.field_problems(
        spec, view, kibana_check.caps_from_mapping(contracts.RATINGS_MAPPING))
    assert any("terms cannot use title of type text" in p for p in problems)
    assert any("title (text) is not aggregatable" in p for p in problems)
    assert any("field nope does not exist" in p for p in problems)
    assert any("avg cannot use genres of type keyword" in p for p in problems)


def test_kibana_shows_what_the_built_in_dashboard_shows():
    for board in DASHBOARDS:
        specs = {s.id: s for s in kibana_check.vis_specs(FILES[board.id])}
        expected = {kibana_objects.object_id(p): p for p in dashboard_panels(board.id)}
        assert set(specs) == set(expected)
        for oid, panel in expected.items():
            assert kibana_check.signature(specs[oid]) == kibana_check.panel_signature(panel)


def test_dashboards_place_every_panel_and_restore_their_time_range():
    for board in DASHBOARDS:
        (dash,) = [o for o in FILES[board.id] if o["type"] == "dashboard"]
        panels = json.loads(dash["attributes"]["panelsJSON"])
        assert [p["panelIndex"] for p in panels] == [p.id for p in dashboard_panels(board.id)]
        for p in panels:
            assert {"x", "y", "w", "h", "i"} <= set(p["gridData"])
        assert dash["attributes"]["timeRestore"] == (board.time_from is not None)
        assert dash["attributes"].get("timeFrom") == board.time_from


def test_lens_objects_use_the_current_lens_state_shape():
    for _, obj in ALL:
        if obj["type"] != "lens":
            continue
        attrs = obj["attributes"]
        assert attrs["visualizationType"] in {"lnsXY", "lnsPie", "lnsDatatable"}
        layers = attrs["state"]["datasourceStates"]["formBased"]["layers"]
        for layer_id, layer in layers.items():
            assert set(layer["columnOrder"]) == set(layer["columns"])
            names = {r["name"] for r in obj["references"]}
            assert f"indexpattern-datasource-layer-{layer_id}" in names


def test_minimum_vote_count_needs_a_classic_visualization():
    (obj,) = [o for _, o in ALL if o["id"] == "recommender-top-movies-by-rating"]
    assert obj["type"] == "visualization"
    (spec,) = kibana_check.vis_specs([obj])
    assert spec.buckets[0].params["min_doc_count"] == 50
    assert spec.buckets[0].params["order"] == 0  # by the first metric, the average


def test_files_are_what_build_writes(tmp_path):
    """Regenerating from panels.py changes nothing (run `recommender dashboards build`)."""
    kibana.build(tmp_path)
    for path in kibana.DEFAULT_DIR.glob("*.ndjson"):
        assert (tmp_path / path.name).read_text() == path.read_text(), path.name


def test_every_source_has_a_mapping():
    assert {s.pattern for s in SOURCES} == set(MAPPINGS)
    assert {p.source for p in PANELS} == set(SOURCES)
