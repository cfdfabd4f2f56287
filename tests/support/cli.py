"""Running a ``recommender`` command in-process against a test's private names, the way a
user runs it: settings from ``RECOMMENDER_*`` variables, output on stdout, an exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from recommender.cli import app
from recommender.settings import Settings, as_env, get_settings


def run_cli(settings: Settings, args: list[str], monkeypatch: pytest.MonkeyPatch) -> Result:
    """``recommender ARGS`` with exactly ``settings`` (private topics, keyspace, index names,
    registry). Spark commands reuse the test session's SparkSession (``getOrCreate``)."""
    for name, value in as_env(settings, base={}).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
