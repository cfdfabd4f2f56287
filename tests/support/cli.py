"""Running a ``recommender`` command in-process against a test's private names, the way a
user runs it: settings from ``RECOMMENDER_*`` variables, output on stdout, an exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from recommender.cli import app
from recommender.settings import Settings, get_settings


def run_cli(settings: Settings, args: list[str], monkeypatch: pytest.MonkeyPatch) -> Result:
    """``recommender ARGS`` with the keyspace and model registry of ``settings``. Spark
    commands reuse the test session's SparkSession (``getOrCreate``)."""
    monkeypatch.setenv("RECOMMENDER_CASSANDRA__KEYSPACE", settings.cassandra.keyspace)
    monkeypatch.setenv("RECOMMENDER_MODEL__MODELS_DIR", str(settings.model.models_dir))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
