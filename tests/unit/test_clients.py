"""Client construction against endpoints where nothing answers (a real closed port)."""

from __future__ import annotations

import logging
import socket

import pytest

from recommender.clients import cassandra_session
from recommender.errors import BackendUnavailable
from recommender.settings import CassandraSettings


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_job_waits_for_cassandra_then_names_the_node_that_never_answered(caplog):
    port = closed_port()
    cassandra = CassandraSettings(contact_points=["127.0.0.1"], port=port)
    with caplog.at_level(logging.WARNING, logger="recommender.clients"), \
            pytest.raises(BackendUnavailable, match=f"port {port} answered within 4 s"):
        cassandra_session(cassandra, connect_timeout=1.0, wait_s=4.0)
    assert "retrying" in caplog.text


def test_without_a_wait_the_driver_error_comes_at_once():
    from cassandra.cluster import NoHostAvailable

    with pytest.raises(NoHostAvailable):
        cassandra_session(CassandraSettings(port=closed_port()), connect_timeout=1.0)
