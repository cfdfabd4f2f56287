"""Accounts and rights on the secure stack, created by its admin.

Two steps, both idempotent:

* ``identities`` (every ``stack up --secure``): the components' Kafka SCRAM users and
  Cassandra roles, with the passwords of the secrets directory; on a new Cassandra node the
  default ``cassandra`` superuser is first replaced by the stack's admin and dropped.
  Elasticsearch's users are files written before it starts (``SecureElasticsearchService``).
* ``provision`` (``stack up --secure`` for the configured names, ``stack provision`` for
  others, the tests for their private ones): the topics, keyspace, tables and index
  templates, then the Kafka ACLs and Cassandra grants of ``recommender.stack.access`` on
  them. Components never need the right to create any of these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from recommender.clients import cassandra_session, elasticsearch_client, kafka_admin
from recommender.errors import StackError
from recommender.settings import CassandraSettings, KafkaSettings, Settings, StackSettings
from recommender.stack.access import ADMIN, COMPONENTS, SPARK_GROUP_PREFIX, cassandra_grants
from recommender.stack.connect import admin_settings
from recommender.stack.secrets import StackSecrets
from recommender.topics import TOPIC_FIELDS

if TYPE_CHECKING:
    from cassandra.cluster import NoHostAvailable, Session
    from kafka.admin import ACL

DEFAULT_SUPERUSER = "cassandra"  # what a new Cassandra node with PasswordAuthenticator has


def identities(stack: StackSettings, on_event: Callable[[str], None] = lambda _: None) -> None:
    """Create or update every component's Kafka user and Cassandra role."""
    secrets = StackSecrets.of(stack)
    admin = admin_settings(stack)
    kafka_users(admin.kafka, secrets)
    session = cassandra_admin(admin.cassandra, stack.startup_timeout_s)
    try:
        cassandra_roles(session, secrets)
    finally:
        session.cluster.shutdown()
    on_event(f"accounts: {', '.join(c.name for c in COMPONENTS)} (secrets in {secrets.dir})")


def provision(settings: Settings, on_event: Callable[[str], None] = lambda _: None) -> None:
    """Topics, keyspace, tables and index templates of ``settings``' names, and every
    component's rights on them."""
    from recommender.cassandra_schema import ensure_schema
    from recommender.indices import setup as setup_indices
    from recommender.topics import ensure_topics

    admin = admin_settings(settings.stack, names=settings)
    topics = [getattr(settings.kafka, name) for name in TOPIC_FIELDS]
    ensure_topics(admin, *topics)
    kafka_acls(admin.kafka, settings.kafka)
    session = cassandra_admin(admin.cassandra, settings.stack.startup_timeout_s)
    try:
        ensure_schema(session, admin)
        for statement in cassandra_grants(settings.cassandra.keyspace):
            session.execute(statement)
    finally:
        session.cluster.shutdown()
    es = elasticsearch_client(admin.elasticsearch)
    try:
        setup_indices(es, settings.elasticsearch.indices)
    finally:
        es.close()
    on_event(f"provisioned topics {', '.join(topics)}, keyspace "
             f"{settings.cassandra.keyspace} and the Elasticsearch templates")


# --- Kafka ------------------------------------------------------------------------------------

def kafka_users(kafka: KafkaSettings, secrets: StackSecrets) -> None:
    from kafka.admin import UserScramCredentialUpsertion

    admin = kafka_admin(kafka)
    try:
        errors = admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(c.name, "SCRAM-SHA-512", secrets.password(c.name))
            for c in COMPONENTS])
    finally:
        admin.close()
    failed = {user: error for user, error in errors.items() if error}
    if failed:
        raise StackError(f"Kafka refused the SCRAM credentials of {failed}")


def kafka_acls(kafka: KafkaSettings, names: KafkaSettings) -> None:
    """Each component's ACLs on the topics and groups ``names`` gives (Kafka keeps one copy of
    an ACL however often it is created)."""
    admin = kafka_admin(kafka)
    try:
        result = admin.create_acls(component_acls(names))
    finally:
        admin.close()
    if result["failed"]:
        raise StackError(f"Kafka refused ACLs: {result['failed']}")


def component_acls(names: KafkaSettings) -> list[ACL]:
    from kafka.admin import ACLResourcePatternType as Pattern
    from kafka.admin import ResourceType

    acls = []
    for c in COMPONENTS:
        principal = f"User:{c.name}"
        for topic, operations in c.kafka_topics(names).items():
            acls += [allow(principal, op, ResourceType.TOPIC, topic, Pattern.LITERAL)
                     for op in operations]
        for group in c.kafka_groups(names):
            acls.append(allow(principal, "READ", ResourceType.GROUP, group, Pattern.LITERAL))
        if c.spark:
            acls.append(allow(principal, "READ", ResourceType.GROUP, SPARK_GROUP_PREFIX,
                              Pattern.PREFIXED))
    return acls


def allow(principal: str, operation: str, resource: int, name: str, pattern: int) -> ACL:
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern

    return ACL(principal=principal, host="*", operation=ACLOperation[operation],
               permission_type=ACLPermissionType.ALLOW,
               resource_pattern=ResourcePattern(resource, name, pattern))


# --- Cassandra --------------------------------------------------------------------------------

def cassandra_admin(cassandra: CassandraSettings, timeout_s: float) -> Session:
    """The admin's session. A new node knows only its default superuser, which it creates
    just after startup: until then logins are refused, so this retries until ``timeout_s``."""
    from cassandra.cluster import NoHostAvailable

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return cassandra_session(cassandra)
        except NoHostAvailable as exc:
            if not refused_login(exc) or time.monotonic() > deadline:
                raise StackError(f"Cassandra refused the stack's admin: {exc}") from exc
        try:
            replace_default_superuser(cassandra)
        except NoHostAvailable as exc:
            if not refused_login(exc):
                raise StackError(f"Cassandra did not answer: {exc}") from exc
            time.sleep(0.5)  # the default superuser does not exist yet


def replace_default_superuser(cassandra: CassandraSettings) -> None:
    """Log in as ``cassandra``/``cassandra`` (a new node) and create the admin role."""
    from pydantic import SecretStr

    default = cassandra.model_copy(update={"username": DEFAULT_SUPERUSER,
                                           "password": SecretStr(DEFAULT_SUPERUSER)})
    session = cassandra_session(default)
    try:
        session.execute(f"CREATE ROLE IF NOT EXISTS {ADMIN} WITH SUPERUSER = true AND "
                        "LOGIN = true AND PASSWORD = %s",
                        [cassandra.password.get_secret_value() if cassandra.password else ""])
    finally:
        session.cluster.shutdown()


def cassandra_roles(session: Session, secrets: StackSecrets) -> None:
    """One login role per component (password from its secret file); the well-known default
    superuser is dropped once the admin exists."""
    session.execute(f"DROP ROLE IF EXISTS {DEFAULT_SUPERUSER}")
    for c in COMPONENTS:
        password = secrets.password(c.name)
        session.execute(f"CREATE ROLE IF NOT EXISTS {c.name} WITH LOGIN = true AND "
                        "PASSWORD = %s", [password])
        session.execute(f"ALTER ROLE {c.name} WITH PASSWORD = %s", [password])


def refused_login(exc: NoHostAvailable) -> bool:
    from cassandra import AuthenticationFailed

    return any(isinstance(error, AuthenticationFailed) for error in exc.errors.values())
