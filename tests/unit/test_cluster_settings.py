"""Multi-node clusters by configuration alone: what the clients are given, and the checks
that say when replication does not fit the cluster (pure decisions, no server)."""

from __future__ import annotations

import pytest

from recommender.cassandra_schema import keyspace_replication, replicas_needed
from recommender.cassandra_schema import replication_warnings as cassandra_warnings
from recommender.clients import (
    _elasticsearch_options,
    cassandra_profile,
    describe_urls,
    elasticsearch_client,
    spark_conf,
    spark_kafka_options,
    spark_kafka_sink_options,
    try_urls,
)
from recommender.contracts import IndexNames
from recommender.errors import BackendUnavailable
from recommender.indices import index_settings, replica_warnings, templates
from recommender.settings import (
    CassandraSettings,
    ElasticsearchSettings,
    KafkaSettings,
    Settings,
    SparkSettings,
)
from recommender.topics import new_topic_spec
from recommender.topics import replication_warnings as kafka_warnings

NODES = "http://127.0.0.1:9200, http://127.0.0.2:9200,,http://127.0.0.3:9200"


# --- Kafka ------------------------------------------------------------------------------------

def test_the_single_node_defaults_pass_the_kafka_check():
    assert kafka_warnings(KafkaSettings(), brokers=1) == []


def test_one_replica_on_several_brokers_warns_naming_the_setting():
    (warning,) = kafka_warnings(KafkaSettings(), brokers=3)
    assert "kafka.replication_factor is 1" in warning and "3 brokers" in warning


def test_more_replicas_than_brokers_is_refused_naming_the_setting():
    with pytest.raises(BackendUnavailable, match=r"kafka\.replication_factor is 3 .* 1 live"):
        kafka_warnings(KafkaSettings(replication_factor=3), brokers=1)


def test_more_in_sync_replicas_than_replicas_is_refused():
    with pytest.raises(BackendUnavailable, match=r"kafka\.min_insync_replicas is 3"):
        kafka_warnings(KafkaSettings(replication_factor=2, min_insync_replicas=3), brokers=3)


def test_a_majority_in_sync_on_three_brokers_passes_and_all_in_sync_warns():
    majority = KafkaSettings(replication_factor=3, min_insync_replicas=2)
    assert kafka_warnings(majority, brokers=3) == []
    everyone = KafkaSettings(replication_factor=3, min_insync_replicas=3)
    (warning,) = kafka_warnings(everyone, brokers=3)
    assert "kafka.min_insync_replicas is 3" in warning and "2 keeps" in warning


def test_new_topics_get_min_insync_replicas_only_when_it_is_set():
    assert new_topic_spec(KafkaSettings(), partitions=2) == {
        "num_partitions": 2, "replication_factor": 1}
    spec = new_topic_spec(KafkaSettings(replication_factor=3, min_insync_replicas=2))
    assert spec == {"num_partitions": 4, "replication_factor": 3,
                    "configs": {"min.insync.replicas": "2"}}


def test_spark_writes_to_kafka_with_acks_all_and_reads_without_it():
    assert spark_kafka_sink_options(KafkaSettings())["kafka.acks"] == "all"
    assert "kafka.acks" not in spark_kafka_options(KafkaSettings())


# --- Cassandra --------------------------------------------------------------------------------

def test_the_single_node_defaults_pass_the_cassandra_check():
    assert cassandra_warnings(CassandraSettings(), nodes=1) == []


def test_one_replica_on_several_nodes_warns_naming_the_setting():
    (warning,) = cassandra_warnings(CassandraSettings(), nodes=3)
    assert "cassandra.replication_factor is 1" in warning and "3 nodes" in warning


@pytest.mark.parametrize("level", ["ONE", "LOCAL_ONE"])
def test_single_replica_reads_on_a_cluster_warn(level):
    settings = CassandraSettings(replication_factor=3, consistency_level=level)
    (warning,) = cassandra_warnings(settings, nodes=3)
    assert f"cassandra.consistency_level is {level}" in warning


def test_a_quorum_of_three_replicas_on_three_nodes_passes():
    assert cassandra_warnings(CassandraSettings(replication_factor=3), nodes=3) == []


def test_more_replicas_than_nodes_warns_that_quorum_requests_fail():
    (warning,) = cassandra_warnings(CassandraSettings(replication_factor=3), nodes=1)
    assert "cassandra.replication_factor is 3" in warning
    assert "LOCAL_QUORUM (cassandra.consistency_level) fails" in warning
    (survivable,) = cassandra_warnings(CassandraSettings(replication_factor=3), nodes=2)
    assert "only 2 copies exist" in survivable


def test_an_existing_keyspace_with_another_factor_warns_and_is_what_is_checked():
    settings = CassandraSettings(replication_factor=3)
    warnings = cassandra_warnings(settings, nodes=3, keyspace_replicas=1)
    assert len(warnings) == 2
    assert "has replication factor 1 but cassandra.replication_factor is 3" in warnings[0]
    assert "replication factor of keyspace 'movielens' is 1" in warnings[1]
    assert cassandra_warnings(settings, nodes=3, keyspace_replicas=3) == []


def test_replicas_needed_per_consistency_level():
    assert [replicas_needed(level, 3) for level in ("ONE", "LOCAL_QUORUM", "QUORUM", "ALL")] \
        == [1, 2, 2, 3]
    assert replicas_needed("LOCAL_QUORUM", 1) == 1  # the single-node behaviour


def test_keyspace_replication_reads_both_strategies():
    from cassandra.metadata import KeyspaceMetadata

    simple = KeyspaceMetadata("ks", True, "SimpleStrategy", {"replication_factor": "2"})
    topology = KeyspaceMetadata("ks", True, "NetworkTopologyStrategy", {"dc1": "3", "dc2": "1"})
    assert keyspace_replication(simple, "dc1") == 2
    assert keyspace_replication(topology, "dc1") == 3
    assert keyspace_replication(topology, "elsewhere") is None
    assert keyspace_replication(None, "dc1") is None


def test_sessions_use_the_configured_consistency_level():
    from cassandra import ConsistencyLevel

    assert cassandra_profile(CassandraSettings()).consistency_level \
        == ConsistencyLevel.LOCAL_QUORUM
    assert cassandra_profile(CassandraSettings(consistency_level="ALL")).consistency_level \
        == ConsistencyLevel.ALL


def test_spark_gets_the_consistency_level_and_the_core_limits_when_set():
    conf = spark_conf(Settings(cassandra=CassandraSettings(consistency_level="QUORUM")))
    assert conf["spark.cassandra.output.consistency.level"] == "QUORUM"
    assert conf["spark.cassandra.input.consistency.level"] == "QUORUM"
    assert "spark.cores.max" not in conf and "spark.executor.cores" not in conf
    limited = spark_conf(Settings(spark=SparkSettings(
        cores_max=2, executor_cores=1, extra_conf={"spark.cores.max": "6"})))
    assert limited["spark.executor.cores"] == "1"
    assert limited["spark.cores.max"] == "6"  # extra_conf has the last word


# --- Elasticsearch ----------------------------------------------------------------------------

def test_replicas_fit_the_data_nodes():
    assert replica_warnings(0, 1) == []
    assert replica_warnings(1, 3) == []
    assert replica_warnings(2, 3) == []
    (none,) = replica_warnings(0, 3)
    assert "elasticsearch.number_of_replicas is 0" in none and "3 data nodes" in none
    (yellow,) = replica_warnings(1, 1)
    assert "elasticsearch.number_of_replicas is 1" in yellow and "yellow" in yellow
    assert replica_warnings(3, 3) and replica_warnings(1, 0) == []  # 0: not known


def test_every_template_and_index_takes_the_replicas():
    assert index_settings(2) == {"number_of_shards": 1, "number_of_replicas": 2,
                                 "refresh_interval": "1s"}
    bodies = templates(IndexNames(), replicas=1)
    assert {b["template"]["settings"]["number_of_replicas"] for b in bodies.values()} == {1}
    assert bodies["recommender-ratings"]["template"]["settings"]["refresh_interval"] == "30s"
    assert {b["template"]["settings"]["number_of_replicas"]
            for b in templates(IndexNames()).values()} == {0}


def test_the_url_setting_lists_every_node():
    es = ElasticsearchSettings(url=NODES)
    assert es.urls == ["http://127.0.0.1:9200", "http://127.0.0.2:9200", "http://127.0.0.3:9200"]
    assert ElasticsearchSettings().urls == ["http://localhost:9200"]


def test_the_client_gets_every_node():
    client = elasticsearch_client(ElasticsearchSettings(url=NODES))
    try:
        hosts = sorted(node.config.host for node in client.transport.node_pool.all())
    finally:
        client.close()
    assert hosts == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def test_certificates_are_verified_when_any_node_is_https():
    assert "verify_certs" not in _elasticsearch_options(ElasticsearchSettings(url=NODES))
    mixed = ElasticsearchSettings(url="http://a:9200,https://b:9200", verify_certs=False)
    assert _elasticsearch_options(mixed)["verify_certs"] is False


def test_messages_name_every_node_without_credentials():
    urls = ["https://user:secret@es1:9200", "http://es2:9200/", "http://es3"]
    assert describe_urls(urls) == "https://es1:9200, http://es2:9200, http://es3"


def test_raw_http_tries_the_nodes_in_turn_on_connection_errors():
    tried = []

    def request(url: str) -> str:
        tried.append(url)
        if url != "http://b":
            raise ConnectionRefusedError(f"{url} refused")
        return f"answer from {url}"

    assert try_urls(["http://a", "http://b", "http://c"], request) == "answer from http://b"
    assert tried == ["http://a", "http://b"]


def test_raw_http_names_every_node_when_none_answers():
    def refused(url: str) -> str:
        raise ConnectionRefusedError("refused")

    with pytest.raises(BackendUnavailable, match=r"http://a:1, http://b:2 answered"):
        try_urls(["http://a:1", "http://b:2"], refused)


def test_raw_http_does_not_retry_other_errors():
    def broken(url: str) -> str:
        raise ValueError("not a connection error")

    with pytest.raises(ValueError):
        try_urls(["http://a", "http://b"], broken)


def test_a_lost_quorum_is_a_503_that_names_the_consistency_level_and_the_replicas_alive():
    from cassandra import ConsistencyLevel, Unavailable

    from recommender.serve.backends import cassandra_errors

    settings = Settings(cassandra=CassandraSettings(
        contact_points=["127.0.0.1", "127.0.0.2", "127.0.0.3"], consistency_level="QUORUM"))
    expected = (r"127\.0\.0\.1,127\.0\.0\.2,127\.0\.0\.3 cannot answer at "
                r"cassandra\.consistency_level QUORUM: 2 replicas needed, 1 alive")
    with pytest.raises(BackendUnavailable, match=expected), cassandra_errors(settings):
        raise Unavailable("Cannot achieve consistency level QUORUM",
                          consistency=ConsistencyLevel.QUORUM, required_replicas=2,
                          alive_replicas=1)
