"""``dashboards install`` / ``export`` without a Kibana: a clear error, not a traceback.

Kibana cannot run on this machine (docker-compose only) and no stand-in replaces it: the
saved objects themselves are checked against the real Elasticsearch mappings and data in
tests/integration/test_dashboards.py, and the import is exercised with docker-compose (see
kibana_dashboards/README.md).
"""

from __future__ import annotations

import re

import pytest

from recommender.dashboard import kibana
from recommender.errors import BackendUnavailable

NOBODY_LISTENS = "http://127.0.0.1:1"


def test_install_without_kibana_says_kibana_did_not_answer():
    with pytest.raises(BackendUnavailable, match=re.escape(f"Kibana at {NOBODY_LISTENS}")):
        kibana.install(NOBODY_LISTENS, sorted(kibana.DEFAULT_DIR.glob("*.ndjson")),
                       timeout_s=2)


def test_export_without_kibana_says_kibana_did_not_answer(tmp_path):
    with pytest.raises(BackendUnavailable, match="did not answer"):
        kibana.export(NOBODY_LISTENS, tmp_path, timeout_s=2)
