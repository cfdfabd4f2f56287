"""Settings: defaults in code, the reference TOML, and environment binding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from recommender.settings import Settings, as_env, reference_toml

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "recommender.example.toml"


def test_reference_config_is_generated_from_the_settings_classes():
    assert EXAMPLE.read_text() == reference_toml(), (
        "docs/recommender.example.toml is stale: regenerate it with python -c 'from "
        "recommender.settings import reference_toml; print(reference_toml(), end=\"\")'")


def test_reference_config_holds_the_defaults(monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("RECOMMENDER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RECOMMENDER_CONFIG", str(tmp_path / "absent.toml"))
    defaults = Settings()
    monkeypatch.setenv("RECOMMENDER_CONFIG", str(EXAMPLE))
    from_file = Settings()
    assert from_file == defaults
    assert from_file.model.ranking.rank == defaults.model.ranking.rank  # nested tables too


def test_toml_overrides_defaults_and_environment_overrides_toml(monkeypatch, tmp_path):
    config = tmp_path / "recommender.toml"
    config.write_text('[kafka]\nbootstrap_servers = "b1:9092,b2:9092"\n'
                      '[spark]\nmaster = "spark://m:7077"\n')
    monkeypatch.setenv("RECOMMENDER_CONFIG", str(config))
    monkeypatch.setenv("RECOMMENDER_SPARK__MASTER", "yarn")
    monkeypatch.setenv("RECOMMENDER_CASSANDRA__CONTACT_POINTS", '["c1", "c2"]')
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "b1:9092,b2:9092"
    assert settings.spark.master == "yarn"
    assert settings.cassandra.contact_points == ["c1", "c2"]
    assert settings.cassandra.keyspace == "movielens"


def test_as_env_round_trips_through_a_child_process_environment(monkeypatch):
    original = Settings(kafka={"ratings_topic": "t", "sasl_password": "s3cret"},
                        spark={"extra_conf": {"spark.x": "1"}}, api={"cors_origins": ["a"]})
    for key, value in as_env(original, base={}).items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_one_consumer_group_for_predictor_and_shipper_is_refused(monkeypatch):
    monkeypatch.setenv("RECOMMENDER_KAFKA__SHIPPER_GROUP", "recommender-predictor")
    with pytest.raises(ValidationError, match="must differ"):
        Settings()


def test_reference_config_shows_default_paths_as_every_reader_has_them(monkeypatch, tmp_path):
    from recommender.settings import _as_documented

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    shown = _as_documented(tmp_path / "state" / "recommender" / "stack")
    assert shown == "~/.local/state/recommender/stack"
