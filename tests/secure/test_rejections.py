"""Nobody gets in without credentials, a wrong password gets nowhere, and each component's
account can do only what its code needs (``recommender.stack.access``)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from recommender.clients import cassandra_session, elasticsearch_client, kafka_admin, kafka_producer
from recommender.errors import BackendUnavailable
from recommender.settings import Settings
from recommender.stack.connect import as_account
from recommender.topics import ensure_topics
from tests.secure.conftest import SITE

WRONG = SecretStr("not-the-password")


def account(settings: Settings, name: str | None) -> Settings:
    return as_account(settings, settings.stack, name)


def with_wrong_password(settings: Settings) -> Settings:
    """``settings`` of the ingest account with every password wrong."""
    good = account(settings, "ingest")
    return good.model_copy(update={
        "kafka": good.kafka.model_copy(update={"sasl_password": WRONG}),
        "cassandra": good.cassandra.model_copy(update={"password": WRONG}),
        "elasticsearch": good.elasticsearch.model_copy(update={"password": WRONG})})


# --- Kafka ------------------------------------------------------------------------------------

def broker_answers(kafka) -> bool:
    """The control: the broker lists topics for a client that logs in properly, so a refusal
    below is the broker saying no, not a broker that is down."""
    admin = kafka_admin(kafka, bootstrap_timeout_ms=10000, request_timeout_ms=10000)
    try:
        return isinstance(admin.list_topics(), list)
    finally:
        admin.close()


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_kafka_refuses_clients_without_sasl(secure_settings: Settings, protocol: str):
    from kafka.errors import KafkaError

    assert broker_answers(account(secure_settings, "ingest").kafka)
    kafka = account(secure_settings, None).kafka.model_copy(
        update={"security_protocol": protocol})
    with pytest.raises(KafkaError):
        kafka_admin(kafka, bootstrap_timeout_ms=5000, request_timeout_ms=5000).list_topics()


def test_kafka_refuses_a_wrong_password(secure_settings: Settings, caplog):
    from kafka.errors import KafkaError

    assert broker_answers(account(secure_settings, "ingest").kafka)
    kafka = with_wrong_password(secure_settings).kafka
    with caplog.at_level("ERROR", logger="kafka"), pytest.raises(KafkaError):
        kafka_admin(kafka, bootstrap_timeout_ms=5000, request_timeout_ms=5000).list_topics()
    # kafka-python raises a bootstrap timeout; the broker's own answer is in its log: a
    # SASL authentication failure, which a broker that is down never sends
    assert any("SaslAuthenticationFailedError" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records][-5:]


def test_kafka_acls_allow_each_account_only_its_topics(secure_settings: Settings):
    from kafka.errors import TopicAuthorizationFailedError

    shipper = account(secure_settings, "shipper")
    producer = kafka_producer(shipper.kafka, max_block_ms=10000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(secure_settings.kafka.ratings_topic, b"forged").get(timeout=10)
    finally:
        producer.close()
    kafka = secure_settings.kafka
    with pytest.raises(BackendUnavailable, match="refused to create topic"):
        ensure_topics(account(secure_settings, "ingest"), f"{kafka.ratings_topic}-forged")
    api = kafka_admin(account(secure_settings, "api").kafka)
    try:
        visible = set(api.list_topics())  # only what the account may describe
    finally:
        api.close()
    assert {kafka.requests_topic, kafka.ratings_topic} <= visible  # it writes both (POST /ratings)
    assert kafka.predictions_topic not in visible


# --- Cassandra --------------------------------------------------------------------------------

def test_cassandra_refuses_anonymous_and_wrong_password(secure_settings: Settings):
    from cassandra.cluster import NoHostAvailable

    from recommender.stack.provision import refused_login

    for cassandra in (account(secure_settings, None).cassandra,
                      with_wrong_password(secure_settings).cassandra):
        with pytest.raises(NoHostAvailable) as refused:
            cassandra_session(cassandra)
        assert refused_login(refused.value)


def test_cassandra_roles_have_least_privilege(secure_settings: Settings):
    from cassandra import Unauthorized

    keyspace = secure_settings.cassandra.keyspace
    forbidden = {
        "api": f"INSERT INTO {keyspace}.ratings (user_id, movie_id, rating) VALUES (1, 1, 5)",
        "loader": f"SELECT * FROM {keyspace}.ratings LIMIT 1",
        "ingest": "CREATE KEYSPACE forged WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        "trainer": f"DROP TABLE {keyspace}.ratings",
    }
    for name, statement in forbidden.items():
        session = cassandra_session(account(secure_settings, name).cassandra)
        try:
            with pytest.raises(Unauthorized):
                session.execute(statement)
        finally:
            session.cluster.shutdown()


# --- Elasticsearch ----------------------------------------------------------------------------

def test_elasticsearch_refuses_anonymous_plain_http_and_wrong_password(secure_settings: Settings):
    from elasticsearch import AuthenticationException

    for es_settings in (account(secure_settings, None).elasticsearch,
                        with_wrong_password(secure_settings).elasticsearch):
        es = elasticsearch_client(es_settings, max_retries=0)
        with pytest.raises(AuthenticationException):
            es.cluster.health()
        es.close()
    # one node: the secure stack is single-node
    url = account(secure_settings, None).elasticsearch.urls[0].replace("https:", "http:")
    with pytest.raises(httpx.TransportError) as refused:  # TLS only: plain HTTP gets no answer
        httpx.get(f"{url}/_cluster/health", timeout=10)
    # the node is up (it answered the logins above): it hung up on plain HTTP, it did not
    # refuse the connection as a stopped node would
    assert not isinstance(refused.value, httpx.ConnectError), repr(refused.value)


def test_elasticsearch_users_have_least_privilege(secure_settings: Settings):
    from elasticsearch import AuthorizationException

    forbidden = {
        "api": lambda es: es.index(index="ratings-1999", id="x", document={"user_id": 1}),
        "loader": lambda es: es.search(index="predictions"),
        "shipper": lambda es: es.indices.delete(index="movies"),
        "ingest": lambda es: es.indices.put_settings(index="movies",
                                                     settings={"number_of_replicas": 0}),
    }
    for name, call in forbidden.items():
        es = elasticsearch_client(account(secure_settings, name).elasticsearch, max_retries=0)
        try:
            with pytest.raises(AuthorizationException):
                call(es)
        finally:
            es.close()


# --- the API ----------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "not-the-key"}])
def test_api_write_endpoints_refuse_a_missing_or_wrong_key(api: str, headers: dict):
    response = httpx.post(f"{api}/prediction-requests", json={"user_id": 1, "k": 3},
                          headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "ApiKey"


def test_api_cors_allows_only_the_configured_origin(api: str):
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{api}/prediction-requests", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-API-Key, Content-Type"})

    allowed = preflight(SITE)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SITE
    refused = preflight("https://elsewhere.example")
    assert "access-control-allow-origin" not in refused.headers
